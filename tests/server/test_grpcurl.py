"""The server as grpcurl users see it: reflection (list, describe), health, DetectRows as JSON."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from dqd_server.launcher import ServerProcess

GRPCURL = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
MATERIAL_CALL = ('{"columns": {"material": "material"}, "rows": [{"cells": {"material": "78% Viscose - 22% Nylon"}},'
                 ' {"cells": {"material": "78% Viscose - 22% Nylonn"}}]}')


def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GRPCURL, "-plaintext", *args], capture_output=True, text=True, timeout=30)


def test_list_shows_service_health_and_reflection(server: ServerProcess) -> None:
    out = grpcurl(server.target, "list")
    assert out.returncode == 0, out.stderr
    services = set(out.stdout.split())
    assert {"dqd.v1.DetectionService", "grpc.health.v1.Health"} <= services


def test_describe_service(server: ServerProcess) -> None:
    out = grpcurl(server.target, "describe", "dqd.v1.DetectionService")
    assert out.returncode == 0, out.stderr
    for rpc in ("rpc Detect ( stream .dqd.v1.DetectRequest ) returns ( stream .dqd.v1.DetectResponse )",
                "rpc DetectRows", "rpc ListFields"):
        assert rpc in out.stdout
    out = grpcurl(server.target, "describe", "dqd.v1.DetectConfig")
    assert "map<string, string> columns" in out.stdout


def test_health_serving(server: ServerProcess) -> None:
    for service in ("", "dqd.v1.DetectionService"):
        out = grpcurl("-d", json.dumps({"service": service}), server.target, "grpc.health.v1.Health/Check")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["status"] == "SERVING"


def test_detect_rows_exact_issue_call_flags_only_row_1(server: ServerProcess) -> None:
    out = grpcurl("-d", MATERIAL_CALL, server.target, "dqd.v1.DetectionService/DetectRows")
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    findings = body["findings"]
    assert len(findings) == 1, findings
    f = findings[0]
    assert f["row"] == "1" and f["column"] == "material" and f["value"] == "78% Viscose - 22% Nylonn"
    assert "Nylon" in f["message"] and 0 < f["confidence"] <= 1
    assert body["summary"]["rows"] == "2"


def test_list_fields_json(server: ServerProcess) -> None:
    out = grpcurl(server.target, "dqd.v1.DetectionService/ListFields")
    assert out.returncode == 0, out.stderr
    fields = {f["name"]: f for f in json.loads(out.stdout)["fields"]}
    for name in ("material", "color_name", "category", "size", "season", "care_instructions", "ean",
                 "article_number"):
        assert {m["method"] for m in fields[name]["methods"]} == {"validation", "pattern"}, name


def test_grpcurl_error_is_invalid_argument(server: ServerProcess) -> None:
    out = grpcurl("-d", '{"columns": {"m": "no_such_type"}, "rows": [{"cells": {"m": "x"}}]}', server.target,
                  "dqd.v1.DetectionService/DetectRows")
    assert out.returncode != 0
    assert "InvalidArgument" in out.stderr and "unknown field type 'no_such_type'" in out.stderr


def test_serve_binds_api_port_from_env() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    with ServerProcess(env={"API_PORT": str(free)}, port=None) as srv:
        assert srv.port == free
        assert grpcurl(srv.target, "list").returncode == 0
