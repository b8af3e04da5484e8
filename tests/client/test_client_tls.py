"""TLS channels and the API key against an in-process TLS fake server (certificates made by openssl)."""
from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

import dqd_client
from dqd_client._cli import main
from fake_dqd_server import FakeServicer, start_fake_server

SERVER_NAME = "dqd.test"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make test certificates")
    d = tmp_path_factory.mktemp("certs")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
             "-days", "2", "-subj", "/CN=dqd test CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", f"/CN={SERVER_NAME}", cwd=d)
    (d / "ext.cnf").write_text(f"subjectAltName=DNS:{SERVER_NAME}\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf", cwd=d)
    return d


@pytest.fixture()
def tls_server(certs: Path) -> Iterator[tuple[str, FakeServicer]]:
    creds = grpc.ssl_server_credentials([((certs / "server.key").read_bytes(), (certs / "server.pem").read_bytes())])
    server, fake = start_fake_server(creds)
    try:
        yield fake.target, fake.servicer
    finally:
        server.stop(grace=None)


def test_tls_with_ca_path_and_bytes(tls_server, certs: Path) -> None:
    target, servicer = tls_server
    ca = certs / "ca.pem"
    for roots in (str(ca), ca, ca.read_bytes()):
        with dqd_client.Client(target, root_certificates=roots, server_name_override=SERVER_NAME,
                               api_key="tls-key", timeout=10) as client:
            assert client.health() == "SERVING"
            assert [f.name for f in client.list_fields()] == ["material"]
    assert servicer.metadata and all(md["x-api-key"] == "tls-key" for md in servicer.metadata)


def test_tls_wrong_name_or_plaintext_fails(tls_server, certs: Path) -> None:
    target, _ = tls_server
    with dqd_client.Client(target, root_certificates=certs / "ca.pem", server_name_override="other.name",
                           timeout=5) as client:
        with pytest.raises(dqd_client.Unavailable):
            client.list_fields()
    with dqd_client.Client(target, timeout=5) as client:  # plaintext to a TLS port
        with pytest.raises(dqd_client.RpcError):
            client.list_fields()


def test_cli_tls(tls_server, certs: Path, capsys) -> None:
    target, _ = tls_server
    code = main(["health", "--target", target, "--ca", str(certs / "ca.pem"), "--server-name", SERVER_NAME])
    assert code == 0, capsys.readouterr().err
    assert capsys.readouterr().out.strip() == "SERVING"
