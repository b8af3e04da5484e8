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
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
CLIENT_SRC = HERE.parents[1] / "clients" / "python"
for _path in (CLIENT_SRC, HERE):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from client_support import API_KEY, SERVER_NAME, detect_in_flight, wait_for
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


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway CA (ca.pem), a server certificate for SERVER_NAME and 127.0.0.1, a keys file."""
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is needed to make test certificates")
    d = tmp_path_factory.mktemp("certs")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")  # quicker to make than RSA keys
    _openssl("req", "-x509", *ec, "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
             "-days", "2", "-subj", "/CN=dqd client test CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    _openssl("req", *ec, "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", f"/CN={SERVER_NAME}", cwd=d)
    (d / "ext.cnf").write_text(f"subjectAltName=DNS:{SERVER_NAME},IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf", cwd=d)
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
