"""Shared fixtures: a real ``dqd serve`` process on a free loopback port; throwaway PostgreSQL databases."""
from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
import pytest
import sqlalchemy as sa

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


# The server owning the throwaway databases; the URL's database is only used to CREATE/DROP them.
PG_ADMIN_URL = os.environ.get("DQD_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def _admin_connect() -> psycopg.Connection:
    u = sa.make_url(PG_ADMIN_URL)
    return psycopg.connect(host=u.host, port=u.port or 5432, user=u.username, password=u.password,
                           dbname=u.database or "postgres", autocommit=True, connect_timeout=3)


class PgServer:
    """Creates databases named dqd_test_<random> on the test server and drops them at the end."""

    def __init__(self, admin: psycopg.Connection) -> None:
        self.admin = admin
        self.created: list[str] = []

    def new_database(self) -> str:
        name = f"dqd_test_{uuid.uuid4().hex[:12]}"
        self.admin.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return sa.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        for name in self.created:
            self.admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    try:
        admin = _admin_connect()
    except psycopg.OperationalError as exc:
        reason = f"PostgreSQL at {PG_ADMIN_URL} is unreachable ({str(exc).strip()[:200]})"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI is set, so the PostgreSQL tests must run", pytrace=False)
        pytest.skip(f"{reason}; start it or set DQD_TEST_PG_URL (with CI set this fails instead)")
    server = PgServer(admin)
    try:
        yield server
    finally:
        server.drop_all()
        admin.close()


TLS_SERVER_NAME = "dqd.test"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway CA (ca.pem) and a server certificate (server.pem/.key) for dqd.test and 127.0.0.1."""
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is needed to make test certificates")
    d = tmp_path_factory.mktemp("tls")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")  # quicker to make than RSA keys
    _openssl("req", "-x509", *ec, "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=dqd test CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    _openssl("req", *ec, "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", f"/CN={TLS_SERVER_NAME}",
             cwd=d)
    (d / "ext.cnf").write_text(f"subjectAltName=DNS:{TLS_SERVER_NAME},IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf", cwd=d)
    return d
