"""Prometheus metrics of a real server: one scrape of /metrics after known traffic shows exact counts."""
from __future__ import annotations

import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator

import grpc
import pyarrow as pa
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from dqd_server._proto import detection_pb2 as pb
from dqd_server._proto import detection_pb2_grpc
from dqd_server.engine import BatchResult, Engine, StreamSession
from dqd_server.launcher import ServerProcess
from test_detect_stream import CONFIG, batch_req, catalog_batch  # tests/server is on sys.path (rootdir mode)

DETECT = "dqd.v1.DetectionService/Detect"
DETECT_ROWS = "dqd.v1.DetectionService/DetectRows"
CHECK = "grpc.health.v1.Health/Check"


def scrape(srv: ServerProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the server's /metrics, keyed by (sample name, sorted labels)."""
    with urllib.request.urlopen(srv.metrics_url, timeout=10) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:  # noqa: ANN001
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture(scope="module")
def srv() -> Iterator[ServerProcess]:
    with ServerProcess(env={"MAX_FILE_SIZE": "1MB", "LOG_LEVEL": "WARNING"}) as server:
        yield server


def test_metrics_count_what_was_sent(srv: ServerProcess) -> None:
    assert srv.metrics_port > 0
    with grpc.insecure_channel(srv.target) as ch:
        stub = detection_pb2_grpc.DetectionServiceStub(ch)
        batches = [catalog_batch(1000, bad_every=100), catalog_batch(500, bad_every=50), catalog_batch(7)]
        responses = list(stub.Detect(iter([CONFIG, *map(batch_req, batches)]), timeout=30))
        summary = responses[-1].summary
        rows = stub.DetectRows(pb.DetectRowsRequest(columns={"material": "material"}, rows=[
            pb.Row(cells={"material": "78% Viscose - 22% Nylonn"}), pb.Row(cells={"material": "100% Cotton"})]),
            timeout=10)
        with pytest.raises(grpc.RpcError) as bad:
            stub.DetectRows(pb.DetectRowsRequest(columns={"m": "no_such_type"}), timeout=10)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as bad_stream:
            list(stub.Detect(iter([batch_req(catalog_batch(3))]), timeout=10))
        assert bad_stream.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5).status == 1
    m = scrape(srv)

    sent = sum(b.num_rows for b in batches) + 2
    assert summary.rows == sent - 2
    assert value(m, "dqd_records_processed_total") == sent
    assert value(m, "dqd_batch_rows_count") == len(batches) + 1
    assert value(m, "dqd_batch_rows_sum") == sent
    expected = Counter()
    for c in summary.counts:
        expected[(c.field, c.method)] += c.count
    expected[("material", "pattern")] += rows.summary.findings
    assert rows.summary.findings == 1
    got = {(dict(k[1])["field"], dict(k[1])["method"]): v for k, v in m.items() if k[0] == "detection_errors_total"}
    assert got == dict(expected)
    # one observation per method per batch: the stream's batches and the one of DetectRows
    for method in ("validation", "pattern"):
        assert value(m, "detection_duration_seconds_count", method=method) == len(batches) + 1
        assert value(m, "detection_duration_seconds_sum", method=method) > 0

    assert value(m, "dqd_requests_total", rpc=DETECT, code="OK") == 1
    assert value(m, "dqd_requests_total", rpc=DETECT, code="INVALID_ARGUMENT") == 1
    assert value(m, "dqd_requests_total", rpc=DETECT_ROWS, code="OK") == 1
    assert value(m, "dqd_requests_total", rpc=DETECT_ROWS, code="INVALID_ARGUMENT") == 1
    assert value(m, "dqd_requests_total", rpc=CHECK, code="OK") == 1
    assert value(m, "dqd_rpc_duration_seconds_count", rpc=DETECT) == 2
    assert value(m, "dqd_rpc_duration_seconds_bucket", rpc=DETECT, le="+Inf") == 2
    assert value(m, "dqd_streams_in_flight", rpc=DETECT) == 0
    assert value(m, "dqd_worker_info", worker="0", pid=str(srv.proc.pid)) == 1
    assert value(m, "process_cpu_seconds_total") > 0 and value(m, "process_resident_memory_bytes") > 0


def test_open_streams_deadlines_and_cancels(srv: ServerProcess) -> None:
    before = scrape(srv)
    with grpc.insecure_channel(srv.target) as ch:
        stub = detection_pb2_grpc.DetectionServiceStub(ch)
        release = threading.Event()

        def held() -> Iterator[pb.DetectRequest]:
            yield CONFIG
            yield batch_req(catalog_batch(10))
            release.wait(10)

        call = stub.Detect(held(), timeout=0.8)
        next(call)  # the stream is open on the server
        assert value(scrape(srv), "dqd_streams_in_flight", rpc=DETECT) == 1
        with pytest.raises(grpc.RpcError) as late:
            list(call)
        assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        release.set()

        release2 = threading.Event()

        def endless() -> Iterator[pb.DetectRequest]:
            yield CONFIG
            yield batch_req(catalog_batch(10))
            release2.wait(10)

        call = stub.Detect(endless(), timeout=20)
        next(call)
        call.cancel()
        release2.set()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the server notices the cancel asynchronously
        after = scrape(srv)
        if value(after, "dqd_streams_in_flight", rpc=DETECT) == 0 and value(
                after, "dqd_requests_total", rpc=DETECT, code="CANCELLED") > value(
                before, "dqd_requests_total", rpc=DETECT, code="CANCELLED"):
            break
        time.sleep(0.05)
    for code in ("DEADLINE_EXCEEDED", "CANCELLED"):
        assert value(after, "dqd_requests_total", rpc=DETECT, code=code) == value(
            before, "dqd_requests_total", rpc=DETECT, code=code) + 1, code
    assert value(after, "dqd_streams_in_flight", rpc=DETECT) == 0
    assert value(after, "dqd_records_processed_total") == value(before, "dqd_records_processed_total") + 20


def test_metrics_can_be_switched_off() -> None:
    with ServerProcess(env={"METRICS_ENABLED": "false", "LOG_LEVEL": "WARNING"}) as srv:
        assert srv.metrics_port == 0
        assert not any(line.startswith("dqd metrics on") for line in srv.output)


def test_metrics_port_clash_is_a_clear_start_up_error(srv: ServerProcess) -> None:
    with pytest.raises(RuntimeError) as info:
        ServerProcess(metrics_port=srv.metrics_port, startup_timeout=20).start()
    assert f"cannot serve metrics on 127.0.0.1:{srv.metrics_port} (METRICS_PORT)" in str(info.value)


# --- the pieces, in process ---------------------------------------------------------------------------


def test_batch_counts_ignore_ok_rows() -> None:
    from dqd_server.engine.repository import BUNDLED_RULES

    engine = Engine.from_repository(BUNDLED_RULES)
    batch = pa.record_batch({"material": ["100% Cotton", "78% Viscose - 22% Nylonn", None],
                             "colour": ["Black", "Blak", "Navy"]})
    plan = engine.plan({"material": "material", "colour": "color_name"}, emit_all=True)
    result: BatchResult = StreamSession(engine, plan).feed(batch)
    flagged = [r for r in result.findings.to_pylist() if r["code"] != "OK"]
    assert sum(result.counts.values()) == len(flagged) > 0
    assert result.counts == Counter((r["column"], r["field"], r["method"]) for r in flagged)


def test_instrumented_engine_times_each_method_per_batch() -> None:
    from prometheus_client import CollectorRegistry

    from dqd_server.engine.cache import VerdictCache
    from dqd_server.engine.repository import BUNDLED_RULES
    from dqd_server.metrics import Metrics

    registry = CollectorRegistry()
    metrics = Metrics(registry=registry)
    plain = Engine.from_repository(BUNDLED_RULES)
    timed = metrics.instrument(metrics.instrument(Engine.from_repository(BUNDLED_RULES, cache=VerdictCache())))
    batch = catalog_batch(300, bad_every=7)

    def findings(engine: Engine) -> list[list[dict]]:
        plan = engine.plan({"material": "material", "colour": "color_name"})
        return [StreamSession(engine, plan).feed(batch).findings.to_pylist() for _ in range(2)]  # 2nd: cached

    assert findings(timed) == findings(plain)
    count = registry.get_sample_value("detection_duration_seconds_count", {"method": "validation"})
    assert count == 2  # once per batch, whether the verdicts came from the detector or the cache
