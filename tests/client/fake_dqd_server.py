"""An in-process fake dqd server for the client tests (Detect, DetectRows, ListFields, health)."""
from __future__ import annotations

import threading
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import pyarrow as pa
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from dqd_client import FINDINGS_SCHEMA
from dqd_client._models import encode_batch
from dqd_client._proto import detection_pb2 as pb
from dqd_client._proto import detection_pb2_grpc as pb_grpc

KNOWN_FIELDS = {"material": "Fibre composition, e.g. '78% Viscose - 22% Nylon'"}


def fake_flag(value: str | None) -> tuple[str, str] | None:
    """The fake server's whole 'detector': null is missing, a word ending in 'nn' is a typo."""
    if value is None or value == "":
        return "missing", "value is missing"
    if any(word.endswith("nn") for word in value.split()):
        return "typo", f"suspicious spelling in {value!r}"
    return None


@dataclass
class FakeServicer(pb_grpc.DetectionServiceServicer):
    """A tiny dqd server for client unit tests; records what it saw."""

    metadata: list[dict[str, str]] = field(default_factory=list)
    batches_received: list[int] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    skew_rows: int = 0  # a misbehaving server: shift first_row by this much
    configs: list[pb.DetectConfig] = field(default_factory=list)

    def _record(self, context: grpc.ServicerContext) -> None:
        with self.lock:
            self.metadata.append({k: v for k, v in context.invocation_metadata()})

    def Detect(self, request_iterator, context):  # noqa: N802
        self._record(context)
        first = next(request_iterator)
        if first.WhichOneof("payload") != "config":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "first message must be the config")
        self._check_fields(first.config.columns, context)
        with self.lock:
            self.configs.append(first.config)
        row = 0
        total = 0
        for index, request in enumerate(request_iterator):
            batch = pa.ipc.open_stream(request.arrow_batch).read_next_batch()
            with self.lock:
                self.batches_received.append(batch.num_rows)
                self.events.append(f"recv {index}")
            out = self._findings(batch, dict(first.config.columns), row)
            total += out.num_rows
            with self.lock:
                self.events.append(f"send {index}")
            yield pb.DetectResponse(findings=pb.BatchFindings(
                batch_index=index, first_row=row + self.skew_rows, num_rows=batch.num_rows,
                num_findings=out.num_rows, arrow_batch=encode_batch(out)))
            row += batch.num_rows
        yield pb.DetectResponse(summary=pb.DetectSummary(
            rows=row, batches=len(self.batches_received), cells_checked=row * len(first.config.columns),
            findings=total, job_id="fake-job",
            counts=[pb.FindingCount(column="material", field="material", method="validation", count=total)]))

    def DetectRows(self, request, context):  # noqa: N802
        self._record(context)
        self._check_fields(request.columns, context)
        findings = []
        for i, row in enumerate(request.rows):
            for column, fld in request.columns.items():
                value = row.cells[column] if column in row.cells else None
                hit = fake_flag(value)
                if hit:
                    findings.append(pb.Finding(row=i, column=column, field=fld, method="validation",
                                               code=hit[0], message=hit[1], confidence=1.0,
                                               value=value or "", value_is_null=value is None))
        return pb.DetectRowsResponse(findings=findings, summary=pb.DetectSummary(
            rows=len(request.rows), findings=len(findings)))

    def ListFields(self, request, context):  # noqa: N802
        self._record(context)
        return pb.ListFieldsResponse(fields=[
            pb.FieldInfo(name=name, description=desc,
                         methods=[pb.MethodInfo(method="validation", version="1", checks=3)])
            for name, desc in KNOWN_FIELDS.items()])

    def GetJob(self, request, context):  # noqa: N802
        self._record(context)
        if request.job_id != "fake-job" and request.job_key != "k1":
            context.abort(grpc.StatusCode.NOT_FOUND, f"no job {request.job_id or request.job_key!r}")
        return pb.Job(job_id="fake-job", job_key="k1", status=pb.JOB_STATUS_COMPLETED,
                      created_at="2026-01-01T00:00:00Z", finished_at="2026-01-01T00:00:01Z", rows=4,
                      data_file="in.csv", findings_path="/jobs/fake-job.parquet",
                      summary=pb.DetectSummary(rows=4, findings=2, job_id="fake-job"))

    @staticmethod
    def _check_fields(columns, context) -> None:
        unknown = sorted(set(columns.values()) - set(KNOWN_FIELDS))
        if unknown:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"unknown field type(s) {unknown}; known: {sorted(KNOWN_FIELDS)}")

    @staticmethod
    def _findings(batch: pa.RecordBatch, columns: dict[str, str], first_row: int) -> pa.RecordBatch:
        rows = []
        for column, fld in columns.items():
            for i, value in enumerate(batch.column(column).to_pylist()):
                hit = fake_flag(value)
                if hit:
                    rows.append({"row": first_row + i, "column": column, "field": fld,
                                 "method": "validation", "code": hit[0], "message": hit[1],
                                 "confidence": 1.0, "value": value})
        return pa.RecordBatch.from_pylist(rows, schema=FINDINGS_SCHEMA)


@dataclass
class FakeServer:
    target: str
    servicer: FakeServicer




def start_fake_server(credentials: grpc.ServerCredentials | None = None) -> tuple[grpc.Server, FakeServer]:
    """Start a fake server on a free 127.0.0.1 port (TLS when ``credentials`` is given)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    servicer = FakeServicer()
    pb_grpc.add_DetectionServiceServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return server, FakeServer(f"127.0.0.1:{port}", servicer)
