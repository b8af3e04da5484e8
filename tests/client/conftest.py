"""Fixtures of the client tests: the client sources on sys.path and an in-process fake dqd server."""
from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
CLIENT_SRC = HERE.parents[1] / "clients" / "python"
for _path in (CLIENT_SRC, HERE):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from fake_dqd_server import FakeServer, start_fake_server  # noqa: E402


@pytest.fixture()
def fake_server() -> Iterator[FakeServer]:
    """An in-process fake dqd server (Detect, DetectRows, ListFields, health) on a free port."""
    server, fake = start_fake_server()
    try:
        yield fake
    finally:
        server.stop(grace=None)
