"""Fixtures of the client tests: the client sources on sys.path, real dqd servers and their metrics.

Every client test talks to a real ``dqd serve`` process on a loopback port (``ServerProcess``):

* ``server`` (tests/conftest.py, session): the plain server every suite shares;
* ``secure_server`` (here, session, started on first use): TLS with a throwaway CA and
  ``API_KEY_REQUIRED`` with the key ``API_KEY``;
* ``small_server`` (test_client_detect.py, module): a small ``MAX_FILE_SIZE``.

Helpers (metrics, polling, constants) are in client_support.py. The only in-process server is the
double in misbehaving_server.py, for what a real server cannot be made to do: break the Detect
protocol (the ProtocolError tests) and enforce gRPC's default keepalive ping policy.
"""
from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
CLIENT_SRC = HERE.parents[1] / "clients" / "python"
for _path in (CLIENT_SRC, HERE):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from client_support import API_KEY, detect_in_flight, wait_for
from dqd_client import Client

from dqd_server.auth import hash_key
from dqd_server.launcher import ServerProcess


@pytest.fixture()
def client(server: ServerProcess) -> Iterator[Client]:
    """A client of the shared real server."""
    with Client(server.target, timeout=30) as c:
        yield c


@pytest.fixture()
def quiet_detect(server: ServerProcess) -> ServerProcess:
    """The shared server once no Detect stream of an earlier test is still open on it."""
    wait_for(lambda: detect_in_flight(server) == 0, "earlier Detect streams to end")
    return server


@pytest.fixture(scope="session")
def certs(tls_files: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared test CA and server certificate (SAN dqd.test, 127.0.0.1), plus a keys file."""
    d = tmp_path_factory.mktemp("certs")
    for name in ("ca.pem", "server.pem", "server.key"):
        shutil.copy(tls_files / name, d / name)
    (d / "keys.txt").write_text(f"# the client tests\n{hash_key(API_KEY)}\n")
    return d


@pytest.fixture(scope="session")
def secure_server(certs: Path) -> Iterator[ServerProcess]:
    """A real server speaking TLS only, requiring the x-api-key API_KEY on every call but health."""
    env = {"API_KEY_REQUIRED": "true", "API_KEYS_FILE": str(certs / "keys.txt"),
           "TLS_CERT_FILE": str(certs / "server.pem"), "TLS_KEY_FILE": str(certs / "server.key"),
           "LOG_LEVEL": "WARNING", "SHUTDOWN_DELAY": "0"}
    with ServerProcess(env=env) as srv:
        yield srv
        assert srv.alive(), "the secure server died during the tests:\n" + "".join(srv.output[-60:])
