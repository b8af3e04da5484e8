"""dqd.v1.DetectionService: Detect (bidi stream of Arrow batches), DetectRows, ListFields."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import grpc
import pyarrow as pa

from .._proto import detection_pb2 as pb
from .._proto import detection_pb2_grpc as pb_grpc
from ..engine import BatchResult, Engine, InvalidInput, NotReady, Plan, StreamSession, TooLarge
from ..engine.ipc import decode_batch, encode_batch
from . import convert
from .errors import maps_errors

log = logging.getLogger("dqd.detect")


class EngineHolder:
    """The engine currently serving; None while rules load, swapped whole on reload."""

    def __init__(self) -> None:
        self.engine: Engine | None = None
        self.accepting = True

    def get(self) -> Engine:
        if not self.accepting:
            raise NotReady("the server is shutting down; retry on another replica")
        if self.engine is None:
            raise NotReady("rules are still loading; retry in a moment (health reports SERVING when ready)")
        return self.engine


class DetectionServicer(pb_grpc.DetectionServiceServicer):
    def __init__(self, holder: EngineHolder, *, max_batch_size: int, max_rows_per_call: int,
                 on_batch: Callable[[BatchResult], None] | None = None) -> None:
        """``on_batch`` (e.g. metrics) sees every checked batch, in the worker thread that checked it."""
        self.holder = holder
        self.max_batch_size = max_batch_size
        self.max_rows_per_call = max_rows_per_call
        self.on_batch = on_batch

    @maps_errors
    async def Detect(
        self, request_iterator: AsyncIterator[pb.DetectRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.DetectResponse]:
        engine = self.holder.get()
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("payload") != "config":
            raise InvalidInput("the first Detect message must be a config (DetectRequest.config) naming "
                               "the columns to check and their field types")
        plan = _plan(engine, first.config)
        session = StreamSession(engine, plan, max_batch_rows=self.max_batch_size)
        async for request in request_iterator:
            if request.WhichOneof("payload") != "arrow_batch":
                raise InvalidInput(f"message {session.summary.batches + 1} of the stream is not an arrow_batch; "
                                   "send the config once, first, then only batches")
            result = await asyncio.to_thread(_feed, session, request.arrow_batch, self.on_batch)
            yield pb.DetectResponse(findings=pb.BatchFindings(
                batch_index=result.batch_index, first_row=result.first_row, num_rows=result.num_rows,
                num_findings=result.findings.num_rows, arrow_batch=encode_batch(result.findings)))
        summary = session.finish()
        log.info("stream %s done: %d rows, %d findings, %.2fs", summary.job_id, summary.rows,
                 summary.findings, summary.elapsed_seconds)
        yield pb.DetectResponse(summary=convert.summary_to_proto(summary))

    @maps_errors
    async def DetectRows(self, request: pb.DetectRowsRequest, context: grpc.aio.ServicerContext
                         ) -> pb.DetectRowsResponse:
        engine = self.holder.get()
        if len(request.rows) > self.max_rows_per_call:
            raise TooLarge(f"DetectRows got {len(request.rows)} rows; the limit is {self.max_rows_per_call} — "
                           "use the Detect stream for bulk data")
        plan = engine.plan(dict(request.columns), list(request.methods), dict(request.thresholds),
                           request.emit == pb.EMIT_MODE_ALL)
        batch = convert.rows_to_batch(list(plan.columns), request.rows)
        session = StreamSession(engine, plan)
        result = await asyncio.to_thread(_feed, session, batch, self.on_batch)
        return pb.DetectRowsResponse(findings=convert.findings_to_proto(result.findings),
                                     summary=convert.summary_to_proto(session.finish()))

    @maps_errors
    async def ListFields(self, request: pb.ListFieldsRequest, context: grpc.aio.ServicerContext
                         ) -> pb.ListFieldsResponse:
        engine = self.holder.get()
        return convert.fields_to_proto(engine.fields(), engine.describe)


def _plan(engine: Engine, config: pb.DetectConfig) -> Plan:
    return engine.plan(dict(config.columns), list(config.methods), dict(config.thresholds),
                       config.emit == pb.EMIT_MODE_ALL)


def _feed(session: StreamSession, data: bytes | pa.RecordBatch,
          on_batch: Callable[[BatchResult], None] | None) -> BatchResult:  # runs in a worker thread
    result = session.feed(decode_batch(data) if isinstance(data, bytes) else data)
    if on_batch is not None:
        on_batch(result)
    return result
