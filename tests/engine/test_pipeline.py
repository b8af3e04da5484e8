"""Engine pipeline: dedupe, expansion to rows, thresholds, emit-all, config and input errors.

Uses a small detector defined here, which also proves a new method plugs in through ``register``.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from dqd_server.engine import (FINDINGS_SCHEMA, Engine, InvalidInput, MethodInfo, StreamSession, TooLarge,
                               make_hits, register)
from dqd_server.engine import detector
from dqd_server.engine.findings import rows_of_hits
from dqd_server.engine.hits import concat_hits


class ShoutDetector:
    """Flags upper-case values (two hits each when they also contain '!'); counts its calls."""

    method = "shout"

    def __init__(self) -> None:
        self.seen: list[int] = []

    def fields(self) -> Mapping[str, MethodInfo]:
        return {"word": MethodInfo("7", 2)}

    def describe(self, field: str) -> str:
        return "a word"

    def context_free(self, field: str) -> bool:
        return True

    def detect(self, field: str, values: pa.StringArray) -> pa.RecordBatch:
        self.seen.append(len(values))
        upper = pc.fill_null(pc.and_(pc.utf8_is_upper(values), pc.greater(pc.utf8_length(values), 1)), False)
        bang = pc.fill_null(pc.match_substring(values, "!"), False)
        idx_u = np.flatnonzero(upper.to_numpy(zero_copy_only=False))
        idx_b = np.flatnonzero(bang.to_numpy(zero_copy_only=False))
        return concat_hits([make_hits(idx_u, "UPPER", "too loud", 0.9), make_hits(idx_b, "BANG", "exclaims", 0.4)])


@pytest.fixture()
def engine(monkeypatch: pytest.MonkeyPatch) -> tuple[Engine, ShoutDetector]:
    det = ShoutDetector()
    monkeypatch.setattr(detector, "_FACTORIES", dict(detector._FACTORIES))  # keep the registry clean
    register("shout", lambda root: det)
    return Engine.from_repository(Path("."), ["shout"]), det


def test_rows_of_hits_maps_every_row_of_a_value() -> None:
    indices = np.array([0, 1, 0, 2, 1, 0])
    rows, pos = rows_of_hits(indices, np.array([1, 0, 1]), 3)
    assert list(rows) == [0, 1, 1, 2, 4, 4, 5]
    assert sorted(zip(rows.tolist(), pos.tolist())) == [(0, 1), (1, 0), (1, 2), (2, 1), (4, 0), (4, 2), (5, 1)]


def test_findings_rows_values_and_dedupe(engine: tuple[Engine, ShoutDetector]) -> None:
    eng, det = engine
    plan = eng.plan({"w": "word"}, ["shout"])
    batch = pa.record_batch({"w": ["ok", "LOUD", None, "LOUD", "ok", "HEY!"], "other": [1, 2, 3, 4, 5, 6]})
    out = eng.detect(plan, batch, first_row=100)
    assert out.schema == FINDINGS_SCHEMA
    assert det.seen == [4]  # distinct values only: ok, LOUD, null, HEY!
    got = list(zip(out.column("row").to_pylist(), out.column("code").to_pylist(), out.column("value").to_pylist()))
    assert got == [(101, "UPPER", "LOUD"), (103, "UPPER", "LOUD"), (105, "UPPER", "HEY!"), (105, "BANG", "HEY!")]
    assert set(out.column("column").to_pylist()) == {"w"} and set(out.column("method").to_pylist()) == {"shout"}


def test_thresholds_field_specific_wins(engine: tuple[Engine, ShoutDetector]) -> None:
    eng, _ = engine
    batch = pa.record_batch({"w": ["HEY!"]})
    assert eng.detect(eng.plan({"w": "word"}, ["shout"], {"shout": 0.5}), batch).column("code").to_pylist() == ["UPPER"]
    plan = eng.plan({"w": "word"}, ["shout"], {"shout": 0.95, "word.shout": 0.1})
    assert eng.detect(plan, batch).num_rows == 2


def test_emit_all_scores_every_cell(engine: tuple[Engine, ShoutDetector]) -> None:
    eng, _ = engine
    out = eng.detect(eng.plan({"w": "word"}, ["shout"], emit_all=True), pa.record_batch({"w": ["a", "B", "a"]}))
    assert sorted(zip(out.column("row").to_pylist(), out.column("code").to_pylist())) == [
        (0, "OK"), (1, "OK"), (2, "OK")]
    out = eng.detect(eng.plan({"w": "word"}, ["shout"], emit_all=True), pa.record_batch({"w": ["a", "BB"]}))
    assert dict(zip(out.column("row").to_pylist(), out.column("confidence").to_pylist())) == {0: 0.0, 1: 0.9}


@pytest.mark.parametrize(
    ("columns", "methods", "thresholds", "needle"),
    [
        ({}, ["shout"], {}, "no columns"),
        ({"w": "nope"}, ["shout"], {}, "unknown field type 'nope'"),
        ({"w": "word"}, ["ml"], {}, "unknown method 'ml'"),
        ({"w": "word"}, ["shout"], {"shout": 1.5}, "within 0..1"),
        ({"w": "word"}, ["shout"], {"nope.shout": 0.5}, "unknown field type 'nope'"),
    ],
)
def test_plan_errors_say_what_to_fix(engine, columns, methods, thresholds, needle) -> None:  # noqa: ANN001
    eng, _ = engine
    with pytest.raises(InvalidInput, match=needle):
        eng.plan(columns, methods, thresholds)


def test_input_errors(engine: tuple[Engine, ShoutDetector]) -> None:
    eng, _ = engine
    plan = eng.plan({"w": "word"}, ["shout"])
    with pytest.raises(InvalidInput, match="column 'w' is not in the batch"):
        eng.detect(plan, pa.record_batch({"x": ["a"]}))
    with pytest.raises(InvalidInput, match="has type list"):
        eng.detect(plan, pa.record_batch({"w": pa.array([["a"]])}))
    # numbers are checked as their text; all-null columns too
    assert eng.detect(plan, pa.record_batch({"w": pa.array([1, 2])})).num_rows == 0
    assert eng.detect(plan, pa.record_batch({"w": pa.nulls(3)})).num_rows == 0


def test_invalid_utf8_is_refused_not_crashed(engine: tuple[Engine, ShoutDetector]) -> None:
    eng, _ = engine
    bad = pa.Array.from_buffers(pa.string(), 1, [None, pa.py_buffer(np.array([0, 2], np.int32).tobytes()),
                                                 pa.py_buffer(b"\xff\xfe")])
    with pytest.raises(InvalidInput, match="malformed"):
        eng.detect(eng.plan({"w": "word"}, ["shout"]), pa.record_batch({"w": bad}))


def test_stream_session_numbers_rows_and_guards_schema(engine: tuple[Engine, ShoutDetector]) -> None:
    eng, _ = engine
    session = StreamSession(eng, eng.plan({"w": "word"}, ["shout"]), max_batch_rows=3)
    r0 = session.feed(pa.record_batch({"w": ["a1", "b"]}))
    r1 = session.feed(pa.record_batch({"w": ["c", "DD"]}))
    assert (r0.first_row, r1.first_row, r1.findings.column("row").to_pylist()) == (0, 2, [3])
    with pytest.raises(InvalidInput, match="changes the schema mid-stream"):
        session.feed(pa.record_batch({"w": [1]}))
    with pytest.raises(TooLarge, match="limit is 3 rows"):
        session.feed(pa.record_batch({"w": ["a"] * 4}))
    summary = session.finish()
    assert (summary.rows, summary.batches, summary.cells_checked, summary.findings) == (4, 2, 4, 1)
    assert summary.counts == {("w", "word", "shout"): 1}


def test_engine_never_imports_grpc() -> None:
    root = Path(__file__).resolve().parents[2] / "dqd_server" / "engine"
    offenders = [p.name for p in root.rglob("*.py") if "import grpc" in p.read_text() or "from grpc" in p.read_text()]
    assert offenders == []
