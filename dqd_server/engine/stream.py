"""One Detect stream's state: row numbering across batches, schema stability, running counts."""
from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass, field, replace

import pyarrow as pa
import pyarrow.compute as pc

from .errors import InvalidInput, TooLarge
from .pipeline import OK_CODE, Engine, Plan


@dataclass(frozen=True)
class BatchResult:
    batch_index: int
    first_row: int
    num_rows: int
    findings: pa.RecordBatch
    counts: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # flagged (column, field, method)


@dataclass
class Summary:
    job_id: str
    rows: int = 0
    batches: int = 0
    cells_checked: int = 0
    findings: int = 0
    counts: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (column, field, method)
    elapsed_seconds: float = 0.0


class StreamSession:
    """Feeds the batches of one stream through the engine, in order."""

    def __init__(self, engine: Engine, plan: Plan, *, job_id: str | None = None,
                 max_batch_rows: int | None = None, carried: Summary | None = None) -> None:
        """``carried``: totals of earlier attempts of a resumed job; numbering continues after them
        (``elapsed_seconds`` counts this session only)."""
        self.engine = engine
        self.plan = plan
        self.max_batch_rows = max_batch_rows
        self._schema: pa.Schema | None = None
        self._started = time.perf_counter()
        self.summary = Summary(job_id=job_id or uuid.uuid4().hex)
        if carried is not None:
            self.summary = replace(carried, job_id=self.summary.job_id, counts=Counter(carried.counts),
                                   elapsed_seconds=0.0)

    def feed(self, batch: pa.RecordBatch) -> BatchResult:
        """Check the next batch; raises ``InvalidInput`` if its schema differs from the first one."""
        self._check_schema(batch)
        if self.max_batch_rows and batch.num_rows > self.max_batch_rows:
            raise TooLarge(f"batch {self.summary.batches} has {batch.num_rows} rows; "
                           f"the limit is {self.max_batch_rows} rows per batch — send smaller batches")
        first_row = self.summary.rows
        findings = self.engine.detect(self.plan, batch, first_row)
        result = BatchResult(self.summary.batches, first_row, batch.num_rows, findings, flagged_counts(findings))
        self._count(result)
        return result

    def finish(self) -> Summary:
        self.summary.elapsed_seconds = time.perf_counter() - self._started
        return self.summary

    def _check_schema(self, batch: pa.RecordBatch) -> None:
        if self._schema is None:
            self._schema = batch.schema
            return
        if not batch.schema.equals(self._schema):
            raise InvalidInput(
                f"batch {self.summary.batches} changes the schema mid-stream: expected "
                f"{_describe(self._schema)}, got {_describe(batch.schema)}; start a new stream for a new schema"
            )

    def _count(self, result: BatchResult) -> None:
        s = self.summary
        s.rows += result.num_rows
        s.batches += 1
        s.cells_checked += result.num_rows * len(self.plan.columns)
        s.findings += sum(result.counts.values())
        s.counts.update(result.counts)


def flagged_counts(findings: pa.RecordBatch) -> Counter[tuple[str, str, str]]:
    """Findings per (column, field, method), leaving out the ``OK`` rows of emit-all mode."""
    flagged = findings.filter(pc.not_equal(findings.column("code"), OK_CODE)) if findings.num_rows else findings
    if not flagged.num_rows:
        return Counter()
    keys = ["column", "field", "method"]
    grouped = pa.table(flagged.select(keys)).group_by(keys).aggregate([([], "count_all")])
    return Counter({(c, f, m): n for c, f, m, n in zip(*(grouped.column(k).to_pylist() for k in [*keys, "count_all"]))})


def _describe(schema: pa.Schema) -> str:
    shown = ", ".join(f"{f.name}:{f.type}" for f in list(schema)[:12])
    return "{" + shown + (", …" if len(schema) > 12 else "") + "}"
