"""The Python client against a real dqd server: streaming, laziness, cancellation, limits, errors, jobs.

Findings are the bundled rules' own: "78% Viscose - 22% Nylonn" is a pattern NEAR_MISS naming
'Nylon', a null material is a validation MISSING. Cancellations are observed on the server, through
its Prometheus endpoint (``dqd_requests_total{code="CANCELLED"}``, ``dqd_streams_in_flight``) and
the job it stored.
"""
from __future__ import annotations

import gc
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dqd_client
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from client_support import detect_cancelled, detect_in_flight, wait_for
from dqd_client import Client, FindingCount, findings_table
from misbehaving_server import start_misbehaving_server

from dqd_server.launcher import ServerProcess

COTTON, NYLON, NYLONN = "100% Cotton", "78% Viscose - 22% Nylon", "78% Viscose - 22% Nylonn"
MATERIALS = [COTTON, NYLON, NYLONN, None]  # row i % 4 == 2: NEAR_MISS, i % 4 == 3: MISSING
NEAR_MISS = ("pattern", "NEAR_MISS", "'Nylonn' is not a known material term; did you mean 'Nylon'?")
MISSING = ("validation", "MISSING", "value is missing")
MATERIAL = {"material": "material"}


def _batches(n: int, rows: int = 4) -> list[pa.RecordBatch]:
    return [pa.record_batch({"material": [MATERIALS[i % 4] for i in range(rows)], "other": [1] * rows})
            for _ in range(n)]


def _verdicts(table: pa.Table) -> list[tuple]:
    return [(r["row"], r["method"], r["code"], r["message"]) for r in table.to_pylist()]


def _key() -> str:
    return f"client-test-{uuid.uuid4().hex[:12]}"


def _endless(produced: list[int]) -> Iterator[pa.RecordBatch]:
    batch = _batches(1)[0]
    while True:
        produced[0] += 1
        yield batch


def _assert_input_no_longer_read(produced: list[int]) -> None:
    time.sleep(0.3)
    before = produced[0]
    time.sleep(0.5)
    assert produced[0] == before, "the stream kept reading its input after it was cancelled"


# -- streaming -----------------------------------------------------------------------------------


def test_detect_streams_results_in_order(client: Client) -> None:
    column = MATERIALS * 3
    batches = [pa.record_batch({"material": column[a:b], "sku": list(range(a, b))})
               for a, b in [(0, 5), (5, 8), (8, 12)]]
    stream = client.detect(iter(batches), MATERIAL)
    assert stream.summary is None
    results = list(stream)
    assert [(r.batch_index, r.first_row, r.num_rows) for r in results] == [(0, 0, 5), (1, 5, 3), (2, 8, 4)]
    assert [r.num_findings for r in results] == [2, 2, 2]
    table = findings_table(results)
    assert table.schema == dqd_client.FINDINGS_SCHEMA
    # rows are numbered over the whole stream, not per batch
    assert _verdicts(table) == [(row, *(NEAR_MISS if row % 4 == 2 else MISSING)) for row in (2, 3, 6, 7, 10, 11)]
    assert table.column("value").to_pylist() == [NYLONN, None] * 3
    assert set(table.column("column").to_pylist()) == set(table.column("field").to_pylist()) == {"material"}
    assert all(0.0 < c <= 1.0 for c in table.column("confidence").to_pylist())
    summary = stream.summary
    assert summary is not None
    assert (summary.rows, summary.batches, summary.cells_checked, summary.findings) == (12, 3, 12, 6)
    assert sorted(summary.counts, key=lambda c: c.method) == [
        FindingCount("material", "material", "pattern", 3), FindingCount("material", "material", "validation", 3)]
    assert summary.job_id
    assert stream.rows_sent == 12 and stream.rows_done == 12
    assert stream.done and list(stream) == []  # exhausted stays exhausted


def test_emit_all_methods_and_thresholds_reach_the_server(client: Client) -> None:
    batch = pa.record_batch({"material": [COTTON, NYLONN]})
    stream = client.detect([batch], MATERIAL, emit="all", methods=["validation", "pattern"])
    table = findings_table(stream)
    assert sorted((r["row"], r["method"], r["code"]) for r in table.to_pylist()) == [
        (0, "pattern", "OK"), (0, "validation", "OK"), (1, "pattern", "NEAR_MISS"), (1, "validation", "OK")]
    assert stream.summary is not None and stream.summary.findings == 1  # OK rows are not findings

    rows = [{"material": NYLONN}, {"material": None}]
    only_validation = findings_table(client.detect([pa.record_batch({"material": [NYLONN, None]})], MATERIAL,
                                                   methods=["validation"]))
    assert _verdicts(only_validation) == [(1, *MISSING)]
    # NEAR_MISS has confidence 0.85: a method threshold above it drops it, a field.method one wins
    assert [f.code for f in client.detect_rows(rows, MATERIAL, thresholds={"pattern": 0.9})[0]] == ["MISSING"]
    findings, _ = client.detect_rows(rows, MATERIAL, thresholds={"pattern": 0.9, "material.pattern": 0.8})
    assert [f.code for f in findings] == ["NEAR_MISS", "MISSING"]


def test_only_mapped_columns_are_sent_as_text(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    # The server refuses a schema change mid-stream, so it only accepts these batches if the client
    # drops the unmapped column (int, then text) and sends the mapped one with one type (dictionary,
    # then large_string).
    batches = [pa.record_batch({"x": [1], "material": pa.array([NYLONN]).dictionary_encode()}),
               pa.record_batch({"x": ["1", "2"], "material": pa.array([None, COTTON], pa.large_string())})]
    sent: list[pa.Schema] = []
    import dqd_client._client as client_mod
    encode = client_mod.encode_batch

    def spy(batch: pa.RecordBatch) -> bytes:  # the real encoder, watched
        sent.append(batch.schema)
        return encode(batch)

    monkeypatch.setattr(client_mod, "encode_batch", spy)
    stream = client.detect(batches, MATERIAL)
    assert _verdicts(findings_table(stream)) == [(0, *NEAR_MISS), (1, *MISSING)]
    assert stream.summary is not None and stream.summary.rows == 3
    assert sent == [pa.schema([("material", pa.string())])] * 2


def test_request_iterator_is_lazy(client: Client) -> None:
    """Findings for batch 0 must arrive before batch 1 is even produced."""
    first_answered = threading.Event()
    produced: list[int] = []

    def gen() -> Iterator[pa.RecordBatch]:
        for i, batch in enumerate(_batches(3)):
            if i == 1:
                assert first_answered.wait(10), "no findings for batch 0 before batch 1 was read"
            produced.append(i)
            yield batch

    stream = client.detect(gen(), MATERIAL)
    for result in stream:
        if result.batch_index == 0:
            assert produced == [0]
            assert _verdicts(findings_table([result])) == [(2, *NEAR_MISS), (3, *MISSING)]
            first_answered.set()
    assert produced == [0, 1, 2]
    assert stream.summary is not None and stream.summary.rows == 12


# A peer with gRPC's default keepalive policy answers the 5th ping (1 s apart) during a silence with
# GOAWAY too_many_pings, about 5.5 s into it.
SILENCE_S = 6.5


def _silent_stream(target: str, options: list[tuple[str, int]]) -> tuple[list[int], int]:
    """Detect over an input that is silent for SILENCE_S between its two batches: (batch indexes, rows)."""
    def silent_input() -> Iterator[pa.RecordBatch]:
        yield pa.record_batch({"material": [NYLONN]})
        time.sleep(SILENCE_S)
        yield pa.record_batch({"material": [COTTON]})

    with Client(target, options=options) as pinging:
        stream = pinging.detect(silent_input(), MATERIAL)
        indexes = [r.batch_index for r in stream]
    assert stream.summary is not None
    return indexes, stream.summary.rows


def test_slow_input_survives_keepalive_pings(server: ServerProcess) -> None:
    """A stream whose input is silent for seconds is not killed over keepalive pings (GOAWAY too_many_pings).

    Two sides, run at once to wait only once: the client's own ping limit, on a peer with gRPC's default
    ping policy (the double: the real server tolerates any ping rate, misbehaving_server.py says why); and
    the real server's leniency, towards a client that pings every second without limit.
    """
    double, double_target, _ = start_misbehaving_server()
    try:
        with ThreadPoolExecutor(2) as pool:
            own_limit = pool.submit(_silent_stream, double_target, [("grpc.keepalive_time_ms", 1000)])
            lenient_server = pool.submit(_silent_stream, server.target, [
                ("grpc.keepalive_time_ms", 1000), ("grpc.http2.max_pings_without_data", 0)])
            for side, future in [("the client's ping limit", own_limit), ("the server's ping policy", lenient_server)]:
                try:
                    assert future.result(timeout=60) == ([0, 1], 2), side
                except dqd_client.RpcError as exc:
                    pytest.fail(f"{side}: the silent stream failed with {exc}")
    finally:
        double.stop(grace=None)


# -- cancellation --------------------------------------------------------------------------------


def test_input_error_cancels_the_call_and_is_reraised(client: Client, quiet_detect: ServerProcess) -> None:
    class Boom(RuntimeError):
        pass

    answered = threading.Event()

    def gen() -> Iterator[pa.RecordBatch]:
        yield _batches(1)[0]
        assert answered.wait(10)  # the server has the call open before the input fails
        raise Boom("disk on fire")

    cancelled = detect_cancelled(quiet_detect)
    stream = client.detect(gen(), MATERIAL)
    assert next(stream).batch_index == 0
    answered.set()
    with pytest.raises(Boom, match="disk on fire"):
        next(stream)
    assert stream.summary is None and stream.done
    wait_for(lambda: detect_cancelled(quiet_detect) > cancelled, "the server to count the call CANCELLED")
    wait_for(lambda: detect_in_flight(quiet_detect) == 0, "the server to close the stream")

    with pytest.raises(dqd_client.InputError, match=r"\['material'\] not found in the batch"):
        list(client.detect([pa.record_batch({"x": ["1"]})], MATERIAL))


def test_cancel_with_context_manager(client: Client, quiet_detect: ServerProcess) -> None:
    produced = [0]
    key = _key()
    cancelled = detect_cancelled(quiet_detect)
    with client.detect(_endless(produced), MATERIAL, job_key=key) as stream:
        first = next(stream)
    assert first.batch_index == 0 and stream.done
    assert list(stream) == []
    wait_for(lambda: detect_cancelled(quiet_detect) > cancelled, "the server to count the call CANCELLED")
    wait_for(lambda: detect_in_flight(quiet_detect) == 0, "the server to close the stream")
    wait_for(lambda: client.get_job(job_key=key).status == "CANCELLED", "the job to be marked CANCELLED")
    job = client.get_job(job_key=key)
    assert "cancelled after" in job.error and job.rows >= 4
    _assert_input_no_longer_read(produced)


def test_abandoned_stream_is_cancelled(client: Client, quiet_detect: ServerProcess) -> None:
    produced = [0]
    cancelled = detect_cancelled(quiet_detect)
    stream = client.detect(_endless(produced), MATERIAL)
    assert next(stream).batch_index == 0
    assert detect_in_flight(quiet_detect) == 1
    del stream
    gc.collect()
    wait_for(lambda: detect_cancelled(quiet_detect) > cancelled, "the server to count the call CANCELLED")
    wait_for(lambda: detect_in_flight(quiet_detect) == 0, "the server to close the abandoned stream")
    _assert_input_no_longer_read(produced)


# -- errors --------------------------------------------------------------------------------------


def test_unknown_field_or_method_is_invalid_argument(client: Client) -> None:
    message = r"column 'material': unknown field type 'no_such_field'; known: .*\bcolor_name\b.*\bmaterial\b"
    with pytest.raises(dqd_client.InvalidArgument, match=message) as info:
        list(client.detect(_batches(1), {"material": "no_such_field"}))
    assert info.value.status == "INVALID_ARGUMENT"
    with pytest.raises(dqd_client.InvalidArgument, match=message):
        client.detect_rows([{"material": "x"}], {"material": "no_such_field"})
    with pytest.raises(dqd_client.InvalidArgument, match="unknown method 'bogus'"):
        list(client.detect(_batches(1), MATERIAL, methods=["bogus"]))


def test_unavailable_server() -> None:
    with Client("127.0.0.1:1", timeout=5) as client:
        with pytest.raises(dqd_client.Unavailable):
            client.list_fields()
        with pytest.raises(dqd_client.Unavailable):
            list(client.detect(_batches(1), MATERIAL))


# -- message size --------------------------------------------------------------------------------

SMALL_CAP = 256 * 1024


@pytest.fixture(scope="module")
def small_server() -> Iterator[ServerProcess]:
    """A real server that refuses any message over 256 KiB."""
    with ServerProcess(env={"MAX_FILE_SIZE": str(SMALL_CAP), "LOG_LEVEL": "WARNING",
                                   "SHUTDOWN_DELAY": "0"}) as srv:
        yield srv


def test_oversized_batch_is_split(small_server: ServerProcess) -> None:
    rows = 20_000
    big = pa.record_batch({"material": [NYLONN if i % 1000 == 0 else NYLON for i in range(rows)]})  # ~540 KB
    with Client(small_server.target) as unsplit, pytest.raises(dqd_client.ResourceExhausted, match="larger than max"):
        list(unsplit.detect([big], MATERIAL))  # the server really refuses the batch whole
    with Client(small_server.target, max_message_bytes=SMALL_CAP) as client:
        stream = client.detect([big], MATERIAL)
        results = list(stream)
        with pytest.raises(dqd_client.InputError, match="a single row needs .* over the message limit"):
            list(client.detect([pa.record_batch({"material": ["x" * SMALL_CAP]})], MATERIAL))
    assert len(results) > 1 and sum(r.num_rows for r in results) == rows
    assert [r.first_row for r in results] == [sum(r.num_rows for r in results[:i]) for i in range(len(results))]
    assert stream.summary is not None and (stream.summary.rows, stream.summary.batches) == (rows, len(results))
    assert _verdicts(findings_table(results)) == [(row, *NEAR_MISS) for row in range(0, rows, 1000)]


# -- tables, files, unary calls --------------------------------------------------------------------


def test_check_table_and_file(client: Client, tmp_path: Path) -> None:
    table = pa.Table.from_batches(_batches(5, rows=10))
    results = list(client.check_table(table, MATERIAL, batch_size=16))
    assert [r.num_rows for r in results] == [16, 16, 16, 2]
    assert findings_table(results).column("row").to_pylist() == [b + r for b in range(0, 50, 10) for r in (2, 3, 6, 7)]
    path = tmp_path / "in.csv"
    path.write_text('material,x\n100% Cotton,1\n,2\n"78% Viscose - 22% Nylonn",3\nN/A,4\n')
    found = findings_table(client.check_file(path, MATERIAL, batch_size=2))
    assert _verdicts(found) == [(1, *MISSING), (2, *NEAR_MISS),
                                (3, "validation", "BAD_FORMAT", "'N/A' is not a composition like '78% Viscose - 22% Nylon'")]
    assert found.column("value").to_pylist() == [None, NYLONN, "N/A"]  # empty CSV field = null, N/A = text


def test_detect_rows(client: Client) -> None:
    findings, summary = client.detect_rows([{"material": COTTON}, {"material": NYLONN}, {"material": None}, {}],
                                           MATERIAL)
    assert [(f.row, f.method, f.code, f.message) for f in findings] == [(1, *NEAR_MISS), (2, *MISSING), (3, *MISSING)]
    assert [f.value for f in findings] == [NYLONN, None, None]
    assert (summary.rows, summary.findings) == (4, 3)
    findings, _ = client.detect_rows([{"price": 29.95}, {"price": 0}], {"price": "price"})  # numbers go as text
    assert [(f.row, f.code, f.value) for f in findings] == [(1, "OUT_OF_RANGE", "0")]


def test_list_fields_and_health(client: Client) -> None:
    fields = {f.name: f for f in client.list_fields()}
    assert set(fields) >= {"material", "color_name", "category", "size", "season", "care_instructions",
                           "ean", "article_number", "price"}
    assert "78% Viscose - 22% Nylon" in fields["material"].description
    assert {m.method for m in fields["material"].methods} >= {"validation", "pattern"}
    for f in fields.values():
        assert f.methods and all(m.method and m.version for m in f.methods), f
    assert client.health() == "SERVING"
    assert client.health("dqd.v1.DetectionService") == "SERVING"
    with pytest.raises(dqd_client.NotFound):
        client.health("no.such.Service")


# -- persisted jobs ------------------------------------------------------------------------------


def test_persist_and_get_job(client: Client, server: ServerProcess, tmp_path: Path) -> None:
    key = _key()
    stream = client.detect(_batches(1), MATERIAL, job_key=key, persist=True, data_file="d.bin")
    streamed = findings_table(stream)
    assert stream.summary is not None
    job = client.get_job(stream.summary.job_id)
    assert job == client.get_job(job_key=key)
    assert (job.job_id, job.job_key, job.status, job.rows, job.data_file, job.error) == (
        stream.summary.job_id, key, "COMPLETED", 4, "d.bin", "")
    assert job.created_at and job.finished_at
    assert job.summary is not None and (job.summary.rows, job.summary.findings) == (4, 2)
    assert sorted(job.summary.counts, key=lambda c: c.method) == sorted(stream.summary.counts, key=lambda c: c.method)
    stored = Path(job.findings_path)
    assert stored.is_relative_to(server.data_path)
    assert pq.read_table(stored).to_pylist() == streamed.to_pylist()

    with pytest.raises(dqd_client.AlreadyExists, match=f"job key '{key}' already completed as job {job.job_id}"):
        list(client.detect(_batches(1), MATERIAL, job_key=key))

    path = tmp_path / "in.csv"
    path.write_text("material\n78% Viscose - 22% Nylonn\n")
    by_file = client.check_file(path, MATERIAL, persist=True)
    list(by_file)
    assert by_file.summary is not None
    assert client.get_job(by_file.summary.job_id).data_file == "in.csv"  # check_file names the data
    not_persisted = client.detect(_batches(1), MATERIAL)
    list(not_persisted)
    assert not_persisted.summary is not None
    with pytest.raises(dqd_client.NotFound):
        client.get_job(not_persisted.summary.job_id)

    with pytest.raises(dqd_client.NotFound, match="no job with id 'nope'"):
        client.get_job("nope")
    with pytest.raises(dqd_client.InputError, match="exactly one"):
        client.get_job()
    with pytest.raises(dqd_client.InputError, match="exactly one"):
        client.get_job("a", job_key="b")
