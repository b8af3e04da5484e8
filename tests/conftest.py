"""Shared fixtures: a real ``dqd serve`` process on a free loopback port."""
from __future__ import annotations

import os
from collections.abc import Iterator

import grpc
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from dqd_server._proto import detection_pb2_grpc  # noqa: E402
from dqd_server.launcher import ServerProcess  # noqa: E402


@pytest.fixture(scope="session")
def server() -> Iterator[ServerProcess]:
    with ServerProcess(env={"MAX_FILE_SIZE": "8MB", "LOG_LEVEL": "WARNING"}) as srv:
        yield srv
        assert srv.alive(), "the server died during the tests:\n" + "".join(srv.output[-60:])


@pytest.fixture(scope="session")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    opts = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]
    with grpc.insecure_channel(server.target, options=opts) as ch:
        yield ch


@pytest.fixture(scope="session")
def stub(channel: grpc.Channel) -> detection_pb2_grpc.DetectionServiceStub:
    return detection_pb2_grpc.DetectionServiceStub(channel)
