"""Slow: train the bundled catalog the way an operator would (``dqd train --catalog``) and measure it.

Logs the training time (the 5-minute budget on 2 CPU cores is measured, not asserted) and asserts the detection
quality that the report states (``python -m dqd_server.models.evaluate``), with margins for run-to-run noise.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from model_support import require_models


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_catalog_training_fits_the_budget_and_catches_semantic_errors(tmp_path: Path, capsys) -> None:
    require_models()
    from dqd_server.engine.pipeline import Engine
    from dqd_server.models.evaluate import main as evaluate
    from dqd_server.models.train_cli import main as train

    started = time.perf_counter()
    assert train(["--catalog", "50000", "--out", str(tmp_path / "repo"), "--json"]) == 0
    seconds = time.perf_counter() - started
    report = json.loads(capsys.readouterr().out)
    print(f"catalog training: {seconds:.0f}s {report['seconds']}")
    # the 5-minute training budget is measured, not asserted here (speed belongs in benchmarks): see the log line
    assert len(report["entries"]) == 18  # 9 catalog field types x (ml, llm)
    engine = Engine.from_repository(tmp_path / "repo")
    assert {"ml", "llm"} <= set(engine.fields()["material"])

    assert evaluate(["--repo", str(tmp_path / "repo"), "--json", str(tmp_path / "eval.json"), "--pll-values", "20"]) == 0
    result = json.loads((tmp_path / "eval.json").read_text())
    by = {(r["method"], r["field"]): r for r in result["quality"]}
    for method in ("ml", "llm"):
        rows = [r for (m, _), r in by.items() if m == method]
        fpr = sum(r["fpr"] * r["clean"] for r in rows) / sum(r["clean"] for r in rows)
        assert fpr <= 0.03, (method, fpr)
    # measured (evaluate, seed 7): ml category/other_field 0.96, ml care rules-miss 0.87; llm (400 steps) recall 0.90
    # at FPR 0.007 overall, care foreign_word 0.90 / other_field 1.00 / shuffle 0.86, material 0.92, single-pass AUC
    # care 0.97 and material 0.97, Spearman(single, PLL) 0.83, PLL ~10x slower than single-pass
    assert by[("ml", "category")]["recall_by_kind"]["other_field"] >= 0.7
    assert by[("ml", "care_instructions")]["recall_rules_miss"] >= 0.5
    llm = [r for (m, _), r in by.items() if m == "llm"]
    assert sum(r["recall"] * r["errors"] for r in llm) / sum(r["errors"] for r in llm) >= 0.75
    assert by[("llm", "care_instructions")]["recall_by_kind"]["foreign_word"] >= 0.75
    assert by[("llm", "care_instructions")]["recall_by_kind"]["other_field"] >= 0.9
    assert by[("llm", "care_instructions")]["recall_by_kind"]["shuffle"] >= 0.6
    assert by[("llm", "material")]["recall"] >= 0.75
    assert result["scoring"]["fields"]["care_instructions"]["auc_single"] >= 0.9
    assert result["scoring"]["fields"]["material"]["auc_single"] >= 0.9
    assert result["scoring"]["spearman"] >= 0.6
    assert result["scoring"]["speed_ratio"] >= 3
