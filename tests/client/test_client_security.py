"""TLS and API keys: the client and CLI against a real server with TLS and API_KEY_REQUIRED (openssl certificates)."""
from __future__ import annotations

from pathlib import Path

import dqd_client
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from client_support import API_KEY, SERVER_NAME
from dqd_client import Client, findings_table
from dqd_client._cli import main

from dqd_server.launcher import ServerProcess

MATERIAL = {"material": "material"}
NYLONN = "78% Viscose - 22% Nylonn"


def _use_every_rpc(client: Client) -> None:
    """ListFields, DetectRows, Detect and GetJob, each of which needs the API key."""
    assert "material" in {f.name for f in client.list_fields()}
    findings, _ = client.detect_rows([{"material": NYLONN}], MATERIAL)
    assert [(f.row, f.code) for f in findings] == [(0, "NEAR_MISS")]
    stream = client.detect([pa.record_batch({"material": ["100% Cotton", NYLONN]})], MATERIAL)
    assert findings_table(stream).column("row").to_pylist() == [1]
    with pytest.raises(dqd_client.NotFound, match="no job with id 'nope'"):  # got past the key check
        client.get_job("nope")


def test_tls_with_ca_path_and_bytes(secure_server: ServerProcess, certs: Path) -> None:
    ca = certs / "ca.pem"
    for roots in (str(ca), ca, ca.read_bytes()):
        with Client(secure_server.target, root_certificates=roots, server_name_override=SERVER_NAME,
                    api_key=API_KEY, timeout=10) as client:
            assert client.health() == "SERVING"
            _use_every_rpc(client)
    # the certificate also names 127.0.0.1, the target's own host
    with Client(secure_server.target, root_certificates=ca, api_key=API_KEY, timeout=10) as client:
        assert client.health() == "SERVING"
        _use_every_rpc(client)


@pytest.mark.parametrize(("api_key", "reason"), [(None, "missing x-api-key"), ("wrong-key", "not valid")])
def test_missing_or_wrong_api_key_is_unauthenticated(secure_server: ServerProcess, certs: Path,
                                                      api_key: str | None, reason: str) -> None:
    with Client(secure_server.target, root_certificates=certs / "ca.pem", api_key=api_key, timeout=10) as client:
        assert client.health() == "SERVING"  # probes need no key
        with pytest.raises(dqd_client.Unauthenticated, match=reason) as info:
            client.list_fields()
        assert info.value.status == "UNAUTHENTICATED"
        with pytest.raises(dqd_client.Unauthenticated, match=reason):
            client.detect_rows([{"material": NYLONN}], MATERIAL)
        with pytest.raises(dqd_client.Unauthenticated, match=reason):
            list(client.detect([pa.record_batch({"material": [NYLONN]})], MATERIAL))
        with pytest.raises(dqd_client.Unauthenticated, match=reason):
            client.get_job("nope")


def test_tls_wrong_name_untrusted_or_plaintext_fails(secure_server: ServerProcess, certs: Path) -> None:
    target = secure_server.target
    with Client(target, root_certificates=certs / "ca.pem", server_name_override="other.name", api_key=API_KEY,
                timeout=5) as client, pytest.raises(dqd_client.Unavailable):
        client.list_fields()
    # system roots: the test CA is not among them
    with Client(target, tls=True, api_key=API_KEY, timeout=5) as client, pytest.raises(dqd_client.Unavailable):
        client.health()
    with Client(target, api_key=API_KEY, timeout=5) as client:  # plaintext to a TLS port
        with pytest.raises(dqd_client.Unavailable):
            client.health()
        with pytest.raises(dqd_client.Unavailable):
            list(client.detect([pa.record_batch({"material": [NYLONN]})], MATERIAL))


def test_cli_tls_and_api_key(secure_server: ServerProcess, certs: Path, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    target, ca = secure_server.target, str(certs / "ca.pem")
    assert main(["health", "--target", target, "--ca", ca, "--server-name", SERVER_NAME]) == 0
    assert capsys.readouterr().out.strip() == "SERVING"
    assert main(["fields", "--target", target, "--tls", "--ca", ca]) == 3
    assert "server error UNAUTHENTICATED: missing x-api-key" in capsys.readouterr().err
    assert main(["fields", "--target", target, "--ca", ca, "--api-key", "wrong-key"]) == 3
    assert "server error UNAUTHENTICATED" in capsys.readouterr().err
    monkeypatch.setenv("DQD_TARGET", target)
    monkeypatch.setenv("DQD_API_KEY", API_KEY)
    assert main(["fields", "--ca", ca]) == 0
    assert "material" in capsys.readouterr().out
    path = tmp_path / "products.csv"
    path.write_text(f'sku,material\n1,100% Cotton\n2,"{NYLONN}"\n')
    out = tmp_path / "findings.parquet"
    assert main(["check", str(path), "--tls", "--ca", ca, "--server-name", SERVER_NAME, "--map", "material=material",
                 "--out", str(out), "-q"]) == 0
    assert "findings written to" in capsys.readouterr().out
    assert pq.read_table(out).column("code").to_pylist() == ["NEAR_MISS"]
    assert main(["health", "--tls"]) == 3  # system roots do not trust the test CA
    assert "server error UNAVAILABLE" in capsys.readouterr().err
    assert main(["health", "--timeout", "5"]) == 3  # plaintext to the TLS port
    assert "server error UNAVAILABLE" in capsys.readouterr().err
