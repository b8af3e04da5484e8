"""Protobuf <-> engine conversions (the only place that knows both shapes)."""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import pyarrow as pa

from .._proto import detection_pb2 as pb
from ..engine import MethodInfo, Summary
from ..storage import JobRecord


def summary_to_proto(summary: Summary) -> pb.DetectSummary:
    return pb.DetectSummary(
        rows=summary.rows,
        batches=summary.batches,
        cells_checked=summary.cells_checked,
        findings=summary.findings,
        counts=[pb.FindingCount(column=c, field=f, method=m, count=n)
                for (c, f, m), n in sorted(summary.counts.items())],
        elapsed_seconds=summary.elapsed_seconds,
        job_id=summary.job_id,
    )


def rows_to_batch(columns: Sequence[str], rows: Sequence[pb.Row]) -> pa.RecordBatch:
    """DetectRows input as one batch of string columns; a cell left out of a row is null.

    Cells of columns that ``columns`` does not map are ignored, as in Detect.
    """
    data = {c: pa.array([r.cells[c] if c in r.cells else None for r in rows], pa.string()) for c in columns}
    return pa.RecordBatch.from_pydict(data)


def findings_to_proto(batch: pa.RecordBatch) -> list[pb.Finding]:
    out = []
    for rec in batch.to_pylist():
        value = rec.pop("value")
        out.append(pb.Finding(value="" if value is None else value, value_is_null=value is None, **rec))
    return out


def fields_to_proto(
    fields: Mapping[str, Mapping[str, MethodInfo]], describe: Callable[[str], str]
) -> pb.ListFieldsResponse:
    return pb.ListFieldsResponse(fields=[
        pb.FieldInfo(name=name, description=describe(name),
                     methods=[pb.MethodInfo(method=m, version=i.version, checks=i.checks)
                              for m, i in methods.items()])
        for name, methods in fields.items()
    ])


JOB_STATUS = {"running": pb.JOB_STATUS_RUNNING, "completed": pb.JOB_STATUS_COMPLETED,
              "failed": pb.JOB_STATUS_FAILED, "cancelled": pb.JOB_STATUS_CANCELLED}


def job_to_proto(job: JobRecord) -> pb.Job:
    return pb.Job(
        job_id=job.id, job_key=job.job_key or "", status=JOB_STATUS.get(job.status, pb.JOB_STATUS_UNSPECIFIED),
        created_at=job.created_at.isoformat(), finished_at=job.finished_at.isoformat() if job.finished_at else "",
        rows=job.rows, data_file=job.data_file or "", findings_path=job.findings_path or "", error=job.error or "",
        summary=summary_to_proto(job.summary()),
    )
