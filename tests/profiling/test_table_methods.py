"""Engine hooks for cross-column methods: the TableDetector protocol, method "combined" and the null_tokens check."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from dqd_server.engine import Engine, MethodInfo, register
from dqd_server.engine import detector
from dqd_server.engine.combine import Combiner
from dqd_server.engine.detector import TABLE_HITS_SCHEMA, TableDetector, is_table_detector
from dqd_server.engine.findings import FINDINGS_SCHEMA
from dqd_server.engine.repository import load_repository


def write_field(root: Path, name: str, body: str) -> None:
    d = root / name / "1"
    d.mkdir(parents=True)
    (d / "field.yaml").write_text(body)


class PairDetector:
    """Flags column b where a == b (a toy cross-column rule)."""

    method = "pair"

    def fields(self) -> Mapping[str, MethodInfo]:
        return {"thing": MethodInfo("1", 1)}

    def describe(self, field: str) -> str:
        return "a thing"

    def detect_table(self, batch: pa.RecordBatch, columns: Mapping[str, str]) -> pa.RecordBatch:
        a, b = (batch.column(batch.schema.get_field_index(c)).to_pylist() for c in columns)
        rows = [i for i, (x, y) in enumerate(zip(a, b)) if x == y]
        col = list(columns)[1]
        return pa.RecordBatch.from_pydict({"row": rows, "column": [col] * len(rows), "code": ["SAME"] * len(rows),
                                           "message": ["same as a"] * len(rows), "confidence": [0.6] * len(rows)},
                                          schema=TABLE_HITS_SCHEMA)


@pytest.fixture()
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    write_field(tmp_path, "thing", "description: t\nvalidation:\n  - kind: regex\n    must_match: '[a-z]+'\n"
                                   "    confidence: 0.9\nweights: {validation: 0.5, pair: 1.0}\n")
    write_field(tmp_path, "other", "description: o\nvalidation:\n  - kind: length\n    max: 3\n"
                                   "    confidence: 0.8\n")
    detector.registered_methods()  # the built-in methods register on import
    monkeypatch.setattr(detector, "_FACTORIES", dict(detector._FACTORIES))
    register("pair", lambda root: PairDetector())
    return tmp_path


def test_table_detector_protocol_and_findings(repo: Path) -> None:
    engine = Engine.from_repository(repo)
    assert isinstance(engine.detectors["pair"], TableDetector) and is_table_detector(engine.detectors["pair"])
    plan = engine.plan({"a": "thing", "b": "thing"}, ["pair"])
    out = engine.detect(plan, pa.record_batch({"a": ["x", "y", "z"], "b": ["x", "q", "z"]}), first_row=10)
    assert out.schema == FINDINGS_SCHEMA
    assert [(r["row"], r["column"], r["field"], r["method"], r["value"]) for r in out.to_pylist()] == [
        (10, "b", "thing", "pair", "x"), (12, "b", "thing", "pair", "z")]
    # thresholds and emit-all apply to table methods too
    assert engine.detect(engine.plan({"a": "thing", "b": "thing"}, ["pair"], {"pair": 0.7}),
                         pa.record_batch({"a": ["x"], "b": ["x"]})).num_rows == 0
    every = engine.detect(engine.plan({"a": "thing", "b": "thing"}, ["pair"], emit_all=True),
                          pa.record_batch({"a": ["x", "y"], "b": ["x", "q"]}))
    assert sorted((r["row"], r["column"], r["code"]) for r in every.to_pylist()) == [
        (0, "a", "OK"), (0, "b", "SAME"), (1, "a", "OK"), (1, "b", "OK")]


def test_combined_weights_methods_per_field(repo: Path) -> None:
    engine = Engine.from_repository(repo)
    batch = pa.record_batch({"a": ["x", "y", "Z", "Q"], "b": ["x", "Q", "z", "Q"]})
    plan = engine.plan({"a": "thing", "b": "thing"}, ["validation", "pair", "combined"])
    out = engine.detect(plan, batch)
    combined = {(r["row"], r["column"]): r for r in out.to_pylist() if r["method"] == "combined"}
    # validation alone (weight 0.5 × 0.9 = 0.45) is not enough; pair alone (1.0 × 0.6) is; both: 1-(0.55·0.4)
    assert set(combined) == {(0, "b"), (3, "b")}
    assert combined[(3, "b")]["confidence"] == pytest.approx(1 - (1 - 0.45) * (1 - 0.6))
    assert "validation 0.45" in combined[(3, "b")]["message"] and "pair 0.60" in combined[(3, "b")]["message"]
    # the asked methods are emitted as well
    assert {r["method"] for r in out.to_pylist()} == {"validation", "pair", "combined"}
    # the threshold is configurable (method-wide or per field type)
    out = engine.detect(engine.plan({"a": "thing", "b": "thing"}, ["validation", "pair", "combined"],
                                    {"combined": 0.4}), batch)
    assert sum(r["method"] == "combined" for r in out.to_pylist()) == 5  # + the three validation-only cells
    out = engine.detect(engine.plan({"a": "thing", "b": "thing"}, ["validation", "pair", "combined"],
                                    {"thing.combined": 0.7}), batch)
    assert [(r["row"], r["column"]) for r in out.to_pylist() if r["method"] == "combined"] == [(3, "b")]


def test_combined_alone_runs_every_method(repo: Path) -> None:
    engine = Engine.from_repository(repo)
    plan = engine.plan({"a": "thing", "o": "other"}, ["combined"])
    out = engine.detect(plan, pa.record_batch({"a": ["x", "Y"], "o": ["abcd", "ab"]}))
    assert {(r["row"], r["column"], r["method"]) for r in out.to_pylist()} == {(0, "o", "combined")}
    # field "other" has no weights: validation counts fully (0.8 >= 0.5); "thing" weighs it 0.5 (0.45 < 0.5)
    assert engine.fields()["thing"]["combined"].checks == 2 and "combined" not in engine.fields()["other"]


def test_combiner_is_vectorized_post_processing() -> None:
    findings = pa.Table.from_pylist([
        dict(row=1, column="c", field="f", method="m1", code="A", message="a", confidence=0.5, value="v"),
        dict(row=1, column="c", field="f", method="m1", code="B", message="b", confidence=0.3, value="v"),
        dict(row=1, column="c", field="f", method="m2", code="C", message="c", confidence=0.2, value="v"),
        dict(row=2, column="c", field="f", method="m2", code="OK", message="", confidence=0.0, value="w"),
    ], schema=FINDINGS_SCHEMA).to_batches()[0]
    out = Combiner({}).combine(findings).to_pylist()
    assert len(out) == 1 and out[0]["code"] == "A" and out[0]["confidence"] == pytest.approx(1 - 0.5 * 0.8)


def test_null_tokens_check(tmp_path: Path) -> None:
    write_field(tmp_path, "ibu", "description: d\nvalidation:\n  - kind: null_tokens\n    tokens: ['N/A', 'null']\n")
    write_field(tmp_path, "nul", "description: d\nvalidation:\n  - kind: null_tokens\n    tokens: ['N/A', 'null']\n"
                                 "    canonical: 'null'\n")
    engine = Engine.from_repository(tmp_path, ["validation"])
    batch = pa.record_batch({"x": ["20", " n/a ", "", None, "NULL", "null"]})
    got = engine.detect(engine.plan({"x": "ibu"}), batch)
    assert got.column("row").to_pylist() == [1, 4, 5] and set(got.column("code").to_pylist()) == {"NULL_TOKEN"}
    got = engine.detect(engine.plan({"x": "nul"}), batch)
    assert got.column("row").to_pylist() == [1, 2, 4]  # the table writes 'null': N/A, empty and NULL are not it
    write_field(tmp_path / "bad", "f", "description: d\nvalidation:\n  - kind: null_tokens\n")
    with pytest.raises(ValueError, match="needs 'tokens'"):
        load_repository(tmp_path / "bad")


def test_weights_and_profile_keys_are_parsed(tmp_path: Path) -> None:
    write_field(tmp_path, "f", "description: d\nweights: {validation: 0.9}\nprofile: {column: c, anything: [1]}\n")
    spec = load_repository(tmp_path)["f"]
    assert dict(spec.weights) == {"validation": 0.9} and spec.profile["column"] == "c"
    write_field(tmp_path / "bad", "f", "description: d\nweights: {validation: 2}\n")
    with pytest.raises(ValueError, match="outside"):
        load_repository(tmp_path / "bad")


def test_plain_detectors_never_see_table_methods(repo: Path) -> None:
    engine = Engine.from_repository(repo)
    plan = engine.plan({"a": "thing", "b": "thing"})  # default methods: validation, pattern, dependency
    assert "dependency" in plan.methods
    out = engine.detect(plan, pa.record_batch({"a": ["x", "B"], "b": ["x", "y"]}))
    assert np.array_equal(out.column("row").to_numpy(), [1])
