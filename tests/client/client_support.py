"""Helpers of the client tests: reading a real server's Prometheus metrics, polling, test constants."""
from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dqd_server.launcher import ServerProcess

SERVER_NAME = "dqd.test"  # the name in the test server certificate (with IP 127.0.0.1)
API_KEY = "k-client-tests-7d41"  # the one key the secure server accepts
DETECT_RPC = "dqd.v1.DetectionService/Detect"


def metric(srv: ServerProcess, name: str, **labels: str) -> float:
    """One sample of the server's Prometheus endpoint (0.0 when that label set has none yet)."""
    with urllib.request.urlopen(srv.metrics_url, timeout=10) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def detect_cancelled(srv: ServerProcess) -> float:
    """Detect calls the server has ended as CANCELLED."""
    return metric(srv, "dqd_requests_total", rpc=DETECT_RPC, code="CANCELLED")


def detect_in_flight(srv: ServerProcess) -> float:
    """Detect streams open on the server now."""
    return metric(srv, "dqd_streams_in_flight", rpc=DETECT_RPC)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)
