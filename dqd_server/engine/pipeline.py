"""The engine: plan a check from a config, then run every detector on the distinct values of a batch.

Protocol-neutral: speaks Arrow and plain Python, raises ``errors.InvalidInput`` for bad input.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import ipc
from .cache import VerdictCache
from .detector import (Detector, MethodInfo, build_detectors, is_combiner, is_optional, is_table_detector,
                       waits_on_model)
from .errors import InvalidInput
from .findings import FINDINGS_SCHEMA, build_findings, concat_findings, empty_findings, rows_of_hits
from .hits import concat_hits, make_hits

DEFAULT_METHODS = ("validation", "pattern", "dependency")
OK_CODE = "OK"
# threads that wait on model batchers (they mostly sleep: the batcher's worker runs the model)
_MODEL_CALLS = ThreadPoolExecutor(max_workers=32, thread_name_prefix="dqd-model-call")


@dataclass(frozen=True)
class Plan:
    """A validated check: which column is which field type, which methods, which thresholds."""

    columns: Mapping[str, str]
    methods: tuple[str, ...]
    thresholds: Mapping[str, float] = field(default_factory=dict)  # "method" or "field.method"
    emit_all: bool = False

    def threshold(self, field_type: str, method: str) -> float:
        """Minimum confidence to emit: the field-specific value wins over the method-wide one."""
        return self.thresholds.get(f"{field_type}.{method}", self.thresholds.get(method, 0.0))


class Engine:
    """Runs the detectors of a rules/model repository over Arrow record batches."""

    def __init__(self, detectors: Mapping[str, Detector], cache: VerdictCache | None = None) -> None:
        self.detectors = dict(detectors)
        self.cache = cache
        # called once per method and batch with the seconds it took (detection + cache), e.g. by metrics
        self.observe: Callable[[str, float], None] | None = None
        self._versions = {(m, f): info.version for m, d in self.detectors.items() for f, info in d.fields().items()}

    @classmethod
    def from_repository(cls, root: Path, methods: list[str] | None = None,
                        cache: VerdictCache | None = None) -> "Engine":
        return cls(build_detectors(root, methods), cache)

    def fields(self) -> dict[str, dict[str, MethodInfo]]:
        """Field type -> method -> (version, checks), for every loaded detector."""
        out: dict[str, dict[str, MethodInfo]] = {}
        for method, det in sorted(self.detectors.items()):
            for field_type, info in det.fields().items():
                out.setdefault(field_type, {})[method] = info
        return dict(sorted(out.items()))

    def describe(self, field_type: str) -> str:
        for det in self.detectors.values():
            if field_type in det.fields():
                return det.describe(field_type)
        return ""

    def plan(
        self,
        columns: Mapping[str, str],
        methods: Iterable[str] = (),
        thresholds: Mapping[str, float] | None = None,
        emit_all: bool = False,
    ) -> Plan:
        """Check a config against what is loaded; every problem is reported at once."""
        problems: list[str] = []
        known = self.fields()
        if not columns:
            problems.append("no columns to check: map at least one column to a field type")
        chosen = tuple(dict.fromkeys(methods)) or tuple(m for m in DEFAULT_METHODS if m in self.detectors)
        for m in chosen:
            if m not in self.detectors:
                problems.append(f"unknown method {m!r}; available: {sorted(self.detectors)}")
        for column, field_type in columns.items():
            if not column:
                problems.append("a column name is empty")
            if field_type not in known:
                problems.append(
                    f"column {column!r}: unknown field type {field_type!r}; known: {', '.join(known)}"
                )
                continue
            missing = [m for m in chosen if m in self.detectors and m not in known[field_type]
                       and not is_optional(self.detectors[m])]
            if missing:
                hint = ""
                trainable = [m for m in missing if waits_on_model(self.detectors[m])]
                if trainable:
                    hint = (f" (train {', '.join(trainable)} for it with `dqd train --methods {','.join(trainable)} "
                            f"--map COLUMN={field_type} --out MODEL_PATH`, then ReloadModels; or leave "
                            f"{'it' if len(trainable) == 1 else 'them'} out of methods)")
                problems.append(f"field type {field_type!r} has no {missing} detector loaded{hint}")
        for key, value in (thresholds or {}).items():
            field_type, _, method = key.rpartition(".")
            if not 0.0 <= value <= 1.0:
                problems.append(f"threshold {key!r}={value} must be within 0..1")
            if method not in self.detectors:
                problems.append(f"threshold {key!r}: unknown method {method!r} (use METHOD or FIELD.METHOD)")
            if field_type and field_type not in known:
                problems.append(f"threshold {key!r}: unknown field type {field_type!r}")
        if problems:
            raise InvalidInput("; ".join(problems))
        return Plan(dict(columns), chosen, dict(thresholds or {}), emit_all)

    def detect(self, plan: Plan, batch: pa.RecordBatch, first_row: int = 0) -> pa.RecordBatch:
        """Findings (``findings.FINDINGS_SCHEMA``) for one batch, rows numbered from ``first_row``."""
        combiner = next((m for m in plan.methods if is_combiner(self.detectors[m])), None)
        if combiner is not None:
            return self._detect_combined(plan, combiner, batch, first_row)
        return self._detect(plan, batch, first_row)

    def _detect(self, plan: Plan, batch: pa.RecordBatch, first_row: int) -> pa.RecordBatch:
        parts: list[pa.RecordBatch] = []
        timings: list[tuple[str, float]] = []  # (method, seconds), appended from the model-call threads too
        work: list[tuple[str, str, str, pa.Array, np.ndarray, Callable[[], pa.RecordBatch]]] = []
        for column, field_type in plan.columns.items():
            values = column_as_strings(batch, column)
            if len(values) == 0:
                continue
            encoded = pc.dictionary_encode(values, null_encoding="encode")
            if isinstance(encoded, pa.ChunkedArray):
                encoded = encoded.combine_chunks()
            distinct = encoded.dictionary
            indices = encoded.indices.to_numpy(zero_copy_only=False)
            for method in plan.methods:
                if is_optional(self.detectors[method]):  # cross-column methods and the combiner: see below
                    continue
                work.append((column, field_type, method, distinct, indices,
                             self._timed_hits(method, field_type, distinct, timings)))
        # Model-based detectors block on their network's dynamic batcher: start all of them at once, so the
        # columns of this batch share model batches (with each other and with other streams' values).
        pending = {i: _MODEL_CALLS.submit(job[-1]) for i, job in enumerate(work)
                   if waits_on_model(self.detectors[job[2]])}
        for i, (column, field_type, method, distinct, indices, run) in enumerate(work):
            hits = pending[i].result() if i in pending else run()
            if plan.emit_all:
                hits = _with_ok_rows(hits, len(distinct))
            else:
                minimum = plan.threshold(field_type, method)
                if minimum > 0 and hits.num_rows:
                    hits = hits.filter(pc.greater_equal(hits.column("confidence"), minimum))
            if not hits.num_rows:
                continue
            rows, hit_pos = rows_of_hits(indices, hits.column("index").to_numpy(), len(distinct))
            parts.append(
                build_findings(rows=rows, hit_pos=hit_pos, hits=hits, distinct=distinct, column=column,
                               field=field_type, method=method, first_row=first_row)
            )
        spent = dict.fromkeys(plan.methods, 0.0)
        for method, seconds in timings:
            spent[method] += seconds
        for method in plan.methods:  # cross-column methods see the whole batch
            if is_table_detector(self.detectors[method]):
                started = time.perf_counter()
                parts.append(self._table_findings(plan, method, batch, first_row))
                spent[method] += time.perf_counter() - started
        if self.observe is not None:
            for method, seconds in spent.items():
                if not is_combiner(self.detectors[method]):
                    self.observe(method, seconds)
        return concat_findings(parts) if parts else empty_findings()

    def _table_findings(self, plan: Plan, method: str, batch: pa.RecordBatch, first_row: int) -> pa.RecordBatch:
        detector = self.detectors[method]
        findings = table_findings(detector.detect_table(batch, plan.columns), batch, plan.columns, method, first_row)
        if plan.emit_all:
            covered = {c: f for c, f in plan.columns.items() if f in detector.fields()}
            return concat_findings([findings, ok_cells(findings, batch, covered, method, first_row)])
        return apply_thresholds(findings, plan)

    def _detect_combined(self, plan: Plan, combiner: str, batch: pa.RecordBatch, first_row: int) -> pa.RecordBatch:
        """Run the other methods (all loaded ones when only ``combined`` is asked), then merge per cell."""
        others = tuple(m for m in plan.methods if m != combiner)
        sources = others or tuple(
            m for m, d in self.detectors.items()
            if not is_combiner(d) and (is_optional(d) or all(f in d.fields() for f in plan.columns.values())))
        raw = self._detect(Plan(plan.columns, sources), batch, first_row)
        combined = self.detectors[combiner].combine(raw, plan.thresholds)
        parts = []
        if others:
            asked = Plan(plan.columns, others, plan.thresholds, plan.emit_all)
            parts.append(self._detect(asked, batch, first_row) if plan.emit_all else apply_thresholds(raw, plan))
        if plan.emit_all:
            combined = concat_findings([combined, ok_cells(combined, batch, plan.columns, combiner, first_row)])
        parts.append(combined)
        return concat_findings(parts)

    def _timed_hits(self, method: str, field_type: str, distinct: pa.Array, timings: list[tuple[str, float]]
                    ) -> Callable[[], pa.RecordBatch]:
        """A call of ``_hits`` that records its seconds in ``timings`` (wall time; model calls overlap)."""

        def run() -> pa.RecordBatch:
            started = time.perf_counter()
            try:
                return self._hits(method, field_type, distinct)
            finally:
                timings.append((method, time.perf_counter() - started))

        return run

    def _hits(self, method: str, field_type: str, distinct: pa.Array) -> pa.RecordBatch:
        detector = self.detectors[method]
        if self.cache is None or not detector.context_free(field_type):
            return detector.detect(field_type, distinct)
        key = (method, field_type, self._versions[(method, field_type)])
        return self.cache.detect(key, distinct, lambda values: detector.detect(field_type, values))


_STRINGABLE = (pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean, pa.types.is_decimal,
               pa.types.is_date, pa.types.is_timestamp, pa.types.is_time)


def column_as_strings(batch: pa.RecordBatch, column: str) -> pa.Array:
    """The column as UTF-8 text, validated; scalars of other types are cast, nested types refused."""
    index = batch.schema.get_field_index(column)
    if index < 0:
        raise InvalidInput(
            f"column {column!r} is not in the batch; the batch has {batch.schema.names[:20]}"
        )
    if batch.schema.get_all_field_indices(column) != [index]:
        raise InvalidInput(f"column {column!r} appears more than once in the batch")
    array = batch.column(index)
    ipc.validate(array, column)
    kind = array.type
    if pa.types.is_dictionary(kind):
        array, kind = array.dictionary_decode(), kind.value_type
    if pa.types.is_string(kind):
        return array
    if pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        return array.cast(pa.string())
    if pa.types.is_null(kind):
        return pa.nulls(len(array), pa.string())
    if any(test(kind) for test in _STRINGABLE):
        return array.cast(pa.string())
    raise InvalidInput(
        f"column {column!r} has type {kind}; dqd checks text and scalar columns — send it as string"
    )


def table_findings(hits: pa.RecordBatch, batch: pa.RecordBatch, columns: Mapping[str, str], method: str,
                   first_row: int) -> pa.RecordBatch:
    """Row-level hits of a table detector (``detector.TABLE_HITS_SCHEMA``) as findings, with the cells' text."""
    if not hits.num_rows:
        return empty_findings()
    parts = []
    hit_columns = hits.column("column")
    for column in pc.unique(hit_columns).to_pylist():
        if column not in columns:
            raise ValueError(f"method {method!r} flagged column {column!r}, which the plan does not check")
        sel = hits.filter(pc.equal(hit_columns, column))
        rows = sel.column("row")
        values = column_as_strings(batch, column).take(rows)
        n = sel.num_rows
        parts.append(pa.RecordBatch.from_arrays(
            [pc.add(rows, first_row), sel.column("column"), pa.repeat(pa.scalar(columns[column], pa.string()), n),
             pa.repeat(pa.scalar(method, pa.string()), n), sel.column("code"), sel.column("message"),
             sel.column("confidence"), values.cast(pa.string())], schema=FINDINGS_SCHEMA))
    return concat_findings(parts)


def apply_thresholds(findings: pa.RecordBatch, plan: Plan) -> pa.RecordBatch:
    """Keep findings at or above their (field, method) threshold."""
    if not findings.num_rows or not plan.thresholds:
        return findings
    pairs = pa.table(findings.select(["field", "method"])).group_by(["field", "method"]).aggregate([])
    limit = np.zeros(findings.num_rows)
    field_col, method_col = findings.column("field"), findings.column("method")
    for f, m in zip(pairs.column("field").to_pylist(), pairs.column("method").to_pylist()):
        t = plan.threshold(f, m)
        if t > 0:
            sel = np.asarray(pc.and_(pc.equal(field_col, f), pc.equal(method_col, m)).to_numpy(zero_copy_only=False),
                             dtype=bool)
            limit[sel] = t
    return findings.filter(pa.array(findings.column("confidence").to_numpy() >= limit))


def ok_cells(findings: pa.RecordBatch, batch: pa.RecordBatch, columns: Mapping[str, str], method: str,
             first_row: int) -> pa.RecordBatch:
    """Emit-all mode for row-level methods: an ``OK`` row for every cell of ``columns`` without a finding."""
    parts = []
    n = batch.num_rows
    for column, field_type in columns.items():
        flagged = np.zeros(n, dtype=bool)
        if findings.num_rows:
            mine = findings.filter(pc.equal(findings.column("column"), column)).column("row").to_numpy() - first_row
            flagged[mine] = True
        rows = np.flatnonzero(~flagged)
        if not len(rows):
            continue
        k = len(rows)
        parts.append(pa.RecordBatch.from_arrays(
            [pa.array(rows + first_row, pa.int64()), pa.repeat(pa.scalar(column, pa.string()), k),
             pa.repeat(pa.scalar(field_type, pa.string()), k), pa.repeat(pa.scalar(method, pa.string()), k),
             pa.repeat(pa.scalar(OK_CODE, pa.string()), k), pa.repeat(pa.scalar("", pa.string()), k),
             pa.array(np.zeros(k)), column_as_strings(batch, column).take(pa.array(rows, pa.int64())).cast(pa.string())],
            schema=FINDINGS_SCHEMA))
    return concat_findings(parts)


def _with_ok_rows(hits: pa.RecordBatch, n_distinct: int) -> pa.RecordBatch:
    """Emit-all mode: add a score-0 ``OK`` hit for every distinct value the method did not flag."""
    flagged = np.zeros(n_distinct, dtype=bool)
    flagged[hits.column("index").to_numpy()] = True
    return concat_hits([hits, make_hits(np.flatnonzero(~flagged), OK_CODE, "", 0.0)])
