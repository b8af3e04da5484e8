"""``API_WORKERS=N dqd serve``: a supervisor and N server processes sharing one port.

The supervisor

* reserves the port (an unlistened SO_REUSEPORT socket, so API_PORT=0 resolves to one free port
  that no one else can take, and a port already used without SO_REUSEPORT fails at once);
* makes an empty ``PROMETHEUS_MULTIPROC_DIR`` and serves /metrics from it on METRICS_PORT (see
  ``metrics.py``): one scrape shows every worker;
* starts N workers, each ``python -m dqd_server serve`` with the supervisor's settings in its
  environment and ``DQD_WORKER_ID`` set; each binds HOST:PORT with ``grpc.so_reuseport=1`` and the
  kernel spreads *connections* over them (one channel stays on one worker);
* prints ``dqd listening on HOST:PORT`` only when every worker is ready;
* on SIGTERM/SIGINT sends SIGTERM to every worker (each drains as a single server does) and exits
  0 once they all exited cleanly;
* restarts a worker that dies unexpectedly, at most ``max_restarts`` times in ``window`` seconds
  (default 5 in 60 s); past that it stops the others and exits 1.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from .config import Settings
from .server import StartupError

log = logging.getLogger("dqd.supervisor")

WORKER_ENV = "DQD_WORKER_ID"  # internal: set by the supervisor, makes ``dqd serve`` run as that worker
READY_PREFIX = "dqd listening on "


class RestartBudget:
    """At most ``limit`` restarts within any ``window`` seconds."""

    def __init__(self, limit: int = 5, window: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window, self.clock = limit, window, clock
        self._times: deque[float] = deque()

    def allow(self) -> bool:
        """Spend one restart if the budget has one left; False means give up."""
        now = self.clock()
        while self._times and now - self._times[0] >= self.window:
            self._times.popleft()
        if len(self._times) >= self.limit:
            return False
        self._times.append(now)
        return True


@dataclass
class Worker:
    index: int
    proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc and self.proc.returncode is None else None


def reserve_port(host: str, port: int) -> tuple[socket.socket, int]:
    """Bind (not listen) an SO_REUSEPORT socket on host:port; with port 0 the kernel picks a free one.

    Held open while the supervisor runs, it keeps the port for the workers (which join with
    SO_REUSEPORT) without ever accepting a connection itself.
    """
    addr = host.strip("[]") or "0.0.0.0"
    try:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM,
                                                              flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise StartupError(f"cannot bind {host}:{port} (API_HOST): {exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot bind {host}:{port} (API_HOST/API_PORT): {exc.strerror or exc}") from None
    return sock, sock.getsockname()[1]


class Supervisor:
    def __init__(self, settings: Settings, *, budget: RestartBudget | None = None,
                 startup_timeout: float = 120.0, command: Sequence[str] | None = None) -> None:
        """``command`` runs one worker (default ``python -m dqd_server serve``; tests pass a fake)."""
        self.settings = settings
        self.command = list(command or (sys.executable, "-m", "dqd_server", "serve"))
        self.budget = budget or RestartBudget()
        self.startup_timeout = startup_timeout
        self.workers = [Worker(i) for i in range(settings.api_workers)]
        self.port = 0
        self.restarts = 0
        self.stopping = False
        self.failed = False
        self._metrics_dir: str | None = None
        self._kill_timer: asyncio.TimerHandle | None = None
        self._drains: set[asyncio.Task[None]] = set()

    # --- life cycle -----------------------------------------------------------------------------------

    async def run(self, on_ready: Callable[[str], None] | None = None,
                  on_metrics: Callable[[str], None] | None = None) -> int:
        """Serve until a signal (exit status 0 when every worker drained cleanly) or give up (1)."""
        loop = asyncio.get_running_loop()
        held, self.port = reserve_port(self.settings.api_host, self.settings.api_port)
        httpd = None
        try:
            if self.settings.metrics_enabled:
                httpd = self._serve_metrics(on_metrics)
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop, sig.name)
            started = await asyncio.gather(*(self._start(w) for w in self.workers))
            if not all(started):
                if not self.stopping:
                    log.error("a worker failed to start; stopping")
                    self.failed = True
                    self.stop("start-up failure")
            elif not self.stopping and on_ready:
                on_ready(f"{self.settings.api_host}:{self.port}")
            await asyncio.gather(*(self._keep(w) for w in self.workers))
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            if self._kill_timer:
                self._kill_timer.cancel()
            if httpd is not None:
                await asyncio.to_thread(httpd.shutdown)
            if self._metrics_dir:
                shutil.rmtree(self._metrics_dir, ignore_errors=True)
            held.close()
        log.info("all workers exited%s", " after a failure" if self.failed else "")
        return 1 if self.failed else 0

    def stop(self, reason: str) -> None:
        """Forward the stop to every worker (once); kill what has not drained in time."""
        if self.stopping:
            return
        self.stopping = True
        log.info("%s: stopping %d workers", reason, len(self.workers))
        for w in self.workers:
            _signal(w.proc, signal.SIGTERM)
        patience = self.settings.shutdown_delay + self.settings.shutdown_grace + 10
        self._kill_timer = asyncio.get_running_loop().call_later(patience, self._kill_all)

    def _kill_all(self) -> None:
        for w in self.workers:
            if w.pid:
                log.error("worker %d (pid %d) did not drain in time; killing it", w.index, w.pid)
                self.failed = True
                _signal(w.proc, signal.SIGKILL)

    # --- one worker -----------------------------------------------------------------------------------

    async def _start(self, w: Worker) -> bool:
        """Spawn worker ``w`` and wait for its ready line; False if it exited or hung first."""
        env = {**os.environ, **self.settings.to_env(), "API_PORT": str(self.port), WORKER_ENV: str(w.index)}
        if self._metrics_dir:
            env["PROMETHEUS_MULTIPROC_DIR"] = self._metrics_dir
        w.proc = await asyncio.create_subprocess_exec(
            *self.command, env=env, stdout=asyncio.subprocess.PIPE,
            start_new_session=True)  # terminal ^C reaches the supervisor only; it forwards SIGTERM
        if self.stopping:  # a signal came while it was being spawned
            _signal(w.proc, signal.SIGTERM)
        assert w.proc.stdout is not None
        try:
            ready = await asyncio.wait_for(_until_ready(w.proc.stdout), self.startup_timeout)
        except asyncio.TimeoutError:
            log.error("worker %d (pid %d) not ready after %.0fs; killing it", w.index, w.proc.pid,
                      self.startup_timeout)
            _signal(w.proc, signal.SIGKILL)
            return False
        if ready:
            log.info("worker %d (pid %d) ready", w.index, w.proc.pid)
            task = asyncio.get_running_loop().create_task(_drain(w.proc.stdout))
            self._drains.add(task)
            task.add_done_callback(self._drains.discard)
        return ready

    async def _keep(self, w: Worker) -> None:
        """Wait for worker ``w`` to exit; restart it while the service runs and the budget allows."""
        while w.proc is not None:
            code = await w.proc.wait()
            if self._metrics_dir:
                from .metrics import mark_worker_dead

                mark_worker_dead(w.proc.pid, self._metrics_dir)
            if self.stopping:
                if code not in (0, -signal.SIGTERM):  # -SIGTERM: stopped before it set up its handler
                    log.error("worker %d (pid %d) exited with status %s while stopping", w.index, w.proc.pid, code)
                    self.failed = True
                return
            log.error("worker %d (pid %d) exited unexpectedly with status %s", w.index, w.proc.pid, code)
            if not self.budget.allow():
                log.critical("worker %d: more than %d restarts in %.0fs; giving up", w.index, self.budget.limit,
                             self.budget.window)
                self.failed = True
                self.stop("restart limit")
                return
            self.restarts += 1
            log.warning("restarting worker %d (restart %d)", w.index, self.restarts)
            await self._start(w)  # if it dies before ready, the next wait() sees it

    # --- metrics ------------------------------------------------------------------------------------

    def _serve_metrics(self, on_metrics: Callable[[str], None] | None) -> object:
        from .metrics import multiprocess_registry, serve_http

        self._metrics_dir = tempfile.mkdtemp(prefix="dqd-metrics-")
        registry = multiprocess_registry(self._metrics_dir, self.processes, extra=[_SupervisorCollector(self)])
        try:
            httpd, port = serve_http(self.settings.api_host, self.settings.metrics_port, registry)
        except OSError as exc:
            raise StartupError(f"cannot serve metrics on {self.settings.api_host}:{self.settings.metrics_port} "
                               f"(METRICS_PORT): {exc.strerror or exc}") from None
        if on_metrics:
            on_metrics(f"{self.settings.api_host}:{port}")
        return httpd

    def processes(self) -> dict[str, int]:
        """``worker`` label -> pid of every live process, the supervisor included."""
        live = {"supervisor": os.getpid()}
        live.update({str(w.index): w.pid for w in self.workers if w.pid})
        return live


class _SupervisorCollector:
    """``dqd_worker_restarts_total`` and ``dqd_workers`` (live worker processes), from the supervisor."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    def collect(self) -> Iterable[object]:
        from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily

        sup = self.supervisor
        yield CounterMetricFamily("dqd_worker_restarts", "Workers restarted after an unexpected exit.",
                                  value=sup.restarts)
        yield GaugeMetricFamily("dqd_workers", "Live worker processes.", value=sum(1 for w in sup.workers if w.pid))


async def _until_ready(stream: asyncio.StreamReader) -> bool:
    """Read a worker's stdout up to its ready line (True) or its end (False: it exited first)."""
    while line := (await stream.readline()).decode(errors="replace"):
        if line.startswith(READY_PREFIX):
            return True
        sys.stdout.write(line)
    return False


async def _drain(stream: asyncio.StreamReader) -> None:
    """Pass on whatever a worker prints after its ready line (it should print nothing)."""
    while line := await stream.readline():
        sys.stdout.write(line.decode(errors="replace"))


def _signal(proc: asyncio.subprocess.Process | None, sig: signal.Signals) -> None:
    if proc is not None and proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)


def run_supervisor(settings: Settings, on_ready: Callable[[str], None] | None = None,
                   on_metrics: Callable[[str], None] | None = None) -> int:
    """``dqd serve`` with API_WORKERS > 1: the exit status of the supervisor."""
    return asyncio.run(Supervisor(settings).run(on_ready, on_metrics))
