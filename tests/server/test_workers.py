"""API_WORKERS=2: one port, two processes, one /metrics for both, restarts, SIGTERM -> exit 0."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import signal
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dqd_server._proto import detection_pb2_grpc
from dqd_server.config import Settings
from dqd_server.launcher import ServerProcess
from dqd_server.workers import RestartBudget, Supervisor
from test_detect_stream import CONFIG, batch_req, catalog_batch  # tests/server is on sys.path (rootdir mode)

DETECT = "dqd.v1.DetectionService/Detect"
CALLS, ROWS = 20, 200


def metrics(srv: ServerProcess) -> list[tuple[str, dict[str, str], float]]:
    with urllib.request.urlopen(srv.metrics_url, timeout=10) as resp:
        text = resp.read().decode()
    return [(s.name, s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples]


def one(samples: list, name: str, **labels: str) -> float:  # noqa: ANN001
    return sum(v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items()))


def worker_pids(samples: list) -> dict[str, int]:  # noqa: ANN001
    return {lab["worker"]: int(lab["pid"]) for n, lab, _ in samples if n == "dqd_worker_info"}


def detect_on_own_connection(target: str) -> int:
    # a private subchannel pool: every call gets its own TCP connection, which SO_REUSEPORT balances
    with grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
        stub = detection_pb2_grpc.DetectionServiceStub(ch)
        responses = list(stub.Detect(iter([CONFIG, batch_req(catalog_batch(ROWS, bad_every=20))]), timeout=30))
        return responses[-1].summary.rows


def test_two_workers_share_the_port_and_one_scrape_shows_both() -> None:
    env = {"API_WORKERS": "2", "LOG_LEVEL": "INFO", "SHUTDOWN_DELAY": "0.2", "SHUTDOWN_GRACE": "5"}
    with ServerProcess(env=env) as srv:
        pids = worker_pids(metrics(srv))
        assert set(pids) == {"0", "1"} and len(set(pids.values())) == 2
        for pid in pids.values():  # the workers are the supervisor's children
            assert int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1]) == srv.proc.pid

        with ThreadPoolExecutor(CALLS) as pool:
            assert list(pool.map(detect_on_own_connection, [srv.target] * CALLS)) == [ROWS] * CALLS
        m = metrics(srv)
        assert one(m, "dqd_requests_total", rpc=DETECT, code="OK") == CALLS
        assert one(m, "dqd_records_processed_total") == CALLS * ROWS
        assert one(m, "detection_errors_total", field="material") == CALLS * ROWS // 20
        assert one(m, "dqd_streams_in_flight", rpc=DETECT) == 0
        assert one(m, "dqd_workers") == 2
        assert {lab["worker"] for n, lab, _ in m if n == "process_cpu_seconds_total"} == {"supervisor", "0", "1"}
        # both workers served streams (20 connections all hashed to one worker: p = 2**-19)
        served = [json.loads(line) for line in srv.output if '"dqd.detect"' in line and "done" in line]
        assert len(served) == CALLS and {entry["worker"] for entry in served} == {0, 1}

        # a worker that dies is restarted; what it counted stays in the sums
        os.kill(pids["0"], signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(
                re.search(r'"worker 0 \(pid (?!%d\))\d+\) ready"' % pids["0"], line) for line in srv.output):
            time.sleep(0.05)
        m = metrics(srv)
        assert one(m, "dqd_worker_restarts_total") == 1
        new = worker_pids(m)
        assert new["1"] == pids["1"] and new["0"] != pids["0"]
        assert one(m, "dqd_requests_total", rpc=DETECT, code="OK") == CALLS
        assert detect_on_own_connection(srv.target) == ROWS
        assert any("exited unexpectedly" in line and '"role": "supervisor"' in line for line in srv.output)

        assert srv.stop() == 0
        for pid in new.values():  # the workers drained and exited with it
            assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
        assert any('"worker": 1' in line and "received SIGTERM" in line for line in srv.output)


# --- the supervisor with fake workers (fast, in process) ----------------------------------------------

def fake_worker(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def settings() -> Settings:
    return dataclasses.replace(Settings(), api_host="127.0.0.1", api_port=0, api_workers=2, metrics_enabled=False,
                               shutdown_delay=0, shutdown_grace=1)


def test_supervisor_gives_up_after_too_many_restarts() -> None:
    crashing = fake_worker("import time; print('dqd listening on x', flush=True); time.sleep(0.05); "
                           "raise SystemExit(3)")
    sup = Supervisor(settings(), budget=RestartBudget(limit=3, window=60), command=crashing)
    ready: list[str] = []
    assert asyncio.run(sup.run(ready.append)) == 1
    assert ready and sup.restarts == 3 and sup.failed


def test_supervisor_fails_fast_when_a_worker_cannot_start() -> None:
    sup = Supervisor(settings(), command=fake_worker("raise SystemExit(2)"))
    ready: list[str] = []
    started = time.monotonic()
    assert asyncio.run(sup.run(ready.append)) == 1
    assert not ready and sup.restarts == 0 and time.monotonic() - started < 10


def test_restart_budget_is_a_sliding_window() -> None:
    now = [0.0]
    budget = RestartBudget(limit=5, window=60, clock=lambda: now[0])
    assert all(budget.allow() for _ in range(5))
    assert not budget.allow()
    now[0] = 59.9
    assert not budget.allow()
    now[0] = 60.0  # the first restarts left the window
    assert budget.allow()


def test_single_worker_keeps_reuseport_off() -> None:
    """API_WORKERS=1: a second server on a taken port is an error, not a silent sibling."""
    with ServerProcess(env={"LOG_LEVEL": "WARNING"}) as first:
        with pytest.raises(RuntimeError, match=re.escape(f"could not bind 127.0.0.1:{first.port}")):
            ServerProcess(port=first.port, startup_timeout=20).start()
