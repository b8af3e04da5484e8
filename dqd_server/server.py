"""Builds the grpc.aio server: DetectionService, standard health, reflection, graceful shutdown."""
from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ._proto import detection_pb2, detection_pb2_grpc
from .config import Settings
from .engine import Engine
from .servicers.detection import DetectionServicer, EngineHolder

log = logging.getLogger("dqd.server")
SERVICE_NAME = detection_pb2.DESCRIPTOR.services_by_name["DetectionService"].full_name
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVING = health_pb2.HealthCheckResponse.SERVING


class DqdServer:
    """One dqd server process: start, load rules, serve until stopped."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.holder = EngineHolder()
        self.health = health.aio.HealthServicer()
        size = settings.max_file_size
        self.server = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", size),
            ("grpc.max_send_message_length", size),
            ("grpc.so_reuseport", 0),
        ])
        detection_pb2_grpc.add_DetectionServiceServicer_to_server(
            DetectionServicer(self.holder, max_batch_rows=settings.max_batch_rows,
                              max_rows_per_call=settings.max_rows_per_call), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
            self.server)
        self.port = 0
        self._stopped = asyncio.Event()

    async def start(self) -> int:
        """Bind and start (health NOT_SERVING), then load the rules and report SERVING."""
        await self._set_health(NOT_SERVING)
        address = f"{self.settings.api_host}:{self.settings.api_port}"
        self.port = self.server.add_insecure_port(address)
        if self.port == 0:
            raise RuntimeError(f"could not bind {address}")
        await self.server.start()
        engine = await asyncio.to_thread(Engine.from_repository, self.settings.model_path)
        self.holder.engine = engine
        await self._set_health(SERVING)
        log.info("rules loaded from %s: %d field types", self.settings.model_path, len(engine.fields()))
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        """Drain: NOT_SERVING and refuse new work at once, let load balancers notice for
        SHUTDOWN_DELAY seconds, then close the port and give in-flight streams ``grace`` seconds."""
        self.holder.accepting = False
        await self.health.enter_graceful_shutdown()
        await asyncio.sleep(self.settings.shutdown_delay)
        await self.server.stop(self.settings.shutdown_grace if grace is None else grace)
        self._stopped.set()

    async def wait(self) -> None:
        await self.server.wait_for_termination()

    async def _set_health(self, status: int) -> None:
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)


async def serve(settings: Settings, on_ready: Callable[[str], None] | None = None) -> None:
    """Run until SIGTERM/SIGINT; ``on_ready`` gets ``host:port`` once rules are loaded."""
    server = DqdServer(settings)
    port = await server.start()
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda s=sig: stopping.append(loop.create_task(_stop(server, s))))
    if on_ready:
        on_ready(f"{settings.api_host}:{port}")
    await server.wait()
    for task in stopping:
        await task


async def _stop(server: DqdServer, sig: signal.Signals) -> None:
    log.info("received %s: draining for up to %.0fs", sig.name, server.settings.shutdown_grace)
    await server.stop()
