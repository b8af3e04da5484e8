"""Plain result types of the client (findings, summaries, field info) and their proto/Arrow codecs."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa

from ._exceptions import ProtocolError
from ._proto import detection_pb2 as pb

__all__ = ["FINDINGS_SCHEMA", "BatchResult", "FieldInfo", "Finding", "FindingCount", "Job", "MethodInfo",
           "Summary", "decode_findings", "encode_batch", "findings_table"]

FINDINGS_SCHEMA = pa.schema([
    pa.field("row", pa.int64()),
    pa.field("column", pa.string()),
    pa.field("field", pa.string()),
    pa.field("method", pa.string()),
    pa.field("code", pa.string()),
    pa.field("message", pa.string()),
    pa.field("confidence", pa.float64()),
    pa.field("value", pa.string()),
])


@dataclass(frozen=True)
class FindingCount:
    """Number of findings of one column, field type and method."""

    column: str
    field: str
    method: str
    count: int


@dataclass(frozen=True)
class Summary:
    """What a detection run checked and found (mirrors ``DetectSummary``)."""

    rows: int
    batches: int
    cells_checked: int
    findings: int
    counts: tuple[FindingCount, ...]
    elapsed_seconds: float
    job_id: str

    @classmethod
    def from_proto(cls, msg: pb.DetectSummary) -> Summary:
        counts = tuple(FindingCount(c.column, c.field, c.method, c.count) for c in msg.counts)
        return cls(rows=msg.rows, batches=msg.batches, cells_checked=msg.cells_checked,
                   findings=msg.findings, counts=counts, elapsed_seconds=msg.elapsed_seconds,
                   job_id=msg.job_id)


@dataclass(frozen=True)
class BatchResult:
    """The findings for one input batch; ``findings`` has :data:`FINDINGS_SCHEMA`.

    ``stored`` is the server's acknowledgement that the batch and its findings are durably stored
    with the job (persisted jobs only).
    """

    batch_index: int
    first_row: int
    num_rows: int
    findings: pa.RecordBatch
    stored: bool = False

    @property
    def num_findings(self) -> int:
        return self.findings.num_rows


@dataclass(frozen=True)
class Finding:
    """One flagged (or, with ``emit="all"``, scored) cell; ``row`` is 0-based over the input."""

    row: int
    column: str
    field: str
    method: str
    code: str
    message: str
    confidence: float
    value: str | None

    @classmethod
    def from_proto(cls, msg: pb.Finding) -> Finding:
        return cls(row=msg.row, column=msg.column, field=msg.field, method=msg.method, code=msg.code,
                   message=msg.message, confidence=msg.confidence,
                   value=None if msg.value_is_null else msg.value)


@dataclass(frozen=True)
class MethodInfo:
    """A detection method available for a field type."""

    method: str
    version: str
    checks: int


@dataclass(frozen=True)
class FieldInfo:
    """A field type the server can check, with its methods."""

    name: str
    description: str
    methods: tuple[MethodInfo, ...]

    @classmethod
    def from_proto(cls, msg: pb.FieldInfo) -> FieldInfo:
        methods = tuple(MethodInfo(m.method, m.version, m.checks) for m in msg.methods)
        return cls(name=msg.name, description=msg.description, methods=methods)


@dataclass(frozen=True)
class Job:
    """A persisted detection job (``GetJob``); ``status`` is "RUNNING", "COMPLETED", "FAILED", …"""

    job_id: str
    job_key: str
    status: str
    created_at: str
    finished_at: str
    rows: int
    data_file: str
    findings_path: str
    error: str
    summary: Summary | None

    @classmethod
    def from_proto(cls, msg: pb.Job) -> Job:
        status = pb.JobStatus.Name(msg.status).removeprefix("JOB_STATUS_")
        return cls(job_id=msg.job_id, job_key=msg.job_key, status=status, created_at=msg.created_at,
                   finished_at=msg.finished_at, rows=msg.rows, data_file=msg.data_file,
                   findings_path=msg.findings_path, error=msg.error,
                   summary=Summary.from_proto(msg.summary) if msg.HasField("summary") else None)


def encode_batch(batch: pa.RecordBatch) -> bytes:
    """One Arrow IPC stream (schema + this one batch) as bytes."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def decode_findings(data: bytes) -> pa.RecordBatch:
    """Decode one findings IPC stream into a single batch with exactly :data:`FINDINGS_SCHEMA`."""
    if not data:
        return _empty_findings()
    try:
        table = pa.ipc.open_stream(data).read_all()
    except pa.ArrowException as exc:
        raise ProtocolError(f"cannot decode findings from the server: {exc}") from exc
    missing = [n for n in FINDINGS_SCHEMA.names if n not in table.schema.names]
    if missing:
        raise ProtocolError(f"findings from the server lack column(s) {missing}; got {table.schema.names}")
    try:
        table = table.select(FINDINGS_SCHEMA.names).cast(FINDINGS_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ProtocolError(f"findings from the server have unexpected types: {table.schema}") from exc
    if table.num_rows == 0:
        return _empty_findings()
    return table.combine_chunks().to_batches()[0]


def _empty_findings() -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([], schema=FINDINGS_SCHEMA)


def findings_table(results: Iterable[BatchResult]) -> pa.Table:
    """Concatenate the findings of ``results`` (e.g. a DetectStream) into one table.

    The schema is :data:`FINDINGS_SCHEMA` even when there are no findings at all.
    """
    return pa.Table.from_batches([r.findings for r in results], schema=FINDINGS_SCHEMA)
