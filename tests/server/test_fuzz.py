"""Property-based fuzzing of what a client can send: every payload gives a result or a clear error,
and the server stays up with bounded memory (hypothesis, against the real server process)."""
from __future__ import annotations

from pathlib import Path

import grpc
import pyarrow as pa
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dqd_server._proto import detection_pb2 as pb
from dqd_server.engine.ipc import encode_batch
from dqd_server.launcher import ServerProcess

FIELDS = ["material", "color_name", "size", "ean", "price", "no_such_type", ""]
CLEAR = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
arrays = st.one_of(
    st.lists(st.one_of(st.none(), texts), max_size=30).map(lambda v: pa.array(v, pa.string())),
    st.lists(st.one_of(st.none(), st.integers(-2**63, 2**63 - 1)), max_size=30).map(lambda v: pa.array(v, pa.int64())),
    st.lists(st.floats(allow_nan=True), max_size=30).map(lambda v: pa.array(v, pa.float64())),
    st.lists(st.booleans(), max_size=30).map(pa.array),
    st.lists(st.binary(max_size=10), max_size=30).map(lambda v: pa.array(v, pa.binary())),
    st.lists(st.lists(texts, max_size=3), max_size=30).map(lambda v: pa.array(v, pa.list_(pa.string()))),
    st.lists(texts, max_size=30).map(lambda v: pa.array(v, pa.string()).dictionary_encode()),
    st.integers(0, 30).map(pa.nulls),
    st.lists(texts, max_size=30).map(lambda v: pa.array([{"a": x} for x in v], pa.struct([("a", pa.string())]))),
)


@st.composite
def batches(draw: st.DrawFn) -> pa.RecordBatch:
    n_cols = draw(st.integers(1, 4))
    cols = [draw(arrays) for _ in range(n_cols)]
    n = min(len(c) for c in cols)
    names = draw(st.lists(st.sampled_from(["material", "colour", "size", "x"]), min_size=n_cols, max_size=n_cols))
    return pa.RecordBatch.from_arrays([c.slice(0, n) for c in cols], names=names)


def invalid_utf8(n: int) -> pa.RecordBatch:
    offsets = pa.py_buffer(pa.array(list(range(0, 2 * n + 1, 2)), pa.int32()).buffers()[1])
    return pa.record_batch({"material": pa.Array.from_buffers(pa.string(), n, [None, offsets,
                                                                               pa.py_buffer(b"\xff\xfe" * n)])})


@pytest.fixture(scope="module")
def fuzz_server() -> ServerProcess:
    with ServerProcess(env={"MAX_FILE_SIZE": "4MiB", "LOG_LEVEL": "ERROR"}) as srv:
        yield srv


def _rss_kib(srv: ServerProcess) -> int:
    for line in Path(f"/proc/{srv.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _run(srv: ServerProcess, requests: list[pb.DetectRequest]) -> None:
    """The stream either succeeds or fails with a clear status; the server answers health after."""
    from dqd_server._proto import detection_pb2_grpc

    with grpc.insecure_channel(srv.target, options=[("grpc.max_send_message_length", 64 << 20)]) as ch:
        try:
            out = list(detection_pb2_grpc.DetectionServiceStub(ch).Detect(iter(requests), timeout=30))
            assert out[-1].WhichOneof("payload") == "summary"
        except grpc.RpcError as err:
            assert err.code() in CLEAR, (err.code(), err.details())
            assert err.details(), "an error must say what to fix"
        status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10).status
        assert status == health_pb2.HealthCheckResponse.SERVING


def config(columns: dict[str, str], methods: list[str] | None = None) -> pb.DetectRequest:
    return pb.DetectRequest(config=pb.DetectConfig(columns=columns, methods=methods or []))


@FUZZ
@given(batch=batches(), mapping=st.dictionaries(st.sampled_from(["material", "colour", "size", "nope"]),
                                                 st.sampled_from(FIELDS), min_size=0, max_size=3),
       methods=st.lists(st.sampled_from(["validation", "pattern", "ml", "bogus"]), max_size=2))
def test_random_schemas_and_configs(fuzz_server: ServerProcess, batch: pa.RecordBatch, mapping: dict,
                                    methods: list[str]) -> None:
    _run(fuzz_server, [config(mapping, methods), pb.DetectRequest(arrow_batch=encode_batch(batch))])


@FUZZ
@given(batch=batches(), cut=st.floats(0, 1), junk=st.binary(max_size=200))
def test_truncated_and_garbage_ipc(fuzz_server: ServerProcess, batch: pa.RecordBatch, cut: float,
                                   junk: bytes) -> None:
    payload = encode_batch(batch)
    for data in (payload[: int(len(payload) * cut)], junk, payload + junk):
        _run(fuzz_server, [config({"material": "material"}), pb.DetectRequest(arrow_batch=data)])


def test_extremes_and_bounded_memory(fuzz_server: ServerProcess) -> None:
    """Huge strings, all-null and 0-row batches, invalid UTF-8, a million columns."""
    start = _rss_kib(fuzz_server)
    material = {"material": "material"}
    cases = [
        [config(material), pb.DetectRequest(arrow_batch=encode_batch(pa.record_batch({"material": ["x" * 3_000_000]})))],
        [config(material), pb.DetectRequest(arrow_batch=encode_batch(pa.record_batch({"material": pa.nulls(1000, pa.string())})))],
        [config(material), pb.DetectRequest(arrow_batch=encode_batch(pa.record_batch({"material": pa.array([], pa.string())})))],
        [config(material), pb.DetectRequest(arrow_batch=encode_batch(invalid_utf8(50)))],
        [config(material), pb.DetectRequest(arrow_batch=encode_batch(
            pa.RecordBatch.from_arrays([pa.nulls(0)] * 1_000_000, names=[f"c{i}" for i in range(1_000_000)])))],
        [config({f"c{i}": "material" for i in range(20_000)})],
    ]
    for _ in range(3):
        for requests in cases:
            _run(fuzz_server, requests)
    assert _rss_kib(fuzz_server) - start < 600_000, "server memory grew by more than ~600 MiB"
