"""Builds the grpc.aio server: DetectionService, standard health, reflection, graceful shutdown."""
from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ._proto import detection_pb2, detection_pb2_grpc
from .auth import ApiKeyInterceptor, load_key_hashes, server_credentials
from .config import Settings
from .engine import Engine
from .engine.cache import VerdictCache
from .models.runtime import POOL, RuntimeOptions
from .metrics import Metrics, MetricsInterceptor, serve_http
from .servicers.detection import DetectionServicer, EngineHolder
from .storage import JobStore

log = logging.getLogger("dqd.server")
SERVICE_NAME = detection_pb2.DESCRIPTOR.services_by_name["DetectionService"].full_name
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVING = health_pb2.HealthCheckResponse.SERVING


class StartupError(RuntimeError):
    """The server cannot start (a port is taken, …); ``dqd`` prints it and exits 1."""


class DqdServer:
    """One dqd server process: start, load rules, serve until stopped."""

    def __init__(self, settings: Settings, *, reuse_port: bool = False, metrics: Metrics | None = None) -> None:
        """``reuse_port``: share the port with sibling workers (SO_REUSEPORT); off, a taken port is an error.
        ``metrics``: record Prometheus metrics (RPCs via an interceptor, batches via the servicer hook)."""
        self.settings = settings
        self.reuse_port = reuse_port
        self.metrics = metrics
        self.holder = EngineHolder(self.build_engine)
        self._cache = (VerdictCache(max_values=settings.cache_max_values, ttl=settings.cache_ttl)
                       if settings.enable_cache else None)
        POOL.configure(RuntimeOptions.from_settings(settings))  # how the ml/llm networks run, before any loads
        self.health = health.aio.HealthServicer()
        size = settings.max_file_size
        interceptors: list[grpc.aio.ServerInterceptor] = [MetricsInterceptor(metrics)] if metrics else []
        if settings.api_key_required:  # after metrics, so refused calls are counted too
            try:
                interceptors.append(ApiKeyInterceptor(load_key_hashes(Path(settings.api_keys_file))))
            except (OSError, ValueError) as exc:
                raise StartupError(f"API_KEYS_FILE: {exc}") from None
        self.server = grpc.aio.server(
            interceptors=interceptors or None,
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs or None,
            options=[
                ("grpc.max_receive_message_length", size),
                ("grpc.max_send_message_length", size),
                ("grpc.so_reuseport", 1 if reuse_port else 0),
                # long streams: accept client keepalive pings every 10 s, also between messages
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
                ("grpc.http2.max_ping_strikes", 0),
                # and ping idle clients: a connection that died silently ends its streams (and frees
                # their jobs for a resume) within about 30 s
                ("grpc.keepalive_time_ms", 20_000),
                ("grpc.keepalive_timeout_ms", 10_000),
            ])
        detection_pb2_grpc.add_DetectionServiceServicer_to_server(
            DetectionServicer(self.holder, max_batch_size=settings.max_batch_size,
                              max_rows_per_call=settings.max_rows_per_call,
                              on_batch=metrics.batch_done if metrics else None), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
            self.server)
        self.port = 0
        self._stopped = asyncio.Event()

    async def start(self) -> int:
        """Bind and start (health NOT_SERVING), then load the rules and report SERVING.

        A worker sharing the port loads the rules first: it joins the SO_REUSEPORT group only when
        it can serve, so the kernel never hands a new connection to a worker that is still loading.
        """
        await self._set_health(NOT_SERVING)
        if self.reuse_port:
            await self._load()
        address = f"{self.settings.api_host}:{self.settings.api_port}"
        try:
            if self.settings.tls_cert_file:
                creds = server_credentials(Path(self.settings.tls_cert_file), Path(self.settings.tls_key_file),
                                           Path(self.settings.tls_client_ca_file) if self.settings.tls_client_ca_file
                                           else None)
                self.port = self.server.add_secure_port(address, creds)
            else:
                self.port = self.server.add_insecure_port(address)
        except RuntimeError:  # grpcio >= 1.5x raises; older versions returned 0
            self.port = 0
        if self.port == 0:
            raise StartupError(f"could not bind {address} (API_HOST/API_PORT): the port is taken or the "
                               "address is not local")
        await self.server.start()
        if not self.reuse_port:
            await self._load()
        await self._set_health(SERVING)
        return self.port

    def build_engine(self) -> Engine:
        """An engine of the repository's newest versions (start-up and ReloadModels). The verdict
        cache is shared across reloads: it is keyed by version, so it never answers for an old one."""
        engine = Engine.from_repository(self.settings.model_path, None, self._cache)
        if self.metrics:
            self.metrics.instrument(engine)
        return engine

    async def _load(self) -> None:
        engine = await asyncio.to_thread(self.build_engine)
        self.holder.engine = engine
        if self.holder.store is None:
            self.holder.store = await asyncio.to_thread(open_job_store, self.settings)
        log.info("rules loaded from %s: %d field types", self.settings.model_path, len(engine.fields()))

    async def stop(self, grace: float | None = None) -> None:
        """Drain: report NOT_SERVING at once but keep serving for SHUTDOWN_DELAY seconds, so load
        balancers (Envoy's active health checks, Kubernetes endpoints) stop sending new calls first;
        then refuse new calls, close the port and give in-flight streams ``grace`` seconds."""
        await self.health.enter_graceful_shutdown()
        await asyncio.sleep(self.settings.shutdown_delay)
        self.holder.accepting = False
        await self.server.stop(self.settings.shutdown_grace if grace is None else grace)
        if self.holder.store is not None:
            self.holder.store.close()
        self._stopped.set()

    async def wait(self) -> None:
        await self.server.wait_for_termination()

    async def _set_health(self, status: int) -> None:
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)


def open_job_store(settings: Settings) -> JobStore:
    """Open (and migrate) the results database; jobs a crashed process left running become failed."""
    try:
        store = JobStore(settings.effective_database_url, Path(settings.data_path) / "results",
                         heartbeat_s=settings.job_heartbeat_s, takeover_after=settings.job_takeover_after_s)
    except Exception as exc:  # noqa: BLE001 - any driver error: say which setting to fix
        raise StartupError(f"cannot open the results database (DATABASE_URL/DATA_PATH): {exc}") from exc
    stale = store.mark_stale_running_failed(older_than=store.stale_after)
    if stale:
        log.warning("marked %d job(s) left running by a stopped server as failed", stale)
    return store


async def serve(settings: Settings, on_ready: Callable[[str], None] | None = None, *,
                on_metrics: Callable[[str], None] | None = None, worker: str | None = None) -> None:
    """Run until SIGTERM/SIGINT; ``on_ready`` gets ``host:port`` once rules are loaded.

    Alone (``worker`` None) the process serves its own /metrics on METRICS_PORT and ``on_metrics`` gets
    that ``host:port``. As worker ``worker`` of a supervisor (``workers.py``) it shares the port with its
    siblings, writes metrics for the supervisor to serve, and stops when the supervisor goes away.
    """
    loop = asyncio.get_running_loop()
    if settings.parallel_workers:
        loop.set_default_executor(ThreadPoolExecutor(settings.parallel_workers, thread_name_prefix="dqd-check"))
    metrics = Metrics.get(worker or "0") if settings.metrics_enabled else None
    if metrics and worker is None:
        try:
            _, metrics_port = serve_http(settings.api_host, settings.metrics_port)
        except OSError as exc:
            raise StartupError(f"cannot serve metrics on {settings.api_host}:{settings.metrics_port} "
                               f"(METRICS_PORT): {exc.strerror or exc}") from None
        if on_metrics:
            on_metrics(f"{settings.api_host}:{metrics_port}")
    server = DqdServer(settings, reuse_port=worker is not None, metrics=metrics)
    port = await server.start()
    stopping: list[asyncio.Task[None]] = []

    def stop(reason: str) -> None:
        if not stopping:  # a second signal does not start a second drain
            stopping.append(loop.create_task(_stop(server, reason)))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop, sig.name)
    orphan_watch = loop.create_task(_watch_parent(os.getppid(), stop)) if worker is not None else None
    if on_ready:
        on_ready(f"{settings.api_host}:{port}")
    await server.wait()
    for task in stopping:
        await task
    if orphan_watch:
        orphan_watch.cancel()


async def _stop(server: DqdServer, reason: str) -> None:
    log.info("received %s: draining for up to %.0fs", reason, server.settings.shutdown_grace)
    await server.stop()


async def _watch_parent(parent: int, stop: Callable[[str], None]) -> None:
    """A worker whose supervisor died (SIGKILL, crash) drains and exits instead of serving on alone."""
    while os.getppid() == parent:
        await asyncio.sleep(1.0)
    log.warning("supervisor (pid %d) is gone", parent)
    stop("supervisor exit")
