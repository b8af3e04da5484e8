"""Evaluation: hand-checked scores, both modes, JSON output, a live server, weights, and reproducible injection."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
import yaml

from dqd_server.evaluation.run import evaluate_injected, evaluate_pair, write_weights
from dqd_server.evaluation.score import curve, score, truth_from_pair
from dqd_server.injection import DEFAULT_RULES, inject, load_rules, parse_rules
from dqd_server.engine.findings import FINDINGS_SCHEMA
from dqd_server.engine.repository import load_repository
from dqd_server.profiling.tables import read_table
from dqd_server.tools_cli import main as tools_main


def findings(*rows: tuple[int, str, str, float]) -> pa.Table:
    return pa.Table.from_pylist([dict(row=r, column=c, field=c, method=m, code="X", message="", confidence=conf,
                                      value="") for r, c, m, conf in rows], schema=FINDINGS_SCHEMA)


def test_scores_on_a_hand_checked_example() -> None:
    dirty = pa.table({"a": ["1", "2x", "3", "4"], "b": ["p", "q", "N/A", "s"]})
    clean = pa.table({"a2": ["1", "2", "3", "4"], "b2": ["p", "q", "", "s"]})  # names differ: by position
    truth = truth_from_pair(dirty, clean)
    assert list(zip(truth.column("row").to_pylist(), truth.column("column").to_pylist())) == [(1, "a"), (2, "b")]
    f = findings((1, "a", "validation", 0.9), (0, "a", "validation", 0.4),  # one right, one wrong
                 (2, "b", "pattern", 0.8), (1, "a", "pattern", 0.3), (3, "b", "pattern", 0.2),
                 (2, "b", "combined", 0.7))
    r = score(f, truth, ["a", "b"], 4)
    assert r["table"] == {"rows": 4, "columns": 2, "cells": 8, "errors": 2, "error_rate": 0.25}
    v = r["methods"]["validation"]
    assert (v["tp"], v["fp"], v["fn"], v["tn"]) == (1, 1, 1, 5)
    assert (v["precision"], v["recall"], v["f1"]) == (0.5, 0.5, 0.5)
    p = r["methods"]["pattern"]
    assert (p["tp"], p["fp"], p["fn"]) == (2, 1, 0) and p["precision"] == pytest.approx(0.6667, abs=1e-4)
    assert r["overall"]["verdict"] == "combined" and (r["overall"]["tp"], r["overall"]["fn"]) == (1, 1)
    assert r["union"]["tp"] == 2 and r["union"]["fp"] == 2
    assert r["columns"]["a"]["methods"]["validation"]["tp"] == 1 and r["columns"]["b"]["errors"] == 1
    # precision-recall curve of pattern: thresholds 0.8 (1/1), 0.3 (2/2), 0.2 (2/3)
    assert [(c["threshold"], c["precision"], c["recall"]) for c in r["curves"]["pattern"]] == [
        (0.8, 1.0, 0.5), (0.3, 1.0, 1.0), (0.2, 0.6667, 1.0)]


def test_truth_needs_the_same_shape() -> None:
    with pytest.raises(ValueError, match="rows"):
        truth_from_pair(pa.table({"a": ["1"]}), pa.table({"a": ["1", "2"]}))
    with pytest.raises(ValueError, match="aligned by position"):
        truth_from_pair(pa.table({"a": ["1"]}), pa.table({"a": ["1"], "b": ["2"]}))
    assert curve(pa.array([], pa.int64()).to_numpy(), pa.array([], pa.float64()).to_numpy(),
                 pa.array([1]).to_numpy()) == []


def small_pair(tmp_path: Path) -> tuple[Path, Path]:
    """A 300-row dirty/clean pair: units in a numeric column, a disguised null, a broken dependency."""
    clean_rows, dirty_rows = [], []
    cities = [("Bend", "OR"), ("Gary", "IN"), ("Austin", "TX"), ("Denver", "CO")]
    for i in range(300):
        city, state = cities[i % 4]
        row = {"id": str(i), "size": ["12", "16"][i % 2], "ibu": "" if i % 3 == 0 else str(20 + i % 40),
               "city": city, "state": state}
        clean_rows.append(row)
        dirty = dict(row)
        if i % 10 == 0:
            dirty["size"] = row["size"] + " oz"
        if row["ibu"] == "" and i % 2 == 0:
            dirty["ibu"] = "N/A"
        if i == 101:
            dirty["state"] = "OH"
        dirty_rows.append(dirty)
    d, c = tmp_path / "dirty.csv", tmp_path / "clean.csv"
    pacsv.write_csv(pa.Table.from_pylist(dirty_rows), d)
    pacsv.write_csv(pa.Table.from_pylist(clean_rows).rename_columns(["id", "size", "ibu", "city", "st"]), c)
    return d, c


def test_pair_mode_end_to_end_json(tmp_path: Path) -> None:
    d, c = small_pair(tmp_path)
    out = tmp_path / "scores.json"
    assert tools_main(["evaluate", "--dirty", str(d), "--clean", str(c), "--json", str(out), "-q"]) == 0
    r = json.loads(out.read_text())
    assert set(r["overall"]) >= {"precision", "recall", "f1", "tp", "fp", "fn", "tn"}
    assert r["table"]["errors"] == 30 + 50 + 1 and r["mode"] == "pair" and r["profiled"] is True
    assert r["overall"]["f1"] == 1.0  # every unit variant, null token and the broken state, nothing else
    assert r["columns"]["size"]["methods"]["validation"]["tp"] == 30
    assert r["columns"]["state"]["methods"]["dependency"]["tp"] == 1


def test_inject_mode_profiles_the_dirty_table(tmp_path: Path) -> None:
    d, c = small_pair(tmp_path)
    ev = evaluate_injected(c, rate=0.05, seed=3)
    r = ev.result
    assert r["mode"] == "inject" and r["table"]["errors"] == ev.injected.num_rows > 0
    assert r["overall"]["f1"] > 0.6 and set(r["injection"]["recall_by_kind"]) <= set(k for k in
                                                                                     ev.injected.column("kind").to_pylist())


def test_weights_written_back_and_used(tmp_path: Path) -> None:
    d, c = small_pair(tmp_path)
    repo = tmp_path / "repo"
    ev = evaluate_pair(d, c, profile_out=repo)
    written = write_weights(repo, ev.result)
    assert written
    spec = load_repository(repo)["dirty__size"]
    assert spec.weights["validation"] == 1.0 and spec.weights["pattern"] == 0.0
    # a second run with the stored profile gives the same scores
    again = evaluate_pair(d, c, profile_dir=repo)
    assert again.result["overall"]["f1"] == ev.result["overall"]["f1"] and again.result["profiled"] is False


def test_injection_is_reproducible_and_every_cell_differs() -> None:
    table = pa.table({"name": [f"Alpha Beta {i % 7}" for i in range(500)],
                      "qty": [str(i % 50) for i in range(500)], "code": [f"X-{i:04d}" for i in range(500)]})
    a_dirty, a_log = inject(table, seed=11, rate=0.1)
    b_dirty, b_log = inject(table, seed=11, rate=0.1)
    assert a_dirty.equals(b_dirty) and a_log.equals(b_log)
    assert not inject(table, seed=12, rate=0.1)[1].equals(a_log)
    assert 100 < a_log.num_rows < 200
    for r in a_log.to_pylist():
        assert r["original"] != r["dirty"]
        assert table.column(r["column"])[r["row"]].as_py() == r["original"]
        assert a_dirty.column(r["column"])[r["row"]].as_py() == r["dirty"]
    changed = sum(a != b for col in table.column_names
                  for a, b in zip(table.column(col).to_pylist(), a_dirty.column(col).to_pylist()))
    assert changed == a_log.num_rows
    kinds = set(a_log.column("kind").to_pylist())
    assert {"typo", "unit"} & kinds and len(kinds) >= 5


def test_injection_rules_are_declarative_and_checked(tmp_path: Path) -> None:
    rules = parse_rules(yaml.safe_load("""
rate: 0.5
fields:
  colour: {errors: [{kind: wrong_domain, values: [Cotton, Wool]}]}
  size: {rate: 0.0, errors: [case]}
"""))
    table = pa.table({"colour": ["Black"] * 40, "size": ["M"] * 40})
    dirty, log = inject(table, rules, seed=1)
    assert set(log.column("column").to_pylist()) == {"colour"}
    assert set(dirty.column("colour").to_pylist()) <= {"Black", "Cotton", "Wool"}
    assert load_rules("catalog").fields["ean"].errors[2].kind == "check_digit" and load_rules() is DEFAULT_RULES
    for bad, needle in [("{rate: 2}", "between 0 and 1"), ("{fields: {a: {errors: [nope]}}}", "unknown kind"),
                        ("{other: 1}", "unknown key"), ("{fields: {a: {errors: []}}}", "non-empty")]:
        with pytest.raises(ValueError, match=needle):
            parse_rules(yaml.safe_load(bad))


def test_inject_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d, c = small_pair(tmp_path)
    out = tmp_path / "out" / "dirty.csv"
    assert tools_main(["inject", "--data", str(c), "--out", str(out), "--seed", "4", "--rate", "0.05"]) == 0
    log = read_table(out.with_name("dirty.injected.csv"))
    assert log.num_rows > 0 and "injected" in capsys.readouterr().out
    assert read_table(out).num_rows == 300


def test_evaluate_through_a_live_server_matches_in_process(tmp_path: Path) -> None:
    from dqd_server.launcher import ServerProcess

    d, c = small_pair(tmp_path)
    repo = tmp_path / "repo"
    assert tools_main(["profile", "--data", str(d), "--out", str(repo)]) == 0
    offline = evaluate_pair(d, c, profile_dir=repo)
    with ServerProcess(args=("--rules", str(repo)), env={"LOG_LEVEL": "WARNING", "METRICS_PORT": "0"}) as srv:
        live = evaluate_pair(d, c, profile_dir=repo, target=srv.target, batch_size=64)
        from dqd_client import Client

        with Client(srv.target) as client:
            served = {f.name: {m.method for m in f.methods} for f in client.list_fields()}
    assert {"validation", "pattern", "dependency", "combined"} <= served["dirty__state"]
    assert live.result["overall"] == offline.result["overall"]
    assert live.result["methods"] == offline.result["methods"]
