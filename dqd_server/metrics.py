"""Prometheus metrics: what dqd counts, the gRPC interceptor that counts RPCs, and the /metrics endpoint.

Metrics (all per process; with API_WORKERS > 1 the supervisor's /metrics sums the workers):

====================================  =========  ============  ===============================================
name                                  type       labels        what
====================================  =========  ============  ===============================================
dqd_requests_total                    counter    rpc, code     finished RPCs (health and reflection too), by
                                                               final gRPC status code name (OK, INVALID_ARGUMENT…)
dqd_rpc_duration_seconds              histogram  rpc           RPC wall time, start of handler to final status
dqd_streams_in_flight                 gauge      rpc           streaming RPCs open now (Detect, health Watch…)
detection_duration_seconds            histogram  method        time one method took on one column of a batch
dqd_records_processed_total           counter                  rows checked (Detect and DetectRows)
dqd_batch_rows                        histogram                rows per checked batch
detection_errors_total                counter    field, method findings (cells flagged; OK rows of emit-all
                                                               mode are not findings)
dqd_worker_info                       gauge      worker, pid   1 per live server process
process_* (cpu, memory, fds, start)   various    (worker)      the process(es); with workers, per process
====================================  =========  ============  ===============================================

``rpc`` is the full method without the leading slash, e.g. ``dqd.v1.DetectionService/Detect``;
methods the server does not implement are not counted (gRPC answers UNIMPLEMENTED before any handler),
which also keeps the label set bounded.

Multi-process (``workers.py``): the supervisor makes an empty directory and starts every worker with
``PROMETHEUS_MULTIPROC_DIR`` pointing at it *before* prometheus_client is imported there, so each worker
writes its values to memory-mapped files; the supervisor serves /metrics from ``MultiProcessCollector``
over that directory (counters and histograms summed over processes, dead ones included; gauges
``livesum``/``liveall``) and calls ``mark_process_dead`` when a worker exits.
"""
from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import grpc
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import start_wsgi_server
from prometheus_client.metrics_core import Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from .engine import BatchResult, Engine

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
RPC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
DETECT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
ROW_BUCKETS = (1, 10, 100, 1_000, 5_000, 10_000, 50_000, 100_000, 250_000, 500_000, 1_000_000)
DEADLINE_SLACK = 0.1  # seconds: a call ended this close to its deadline counts as DEADLINE_EXCEEDED
OK_CODE = "OK"  # engine.pipeline.OK_CODE: the score-0 rows of emit-all mode


def multiprocess_dir() -> str | None:
    """The directory prometheus_client writes to in this process, if it runs in multi-process mode."""
    return os.environ.get(MULTIPROC_ENV) or None


class Metrics:
    """The metric objects of one server process. Create one per process (``Metrics.get``)."""

    _instance: "Metrics | None" = None

    def __init__(self, worker: str = "0", registry: CollectorRegistry = REGISTRY) -> None:
        multi = multiprocess_dir() is not None
        self.requests = Counter("dqd_requests_total", "Finished RPCs by method and final gRPC status code.",
                                ["rpc", "code"], registry=registry)
        self.rpc_duration = Histogram("dqd_rpc_duration_seconds", "RPC wall time until its final status.",
                                      ["rpc"], buckets=RPC_BUCKETS, registry=registry)
        self.streams_in_flight = Gauge("dqd_streams_in_flight", "Streaming RPCs open now.", ["rpc"],
                                       multiprocess_mode="livesum", registry=registry)
        self.detection_duration = Histogram("detection_duration_seconds",
                                            "Time one detection method took on one column of one batch.", ["method"],
                                            buckets=DETECT_BUCKETS, registry=registry)
        self.records = Counter("dqd_records_processed_total", "Rows checked.", registry=registry)
        self.batch_rows = Histogram("dqd_batch_rows", "Rows per checked batch.", buckets=ROW_BUCKETS,
                                    registry=registry)
        self.findings = Counter("detection_errors_total", "Findings (flagged cells) by field type and method.",
                                ["field", "method"], registry=registry)
        # multi-process mode adds the pid label itself (liveall keeps one series per live process)
        self.worker_info = Gauge("dqd_worker_info", "1 per live dqd server process.",
                                 ["worker"] if multi else ["worker", "pid"], multiprocess_mode="liveall",
                                 registry=registry)
        self.worker_info.labels(*([worker] if multi else [worker, str(os.getpid())])).set(1)

    @classmethod
    def get(cls, worker: str = "0") -> "Metrics":
        """This process's metrics, created on first use (a registry refuses the same name twice)."""
        if cls._instance is None:
            cls._instance = cls(worker)
        return cls._instance

    # hooks for the engine and the servicer (neither imports prometheus) --------------------------------

    def instrument(self, engine: Engine) -> Engine:
        """Time each method of every batch ``engine`` checks into ``detection_duration_seconds{method}``
        (detector and verdict-cache time together), through the engine's ``observe`` hook."""
        engine.observe = lambda method, seconds: self.detection_duration.labels(method).observe(seconds)
        return engine

    def batch_done(self, result: BatchResult) -> None:
        """The servicer's per-batch hook (runs in the worker thread that checked the batch)."""
        self.records.inc(result.num_rows)
        self.batch_rows.observe(result.num_rows)
        for (_, field_type, method), n in result.counts.items():
            self.findings.labels(field_type, method).inc(n)

    def record_rpc(self, rpc: str, code: grpc.StatusCode, seconds: float) -> None:
        self.requests.labels(rpc, code.name).inc()
        self.rpc_duration.labels(rpc).observe(seconds)


# --- the interceptor --------------------------------------------------------------------------------------

class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts every RPC by method and final status, times it, and tracks open streams.

    The final status is what the client sees: OK when the handler returns, the aborted code when it
    aborts (``context.abort`` raises inside the handler; ``context.code()`` holds the code),
    DEADLINE_EXCEEDED or CANCELLED when the handler task is cancelled, UNKNOWN for an escaped exception.
    One blind spot: when gRPC itself fails a call mid-stream (a message over MAX_FILE_SIZE: the client
    sees RESOURCE_EXHAUSTED) the aio server only cancels the handler, so it counts as CANCELLED.
    """

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Any],
                                handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        rpc = handler_call_details.method.lstrip("/")
        streaming = handler.request_streaming or handler.response_streaming
        for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
            behavior = getattr(handler, kind)
            if behavior is None:
                continue
            if inspect.isasyncgenfunction(behavior):
                return handler._replace(**{kind: self._wrap_generator(behavior, rpc, streaming)})
            if inspect.iscoroutinefunction(behavior):
                return handler._replace(**{kind: self._wrap_coroutine(behavior, rpc, streaming)})
            return handler  # a sync handler runs in gRPC's thread pool; left as is
        return handler

    def _wrap_coroutine(self, behavior: Callable[..., Any], rpc: str, streaming: bool) -> Callable[..., Any]:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            call = _Call(self.metrics, rpc, streaming, context)
            try:
                result = await behavior(request, context)
            except BaseException as exc:
                call.failed(exc)
                raise
            else:
                call.returned()
            finally:
                call.done()
            return result
        return wrapped

    def _wrap_generator(self, behavior: Callable[..., Any], rpc: str, streaming: bool) -> Callable[..., Any]:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            call = _Call(self.metrics, rpc, streaming, context)
            try:
                async with contextlib.aclosing(behavior(request, context)) as responses:
                    async for response in responses:
                        yield response
            except BaseException as exc:
                call.failed(exc)
                raise
            else:
                call.returned()
            finally:
                call.done()
        return wrapped


class _Call:
    """One RPC in flight: its start time, its stream gauge, its final code."""

    __slots__ = ("metrics", "rpc", "streaming", "context", "started", "code")

    def __init__(self, metrics: Metrics, rpc: str, streaming: bool, context: grpc.aio.ServicerContext) -> None:
        self.metrics, self.rpc, self.streaming, self.context = metrics, rpc, streaming, context
        self.started = time.perf_counter()
        self.code = grpc.StatusCode.UNKNOWN
        if streaming:
            metrics.streams_in_flight.labels(rpc).inc()

    def returned(self) -> None:
        self.code = _status(self.context) or grpc.StatusCode.OK

    def failed(self, exc: BaseException) -> None:
        if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
            # the aio server does not say why the core ended the call (context.cancelled() stays False);
            # a deadline is recognisable by the time left, anything else counts as CANCELLED
            remaining = _safe(self.context.time_remaining)
            self.code = (grpc.StatusCode.DEADLINE_EXCEEDED if remaining is not None and remaining <= DEADLINE_SLACK
                         else grpc.StatusCode.CANCELLED)
        elif isinstance(exc, grpc.aio.AbortError):
            self.code = _status(self.context) or grpc.StatusCode.UNKNOWN
        else:  # escaped the handler: gRPC answers UNKNOWN
            self.code = _status(self.context) or grpc.StatusCode.UNKNOWN

    def done(self) -> None:
        if self.streaming:
            self.metrics.streams_in_flight.labels(self.rpc).dec()
        self.metrics.record_rpc(self.rpc, self.code, time.perf_counter() - self.started)


_CODES = {c.value[0]: c for c in grpc.StatusCode}


def _status(context: grpc.aio.ServicerContext) -> grpc.StatusCode | None:
    """The code set on the context (by abort or set_code), as a StatusCode, or None."""
    code = _safe(context.code)
    if code is None or isinstance(code, grpc.StatusCode):
        return code
    return _CODES.get(code) if isinstance(code, int) else None


def _safe(get: Callable[[], Any]) -> Any:
    try:
        return get()
    except Exception:  # noqa: BLE001 - a metric must never break an RPC
        return None


# --- the /metrics endpoint ------------------------------------------------------------------------------

def serve_http(host: str, port: int, registry: CollectorRegistry = REGISTRY) -> tuple[Any, int]:
    """Serve ``registry`` at http://host:port/metrics in a daemon thread; returns (server, bound port)."""
    addr = host.strip("[]") or "0.0.0.0"
    httpd, _ = start_wsgi_server(port, addr=addr, registry=registry)
    return httpd, int(httpd.server_port)


def multiprocess_registry(path: str, processes: Callable[[], Mapping[str, int]],
                          extra: Iterable[Collector] = ()) -> CollectorRegistry:
    """The supervisor's registry: every worker's values from ``path``, plus process metrics per process."""
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)
    registry.register(ProcessesCollector(processes))
    for collector in extra:
        registry.register(collector)
    return registry


def mark_worker_dead(pid: int, path: str) -> None:
    """Drop a dead worker's live gauges (its counters and histograms stay in the sums)."""
    from prometheus_client.multiprocess import mark_process_dead

    mark_process_dead(pid, path)


class ProcessesCollector(Collector):
    """The standard ``process_*`` metrics of several processes, one series per process (label ``worker``)."""

    def __init__(self, processes: Callable[[], Mapping[str, int]]) -> None:
        self.processes = processes
        self._collectors: dict[int, ProcessCollector] = {}

    def collect(self) -> Iterable[Metric]:
        merged: dict[str, Metric] = {}
        live = dict(self.processes())
        self._collectors = {pid: self._collectors.get(pid) or ProcessCollector(pid=lambda p=pid: p, registry=None)
                            for pid in live.values()}
        for worker, pid in live.items():
            for family in self._collectors[pid].collect():
                out = merged.setdefault(family.name, Metric(family.name, family.documentation, family.type))
                for sample in family.samples:
                    out.add_sample(sample.name, {**sample.labels, "worker": worker, "pid": str(pid)}, sample.value)
        return list(merged.values())
