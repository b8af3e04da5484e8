"""``dqd demo``: the generated catalog with injected (and semantic) errors, written out or streamed to a server."""
from __future__ import annotations

from pathlib import Path

import pyarrow.csv as pv
import pytest

from dqd_server.cli import main
from dqd_server.launcher import ServerProcess


def test_write_plants_semantic_errors_and_logs_every_injected_cell(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo.csv"
    with pytest.raises(SystemExit) as done:
        main(["demo", "--rows", "3000", "--semantic", "0.03", "--seed", "3", "--write", str(out)])
    assert done.value.code == 0
    table = pv.read_csv(out, convert_options=pv.ConvertOptions(strings_can_be_null=False,
                                                               column_types={c: "string" for c in (
                                                                   "article_number", "ean", "price")}))
    log = pv.read_csv(f"{out}.injected.csv", convert_options=pv.ConvertOptions(strings_can_be_null=False))
    assert table.num_rows == 3000
    cells = list(zip(log.column("row").to_pylist(), log.column("column").to_pylist()))
    assert len(cells) == len(set(cells)), "a cell is injected at most once"
    kinds = set(log.column("kind").to_pylist())
    assert {"semantic_other_field", "semantic_foreign_word", "semantic_shuffle"} <= kinds
    semantic = [r for r in log.to_pylist() if r["kind"].startswith("semantic_")]
    assert 0.02 * 3000 * 6 < len(semantic) < 0.04 * 3000 * 6  # about 3 % of the six descriptive columns
    for r in semantic:
        assert r["dirty"] != r["original"] and r["dirty"].strip()
        assert table.column(r["column"])[r["row"]].as_py() == r["dirty"], "the log says what the file holds"
    assert "injected cells to" in capsys.readouterr().out


def test_demo_against_a_running_server_scores_each_method(tmp_path: Path, capsys) -> None:
    with ServerProcess(env={"LOG_LEVEL": "WARNING"}) as srv, pytest.raises(SystemExit) as done:
        main(["demo", "--rows", "2000", "--semantic", "0.02", "--target", srv.target,
              "--methods", "validation,pattern"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "against the injected cells: precision" in text
    table = text[text.index("recall of"):]
    assert "validation" in table and "pattern" in table and "semantic_other_field" in table
