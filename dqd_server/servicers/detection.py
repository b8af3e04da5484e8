"""dqd.v1.DetectionService: Detect (bidi stream of Arrow batches), DetectRows, ListFields."""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable

import grpc
import pyarrow as pa

from .._proto import detection_pb2 as pb
from .._proto import detection_pb2_grpc as pb_grpc
from ..engine import BadRepository, BatchResult, Engine, InvalidInput, NotReady, Plan, StreamSession, Summary, TooLarge
from ..engine.ipc import decode_batch, encode_batch
from ..storage import JobBusy, JobHandle, JobStore
from . import convert
from .errors import maps_errors

log = logging.getLogger("dqd.detect")

# Trailing metadata of a resume refused because the job's owner is alive: milliseconds to wait.
RETRY_AFTER_MS_KEY = "dqd-retry-after-ms"


class EngineHolder:
    """The engine currently serving (None while rules load, swapped whole on reload) and the job store."""

    def __init__(self, loader: Callable[[], Engine] | None = None) -> None:
        self.engine: Engine | None = None
        self.store: JobStore | None = None
        self.accepting = True
        self.loader = loader  # builds an engine from the repository (start-up, ReloadModels)
        self._reload_lock = threading.Lock()

    def reload(self) -> Engine:
        """Swap in an engine of the newest versions. Streams keep the engine they started with; a
        repository that does not load leaves the current engine serving."""
        if self.loader is None:
            raise NotReady("this server cannot reload")
        with self._reload_lock:
            try:
                engine = self.loader()
            except (OSError, ValueError) as exc:
                raise BadRepository(f"reload refused, the previous versions keep serving: {exc}") from None
            self.engine = engine
            return engine

    def jobs(self) -> JobStore:
        if self.store is None:
            raise NotReady("the job store is not open yet; retry in a moment")
        return self.store

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
        config = first.config
        replay = config.HasField("replay_from_batch")
        if config.resume and not config.job_key:
            raise InvalidInput("resume needs a job_key naming the job to continue")
        if replay and not config.resume:
            raise InvalidInput("replay_from_batch only applies with resume")
        plan = _plan(engine, config)
        job = None
        if config.persist or config.job_key:  # a job key names a stored job, so it implies persist
            try:
                job = await asyncio.to_thread(self.holder.jobs().start, job_key=config.job_key or None,
                                              data_file=config.data_file, columns=plan.columns,
                                              methods=plan.methods, resume=config.resume)
            except JobBusy as exc:  # the owner is alive: tell a resuming client when to try again
                context.set_trailing_metadata(((RETRY_AFTER_MS_KEY, str(max(int(exc.retry_after * 1000), 1))),))
                raise
        session = start_session(engine, plan, job, max_batch_rows=self.max_batch_size)
        try:
            if config.resume:
                assert job is not None
                yield pb.DetectResponse(started=pb.StreamStarted(job_id=job.job_id, next_batch=job.batches,
                                                                 next_row=job.rows))
                if replay:
                    async for answer in _replay(job, config.replay_from_batch):
                        yield answer
            async for request in request_iterator:
                if request.WhichOneof("payload") != "arrow_batch":
                    raise InvalidInput(f"message {session.summary.batches + 1} of the stream is not an "
                                       "arrow_batch; send the config once, first, then only batches")
                result, payload = await asyncio.to_thread(_feed, session, request.arrow_batch, self.on_batch, job)
                # stored: _feed returned only after job.append made the batch durable (the acknowledgement).
                yield pb.DetectResponse(findings=pb.BatchFindings(
                    batch_index=result.batch_index, first_row=result.first_row, num_rows=result.num_rows,
                    num_findings=result.findings.num_rows, arrow_batch=payload, stored=job is not None))
            summary = session.finish()
            # The summary goes out before the job is marked completed: a connection that dropped
            # can end the reads like a half-close, but then this write fails and the job is cancelled.
            # The client sees the stream end OK only after ``complete`` returned.
            yield pb.DetectResponse(summary=convert.summary_to_proto(summary))
            if job:
                await asyncio.to_thread(job.complete, summary)
        except (asyncio.CancelledError, GeneratorExit):
            if job:  # synchronously: the task is being cancelled, an await here could be cut short
                job.fail("cancelled", f"the stream was cancelled after {session.summary.rows} rows "
                                      "(client cancel, disconnect, deadline or server shutdown)")
            raise
        except BaseException as exc:
            if job:
                job.fail("failed", f"{type(exc).__name__}: {exc}")
            raise
        log.info("stream %s done: %d rows, %d findings, %.2fs", summary.job_id, summary.rows,
                 summary.findings, summary.elapsed_seconds)

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
        result, _ = await asyncio.to_thread(_feed, session, batch, self.on_batch, None, False)
        return pb.DetectRowsResponse(findings=convert.findings_to_proto(result.findings),
                                     summary=convert.summary_to_proto(session.finish()))

    @maps_errors
    async def GetJob(self, request: pb.GetJobRequest, context: grpc.aio.ServicerContext) -> pb.Job:
        which = request.WhichOneof("key")
        if not which or not getattr(request, which):
            raise InvalidInput("GetJob needs a job_id or a job_key")
        record = await asyncio.to_thread(self.holder.jobs().get, **{which: getattr(request, which)})
        return convert.job_to_proto(record)

    @maps_errors
    async def ReloadModels(self, request: pb.ReloadModelsRequest, context: grpc.aio.ServicerContext
                           ) -> pb.ReloadModelsResponse:
        self.holder.get()
        started = time.perf_counter()
        engine = await asyncio.to_thread(self.holder.reload)
        log.info("reloaded the repository: %d field types", len(engine.fields()))
        return pb.ReloadModelsResponse(fields=convert.fields_to_proto(engine.fields(), engine.describe).fields,
                                       elapsed_seconds=time.perf_counter() - started)

    @maps_errors
    async def ListFields(self, request: pb.ListFieldsRequest, context: grpc.aio.ServicerContext
                         ) -> pb.ListFieldsResponse:
        engine = self.holder.get()
        return convert.fields_to_proto(engine.fields(), engine.describe)


def start_session(engine: Engine, plan: Plan, job: JobHandle | None, *,
                  max_batch_rows: int | None = None) -> StreamSession:
    """The StreamSession of a Detect stream; for a resumed job it starts at the job's stored offset.

    A resumed session numbers its next batch ``job.batches`` and its next row ``job.rows``, and its
    totals (rows, batches, cells, findings, counts) start from what the earlier attempts stored, so
    the summary covers the whole job (``elapsed_seconds`` only this stream's time). The schema check
    starts afresh with the first batch of this stream.
    """
    carried = None
    if job is not None and job.resumed:
        carried = Summary(job_id=job.job_id, rows=job.rows, batches=job.batches, cells_checked=job.cells_checked,
                          findings=job.findings, counts=Counter(job.finding_counts()))
    return StreamSession(engine, plan, job_id=job.job_id if job else None, max_batch_rows=max_batch_rows,
                         carried=carried)


async def _replay(job: JobHandle, from_batch: int) -> AsyncIterator[pb.DetectResponse]:
    """Re-send the stored findings of batches ``from_batch .. job.batches - 1`` (answers a client lost)."""
    entries = await asyncio.to_thread(job.stored_batches, from_batch)
    for entry in entries:
        findings = await asyncio.to_thread(job.batch_findings, entry)
        payload = await asyncio.to_thread(encode_batch, findings)
        yield pb.DetectResponse(findings=pb.BatchFindings(
            batch_index=entry.batch_index, first_row=entry.first_row, num_rows=entry.num_rows,
            num_findings=findings.num_rows, arrow_batch=payload, stored=True))


def _plan(engine: Engine, config: pb.DetectConfig) -> Plan:
    return engine.plan(dict(config.columns), list(config.methods), dict(config.thresholds),
                       config.emit == pb.EMIT_MODE_ALL)


def _feed(session: StreamSession, data: bytes | pa.RecordBatch, on_batch: Callable[[BatchResult], None] | None,
          job: JobHandle | None, encode: bool = True) -> tuple[BatchResult, bytes]:
    """One batch, all off the event loop: decode, check, observe, store, encode the answer."""
    result = session.feed(decode_batch(data) if isinstance(data, bytes) else data)
    if on_batch is not None:
        on_batch(result)
    if job is not None:
        job.append(result.findings, result.num_rows)
    return result, encode_batch(result.findings) if encode else b""
