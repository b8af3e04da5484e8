"""In-process defence: API keys (hashed, constant-time), TLS, concurrency limit — on a real server."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dqd_server._proto import detection_pb2 as pb
from dqd_server._proto import detection_pb2_grpc
from dqd_server.auth import ApiKeyInterceptor, hash_key, load_key_hashes
from dqd_server.launcher import ServerProcess

SERVER_NAME = "dqd.test"
KEY = "k-3f9a2c1e"
ROWS = pb.DetectRowsRequest(columns={"material": "material"}, rows=[pb.Row(cells={"material": "100% Cotton"})])


@pytest.fixture(scope="module")
def certs(tls_files: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared test CA and server certificate, plus this module's keys file."""
    d = tmp_path_factory.mktemp("security")
    for name in ("ca.pem", "server.pem", "server.key"):
        shutil.copy(tls_files / name, d / name)
    (d / "keys.txt").write_text(f"# clients\nshop-a {hash_key(KEY)}\n{hash_key('other')}\n")
    return d


@pytest.fixture(scope="module")
def secure_server(certs: Path) -> Iterator[ServerProcess]:
    env = {"API_KEY_REQUIRED": "true", "API_KEYS_FILE": str(certs / "keys.txt"),
           "TLS_CERT_FILE": str(certs / "server.pem"), "TLS_KEY_FILE": str(certs / "server.key"),
           "LOG_LEVEL": "WARNING"}
    with ServerProcess(env=env) as srv:
        yield srv


def tls_channel(srv: ServerProcess, certs: Path) -> grpc.Channel:
    creds = grpc.ssl_channel_credentials((certs / "ca.pem").read_bytes())
    return grpc.secure_channel(srv.target, creds, options=[("grpc.ssl_target_name_override", SERVER_NAME)])


def test_key_required_over_tls(secure_server: ServerProcess, certs: Path) -> None:
    with tls_channel(secure_server, certs) as ch:
        stub = detection_pb2_grpc.DetectionServiceStub(ch)
        for metadata, reason in [((), "missing x-api-key"), ((("x-api-key", "wrong"),), "not valid")]:
            with pytest.raises(grpc.RpcError) as info:
                stub.DetectRows(ROWS, metadata=metadata, timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED and reason in info.value.details()
        with pytest.raises(grpc.RpcError) as info:  # streams are refused before any message is read
            list(stub.Detect(iter([pb.DetectRequest(config=pb.DetectConfig(columns={"m": "material"}))]),
                             timeout=10))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert stub.DetectRows(ROWS, metadata=(("x-api-key", KEY),), timeout=10).summary.rows == 1
        assert stub.DetectRows(ROWS, metadata=(("x-api-key", "other"),), timeout=10).summary.rows == 1
        # probes need no key
        health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_plaintext_client_cannot_talk_to_tls_port(secure_server: ServerProcess) -> None:
    with grpc.insecure_channel(secure_server.target) as ch:
        with pytest.raises(grpc.RpcError) as info:
            health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_grpcurl_through_tls_with_key(secure_server: ServerProcess, certs: Path) -> None:
    from test_grpcurl import GRPCURL, MATERIAL_CALL

    base = [GRPCURL, "-cacert", str(certs / "ca.pem"), "-servername", SERVER_NAME]
    ok = subprocess.run([*base, "-H", f"x-api-key: {KEY}", "-d", MATERIAL_CALL, secure_server.target,
                         "dqd.v1.DetectionService/DetectRows"], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    assert '"row": "1"' in ok.stdout
    refused = subprocess.run([*base, "-d", MATERIAL_CALL, secure_server.target, "dqd.v1.DetectionService/DetectRows"],
                             capture_output=True, text=True, timeout=30)
    assert refused.returncode != 0 and "Unauthenticated" in refused.stderr


def test_keys_file_errors_and_constant_time_check(tmp_path: Path) -> None:
    bad = tmp_path / "keys.txt"
    bad.write_text("plain-text-key\n")
    with pytest.raises(ValueError, match=r"keys.txt:1: expected '\[name\] sha256:<64 hex digits>'"):
        load_key_hashes(bad)
    bad.write_text("# nothing\n")
    with pytest.raises(ValueError, match="holds no keys"):
        load_key_hashes(bad)
    good = tmp_path / "good.txt"
    good.write_text(hash_key("a") + "\n" + hash_key("b") + "\n")
    check = ApiKeyInterceptor(load_key_hashes(good))
    assert check.valid("a") and check.valid("b") and not check.valid("c") and not check.valid("") and not check.valid(None)


def test_misconfiguration_stops_start_up(tmp_path: Path) -> None:
    for env, needle in [({"API_KEY_REQUIRED": "true"}, "needs API_KEYS_FILE"),
                        ({"TLS_CERT_FILE": str(tmp_path)}, "TLS_CERT_FILE and TLS_KEY_FILE go together")]:
        out = subprocess.run([sys.executable, "-m", "dqd_server", "serve", "--port", "0"],
                             env={**os.environ, **env}, capture_output=True, text=True, timeout=30)
        assert out.returncode == 2 and needle in out.stderr
