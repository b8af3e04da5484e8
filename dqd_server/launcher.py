"""Start a real ``dqd serve`` process on a free loopback port (for the demo, tests and benchmarks)."""
from __future__ import annotations

import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from types import TracebackType

READY_PREFIX = "dqd listening on "
METRICS_PREFIX = "dqd metrics on "


class ServerProcess:
    """``with ServerProcess() as srv: srv.target`` — a server subprocess, stopped on exit."""

    def __init__(self, *, env: Mapping[str, str] | None = None, args: tuple[str, ...] = (),
                 port: int | None = 0, metrics_port: int | None = 0, startup_timeout: float = 60.0) -> None:
        """``port=None`` leaves the port to API_PORT in ``env``; the default 0 picks a free one.
        ``metrics_port`` likewise for the Prometheus endpoint (METRICS_PORT); read it back as ``metrics_port``
        (0 while metrics are off). Without DATA_PATH in ``env`` the server gets a temporary one."""
        self.env = {**os.environ, **(env or {})}
        self._data_dir: tempfile.TemporaryDirectory[str] | None = None
        if "DATA_PATH" not in (env or {}):
            self._data_dir = tempfile.TemporaryDirectory(prefix="dqd-data-")
            self.env["DATA_PATH"] = self._data_dir.name
        self.args = args if port is None else ("--port", str(port), *args)
        if metrics_port is not None:
            self.args = ("--metrics-port", str(metrics_port), *self.args)
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.metrics_port = 0
        self.output: list[str] = []

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def data_path(self) -> str:
        return self.env["DATA_PATH"]

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self) -> "ServerProcess":
        cmd = [sys.executable, "-m", "dqd_server", "serve", "--host", "127.0.0.1", *self.args]
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1)
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, args=(lines,), daemon=True).start()
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if line is None:
                break
            if line.startswith(METRICS_PREFIX):
                self.metrics_port = int(line.rsplit(":", 1)[1].split("/", 1)[0])
            if line.startswith(READY_PREFIX):
                self.port = int(line[len(READY_PREFIX):].rsplit(":", 1)[1])
                return self
        self.stop()
        raise RuntimeError("dqd serve did not become ready:\n" + "".join(self.output[-40:]))

    def _pump(self, lines: "queue.Queue[str | None]") -> None:
        assert self.proc and self.proc.stdout
        for line in self.proc.stdout:
            self.output.append(line)
            lines.put(line.strip())
        lines.put(None)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc: tuple[type[BaseException], BaseException, TracebackType] | None) -> None:
        self.stop()
        if self._data_dir is not None:
            self._data_dir.cleanup()
