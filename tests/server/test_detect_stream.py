"""Detect over a real server: ordering, row numbering, interleaving, every error case, staying up."""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

import grpc
import pyarrow as pa
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dqd_server._proto import detection_pb2 as pb
from dqd_server.engine.ipc import decode_batch, encode_batch
from dqd_server.launcher import ServerProcess

CONFIG = pb.DetectRequest(config=pb.DetectConfig(columns={"material": "material", "colour": "color_name"}))
GOOD = ["100% Cotton", "78% Viscose - 22% Nylon", "95% Cotton - 5% Elastane"]


def batch_req(batch: pa.RecordBatch) -> pb.DetectRequest:
    return pb.DetectRequest(arrow_batch=encode_batch(batch))


def catalog_batch(n: int, bad_every: int = 0) -> pa.RecordBatch:
    material = [GOOD[i % 3] for i in range(n)]
    colour = ["Black" if i % 2 else "Navy" for i in range(n)]
    if bad_every:
        for i in range(0, n, bad_every):
            material[i] = "78% Viscose - 22% Nylonn"
    return pa.record_batch({"material": material, "colour": colour, "other": list(range(n))})


def assert_up(channel: grpc.Channel) -> None:
    resp = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert resp.status == health_pb2.HealthCheckResponse.SERVING


def test_stream_findings_in_order_with_stream_row_numbers(stub, channel) -> None:  # noqa: ANN001
    batches = [catalog_batch(1000, bad_every=100) for _ in range(5)]
    responses = list(stub.Detect(iter([CONFIG, *map(batch_req, batches)]), timeout=60))
    assert [r.WhichOneof("payload") for r in responses] == ["findings"] * 5 + ["summary"]
    rows = []
    for k, r in enumerate(responses[:-1]):
        f = r.findings
        assert (f.batch_index, f.first_row, f.num_rows, f.num_findings) == (k, 1000 * k, 1000, 10)
        table = decode_batch(f.arrow_batch)
        assert table.schema.names == ["row", "column", "field", "method", "code", "message", "confidence", "value"]
        rows += table.column("row").to_pylist()
    assert rows == list(range(0, 5000, 100))
    s = responses[-1].summary
    assert (s.rows, s.batches, s.cells_checked, s.findings) == (5000, 5, 10000, 50)
    assert s.job_id and s.elapsed_seconds > 0
    assert sum(c.count for c in s.counts) == 50 and {c.column for c in s.counts} == {"material"}


def test_findings_arrive_before_the_input_ends(stub) -> None:  # noqa: ANN001
    """Lock-step: batch k+1 is only sent after findings k arrived — this deadlocks if the server buffers."""
    n_batches, rows = 40, 5000  # 200k rows, far larger than one batch
    answered: queue.Queue[int] = queue.Queue()

    def requests() -> Iterator[pb.DetectRequest]:
        yield CONFIG
        for k in range(n_batches):
            yield batch_req(catalog_batch(rows, bad_every=1000))
            assert answered.get(timeout=20) == k  # the server answered batch k while k+1.. are unsent

    got = 0
    for resp in stub.Detect(requests(), timeout=120):
        if resp.WhichOneof("payload") == "findings":
            assert resp.findings.num_findings == 5
            answered.put(resp.findings.batch_index)
            got += 1
        else:
            assert resp.summary.rows == n_batches * rows
    assert got == n_batches


def _code_and_details(stub, requests, timeout: float = 20) -> tuple[grpc.StatusCode, str]:  # noqa: ANN001
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Detect(iter(requests), timeout=timeout))
    return info.value.code(), info.value.details()


@pytest.mark.parametrize(
    ("requests", "needle"),
    [
        ([], "first Detect message must be a config"),
        ([batch_req(catalog_batch(3))], "first Detect message must be a config"),
        ([pb.DetectRequest(config=pb.DetectConfig())], "no columns to check"),
        ([pb.DetectRequest(config=pb.DetectConfig(columns={"x": "no_such_type"}))], "unknown field type 'no_such_type'"),
        ([pb.DetectRequest(config=pb.DetectConfig(columns={"material": "material"}, methods=["nope"]))],
         "unknown method 'nope'"),
        ([CONFIG, pb.DetectRequest(arrow_batch=b"not arrow at all")], "not a valid Arrow IPC stream"),
        ([CONFIG, pb.DetectRequest(arrow_batch=encode_batch(catalog_batch(5))[:-20])], "Arrow IPC"),
        ([CONFIG, pb.DetectRequest()], "not an arrow_batch"),
        ([CONFIG, CONFIG], "not an arrow_batch"),
        ([CONFIG, batch_req(pa.record_batch({"material": ["a"]}))], "column 'colour' is not in the batch"),
        ([CONFIG, batch_req(catalog_batch(3)), batch_req(catalog_batch(3).drop_columns(["other"]))],
         "changes the schema mid-stream"),
        ([CONFIG, batch_req(pa.record_batch({"material": pa.array([[1]]), "colour": ["a"]}))], "has type list"),
    ],
    ids=["empty", "batch-first", "no-columns", "unknown-field", "unknown-method", "garbage-arrow",
         "truncated-arrow", "empty-message", "config-twice", "missing-column", "schema-change", "nested"],
)
def test_bad_input_is_invalid_argument_and_server_stays_up(stub, channel, requests, needle) -> None:  # noqa: ANN001
    code, details = _code_and_details(stub, requests)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert needle in details
    assert_up(channel)


def test_oversize_message_is_resource_exhausted(stub, channel) -> None:  # noqa: ANN001
    big = pa.record_batch({"material": ["x" * 1000] * 10_000, "colour": ["Black"] * 10_000})  # ~10 MB > 8MB
    code, details = _code_and_details(stub, [CONFIG, batch_req(big)])
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, details
    assert_up(channel)


def test_deadline_is_honoured_promptly(stub, channel) -> None:  # noqa: ANN001
    def slow() -> Iterator[pb.DetectRequest]:
        yield CONFIG
        yield batch_req(catalog_batch(10))
        time.sleep(5)  # the client stalls; its deadline must end the call
        yield batch_req(catalog_batch(10))

    started = time.monotonic()
    code, _ = _code_and_details(stub, slow(), timeout=1.0)
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 4
    assert_up(channel)


def test_cancel_mid_stream_leaves_server_serving(stub, channel) -> None:  # noqa: ANN001
    stop = threading.Event()

    def endless() -> Iterator[pb.DetectRequest]:
        yield CONFIG
        while not stop.is_set():
            yield batch_req(catalog_batch(2000))

    call = stub.Detect(endless(), timeout=60)
    for i, _ in enumerate(call):
        if i == 3:
            call.cancel()
            break
    stop.set()
    assert call.code() == grpc.StatusCode.CANCELLED
    assert_up(channel)
    # and the server still does real work afterwards
    ok = list(stub.Detect(iter([CONFIG, batch_req(catalog_batch(10, bad_every=5))]), timeout=20))
    assert ok[-1].summary.findings == 2


def test_detect_rows_limits_and_nulls(stub) -> None:  # noqa: ANN001
    resp = stub.DetectRows(pb.DetectRowsRequest(
        columns={"material": "material"}, rows=[pb.Row(cells={}), pb.Row(cells={"material": "100% Cotton"})]),
        timeout=10)
    assert [(f.row, f.code, f.value_is_null) for f in resp.findings] == [(0, "MISSING", True)]
    with pytest.raises(grpc.RpcError) as info:
        stub.DetectRows(pb.DetectRowsRequest(columns={"material": "material"},
                                             rows=[pb.Row(cells={"material": "x"})] * 10_001), timeout=10)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "use the Detect stream" in info.value.details()


def test_emit_all_scores_every_cell(stub) -> None:  # noqa: ANN001
    config = pb.DetectRequest(config=pb.DetectConfig(columns={"material": "material"}, methods=["validation"],
                                                     emit=pb.EMIT_MODE_ALL))
    resp = list(stub.Detect(iter([config, batch_req(catalog_batch(6, bad_every=3))]), timeout=20))
    table = decode_batch(resp[0].findings.arrow_batch)
    assert table.column("row").to_pylist() == list(range(6))
    assert set(table.column("code").to_pylist()) == {"OK"}  # validation passes the near miss; pattern is off
    assert resp[-1].summary.findings == 0


def test_health_not_serving_during_shutdown() -> None:
    """SIGTERM: health goes NOT_SERVING while an in-flight stream finishes, then exit 0."""
    with ServerProcess(env={"SHUTDOWN_GRACE": "10", "SHUTDOWN_DELAY": "3"}) as srv, grpc.insecure_channel(srv.target) as ch:
        from dqd_server._proto import detection_pb2_grpc

        stub = detection_pb2_grpc.DetectionServiceStub(ch)
        health = health_pb2_grpc.HealthStub(ch)
        release = threading.Event()

        def held() -> Iterator[pb.DetectRequest]:
            yield CONFIG
            yield batch_req(catalog_batch(10))
            release.wait(10)
            yield batch_req(catalog_batch(10))

        call = stub.Detect(held(), timeout=30)
        first = next(call)
        assert first.findings.batch_index == 0
        srv.proc.terminate()
        deadline = time.monotonic() + 10
        status = None
        while time.monotonic() < deadline:
            try:
                status = health.Check(health_pb2.HealthCheckRequest(), timeout=2).status
            except grpc.RpcError:
                break
            if status == health_pb2.HealthCheckResponse.NOT_SERVING:
                break
            time.sleep(0.05)
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        release.set()
        rest = list(call)  # the in-flight stream is allowed to finish
        assert rest[-1].summary.rows == 20
        assert srv.proc.wait(15) == 0
