"""Resumable Detect streams across two dqd replicas sharing one PostgreSQL database and results directory.

A replica is SIGKILLed mid-stream; the client (given both targets) reconnects to the other one,
which takes the job over once its heartbeat is stale and continues it from the last stored batch.
The job's stored findings (every attempt's) and the results the caller iterated must then equal
those of an uninterrupted run: no row twice, none missing. Heartbeats are sped up (0.5 s, takeover
after 2 s) so the tests stay short.
"""
from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import dqd_client
import grpc
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from dqd_client import Client, findings_table

from dqd_server._proto import detection_pb2 as pb
from dqd_server._proto import detection_pb2_grpc
from dqd_server.catalog import CATALOG_COLUMNS, generate_catalog, inject_errors
from dqd_server.engine.ipc import decode_batch, encode_batch
from dqd_server.launcher import ServerProcess

pytestmark = pytest.mark.timeout(180)

ENV = {"LOG_LEVEL": "WARNING", "JOB_HEARTBEAT_S": "0.5", "JOB_TAKEOVER_AFTER_S": "2"}
ROWS, BATCH_ROWS = 20_000, 1_000
KEY_FIELDS = ("row", "column", "method", "code")


@pytest.fixture(scope="module")
def parts() -> list[pa.RecordBatch]:
    table, injected = inject_errors(generate_catalog(ROWS, seed=7), seed=7)
    assert injected.num_rows > 100
    batches = table.select(list(CATALOG_COLUMNS)).to_batches(max_chunksize=BATCH_ROWS)
    assert len(batches) == ROWS // BATCH_ROWS
    return batches


def _start_replicas(pg_server, data_path: str) -> list[ServerProcess]:  # noqa: ANN001 - tests/conftest.py PgServer
    env = {**ENV, "DATABASE_URL": pg_server.new_database(), "DATA_PATH": data_path}
    servers: list[ServerProcess] = []
    try:
        for _ in range(2):
            servers.append(ServerProcess(env=env).start())
    except BaseException:
        for srv in servers:
            srv.stop()
        raise
    return servers


@pytest.fixture
def replicas(pg_server, tmp_path) -> Iterator[list[ServerProcess]]:  # noqa: ANN001
    """Two fresh replicas (one may get killed): own database, shared DATA_PATH."""
    servers = _start_replicas(pg_server, str(tmp_path / "data"))
    yield servers
    for srv in servers:
        srv.stop()


@pytest.fixture(scope="module")
def pair(pg_server, tmp_path_factory) -> Iterator[list[ServerProcess]]:  # noqa: ANN001
    """Two replicas shared by the tests that kill none."""
    servers = _start_replicas(pg_server, str(tmp_path_factory.mktemp("resume") / "data"))
    yield servers
    for srv in servers:
        assert srv.alive(), "a replica died:\n" + "".join(srv.output[-40:])
        srv.stop()


def _key(what: str) -> str:
    return f"{what}-{uuid.uuid4().hex[:10]}"


def _stored(client: Client, job_key: str) -> pa.Table:
    job = client.get_job(job_key=job_key)
    assert job.status == "COMPLETED", job
    return pq.read_table(job.findings_path)


def _keys(table: pa.Table) -> list[tuple[int, str, str, str]]:
    return list(zip(*(table.column(n).to_pylist() for n in KEY_FIELDS)))


def _canon(table: pa.Table) -> pa.Table:
    """Findings in one order: within a row the engine's order may vary with its cache's state."""
    return table.sort_by([(n, "ascending") for n in KEY_FIELDS])


def _baseline(client: Client, parts: list[pa.RecordBatch]) -> tuple[pa.Table, pa.Table]:
    """An uninterrupted run on a fresh job: (the findings the caller got, the findings stored)."""
    key = _key("uninterrupted")
    streamed = findings_table(client.detect(iter(parts), CATALOG_COLUMNS, job_key=key, persist=True))
    stored = _stored(client, key)
    assert stored.num_rows == streamed.num_rows > 500
    return streamed, stored


def _assert_same_as_baseline(results: list[dqd_client.BatchResult], stored: pa.Table,
                             baseline: tuple[pa.Table, pa.Table]) -> None:
    streamed_ref, stored_ref = baseline
    assert [r.batch_index for r in results] == list(range(ROWS // BATCH_ROWS))  # each batch once, in order
    assert [r.first_row for r in results] == list(range(0, ROWS, BATCH_ROWS))
    assert all(r.stored for r in results)
    assert _canon(findings_table(results)).equals(_canon(streamed_ref))  # what the caller got: as uninterrupted
    keys = _keys(stored)
    assert len(keys) == len(set(keys)), "a finding is stored twice"
    assert set(keys) == set(_keys(stored_ref))
    assert _canon(stored).equals(_canon(stored_ref))
    rows = stored.column("row").to_pylist()
    assert rows == sorted(rows)  # one file, batch order, every attempt's findings


def _by_target(servers: list[ServerProcess]) -> dict[str, ServerProcess]:
    return {srv.target: srv for srv in servers}


def test_killed_replica_mid_stream_resumes_on_the_other(replicas: list[ServerProcess],
                                                         parts: list[pa.RecordBatch]) -> None:
    servers = _by_target(replicas)
    with Client([s.target for s in replicas], timeout=30) as client:
        baseline = _baseline(client, parts)
        answered = threading.Semaphore(3)  # the input runs at most 3 batches ahead of the answers

        def paced() -> Iterator[pa.RecordBatch]:
            for part in parts:
                assert answered.acquire(timeout=60)
                yield part

        key = _key("interrupted")
        stream = client.detect(paced(), CATALOG_COLUMNS, job_key=key, resume=True)
        results, killed = [], None
        for result in stream:
            results.append(result)
            answered.release()
            if len(results) == 4:
                killed = servers[stream.target]
                killed.proc.kill()
                killed.proc.wait(10)
        assert killed is not None and not killed.alive()
        assert stream.reconnects >= 1 and stream.target != killed.target
        assert stream.summary is not None and stream.summary.job_id == stream.job_id
        assert (stream.summary.rows, stream.summary.batches) == (ROWS, ROWS // BATCH_ROWS)
        assert stream.summary.findings == baseline[0].num_rows

        job = client.get_job(job_key=key)
        assert (job.status, job.rows, job.job_id) == ("COMPLETED", ROWS, stream.job_id)
        assert job.summary is not None and job.summary.findings == baseline[0].num_rows
        _assert_same_as_baseline(results, _stored(client, key), baseline)


def test_answers_lost_with_the_replica_are_re_sent(replicas: list[ServerProcess],
                                                    parts: list[pa.RecordBatch]) -> None:
    """The caller stops reading while the server stores more batches; then the server dies. The
    answers of the batches it stored but the caller never got come back (re-sent from storage)."""
    servers = _by_target(replicas)
    with Client([s.target for s in replicas], timeout=30) as client:
        baseline = _baseline(client, parts)
        key = _key("lost-answers")
        killed_now = threading.Event()

        def held_open() -> Iterator[pa.RecordBatch]:  # the job cannot complete before the kill
            yield from parts[:8]
            assert killed_now.wait(60)

        stream = client.detect(held_open(), CATALOG_COLUMNS, job_key=key, resume=True)
        results = [next(stream), next(stream)]
        deadline = time.monotonic() + 30
        while client.get_job(job_key=key).rows < 8 * BATCH_ROWS:  # the server stored all 8 meanwhile
            assert time.monotonic() < deadline
            time.sleep(0.05)
        killed = servers[stream.target]
        killed.proc.kill()
        killed.proc.wait(10)
        killed_now.set()
        results += list(stream)
        assert [r.batch_index for r in results] == list(range(8))
        assert _canon(findings_table(results)).equals(
            _canon(findings_table(client.detect(iter(parts[:8]), CATALOG_COLUMNS, persist=False))))
        # Nothing was yielded twice or lost. (gRPC drops the answers it had buffered but the caller
        # had not read when the connection breaks, so here they come back from storage.)
        assert stream.reconnects >= 1 and 1 <= stream.replayed <= 6
        job = client.get_job(job_key=key)
        assert (job.status, job.rows) == ("COMPLETED", 8 * BATCH_ROWS)
        stored = _stored(client, key)
        assert _canon(stored).equals(_canon(baseline[1].filter(pc.less(baseline[1]["row"], 8 * BATCH_ROWS))))


def test_resume_waits_for_a_live_owner_then_takes_over(replicas: list[ServerProcess], parts: list[pa.RecordBatch],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream owns the job on replica A and stays open: a resume is refused (ALREADY_EXISTS with a
    retry hint, retried by the client) until A is killed; then it continues the owner's batches."""
    owner_srv, other = replicas
    key = _key("owned")
    hold = threading.Event()

    def owner_requests() -> Iterator[pb.DetectRequest]:
        yield pb.DetectRequest(config=pb.DetectConfig(columns=CATALOG_COLUMNS, job_key=key, resume=True))
        for part in parts[:3]:
            yield pb.DetectRequest(arrow_batch=encode_batch(part))
        hold.wait(60)  # keeps the stream open: the owner stays alive and heartbeats

    with grpc.insecure_channel(owner_srv.target) as ch, Client(other.target, timeout=30) as client:
        owner = detection_pb2_grpc.DetectionServiceStub(ch).Detect(owner_requests())
        first = next(owner)
        assert first.WhichOneof("payload") == "started" and first.started.next_batch == 0
        answers = [next(owner).findings for _ in range(3)]
        assert [a.batch_index for a in answers] == [0, 1, 2] and all(a.stored for a in answers)

        # One plain call: refused with the retry hint, while the owner heartbeats.
        stub = detection_pb2_grpc.DetectionServiceStub(client._channel)
        with pytest.raises(grpc.RpcError) as info:
            list(stub.Detect(iter([pb.DetectRequest(config=pb.DetectConfig(
                columns=CATALOG_COLUMNS, job_key=key, resume=True))]), timeout=10))
        assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert "running in another stream" in info.value.details() and "retry after" in info.value.details()
        hint = dict(info.value.trailing_metadata())["dqd-retry-after-ms"]
        assert 0 < int(hint) <= 2000

        # The client retries (bounded) while the owner lives: with a tiny budget it gives up.
        monkeypatch.setattr(dqd_client._client, "RESUME_TRIES", 2)
        with pytest.raises(dqd_client.AlreadyExists, match=r"retry after .* \(gave up after 2 reconnect tries\)"):
            list(client.detect(iter(parts), CATALOG_COLUMNS, job_key=key, resume=True))
        monkeypatch.undo()

        # Kill the owner while the client retries: it takes over and finishes the job.
        killer = threading.Timer(1.0, owner_srv.proc.kill)
        killer.start()
        try:
            stream = client.detect(iter(parts), CATALOG_COLUMNS, job_key=key, resume=True)
            results = list(stream)
        finally:
            killer.cancel()
            hold.set()
        assert stream.reconnects >= 1  # at least one refusal was retried
        assert [r.batch_index for r in results] == list(range(20))
        assert stream.replayed == 3  # the owner's stored batches came back from storage
        assert _canon(findings_table(results)).equals(
            _canon(findings_table(client.detect(iter(parts), CATALOG_COLUMNS))))  # as a plain, unpersisted run
        job = client.get_job(job_key=key)
        assert (job.status, job.rows) == ("COMPLETED", ROWS)
        stored = _stored(client, key)
        assert sorted(_keys(stored)) == sorted(_keys(findings_table(results)))


def test_resume_replays_stored_findings_and_continues(pair: list[ServerProcess],
                                                      parts: list[pa.RecordBatch]) -> None:
    """The protocol on one replica: a stream that failed after 3 stored batches is resumed on the
    other with replay_from_batch=1: started(3), re-sent batches 1-2 as stored, then batch 3 on."""
    key = _key("replay")
    first_answers: list[pb.BatchFindings] = []
    with grpc.insecure_channel(pair[0].target) as ch:
        stub = detection_pb2_grpc.DetectionServiceStub(ch)

        def failing() -> Iterator[pb.DetectRequest]:
            yield pb.DetectRequest(config=pb.DetectConfig(columns=CATALOG_COLUMNS, job_key=key))
            for part in parts[:3]:
                yield pb.DetectRequest(arrow_batch=encode_batch(part))
            yield pb.DetectRequest(arrow_batch=b"not arrow")

        with pytest.raises(grpc.RpcError) as info:
            for answer in stub.Detect(failing(), timeout=30):
                first_answers.append(answer.findings)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert [a.stored for a in first_answers] == [True] * 3
        job = stub.GetJob(pb.GetJobRequest(job_key=key), timeout=10)
        assert (job.status, job.rows) == (pb.JOB_STATUS_FAILED, 3 * BATCH_ROWS)
        assert pq.read_table(job.findings_path).num_rows == sum(a.num_findings for a in first_answers)

    with grpc.insecure_channel(pair[1].target) as ch:
        stub = detection_pb2_grpc.DetectionServiceStub(ch)

        def resumed() -> Iterator[pb.DetectRequest]:
            yield pb.DetectRequest(config=pb.DetectConfig(columns=CATALOG_COLUMNS, job_key=key, resume=True,
                                                          replay_from_batch=1))
            for part in parts[3:]:
                yield pb.DetectRequest(arrow_batch=encode_batch(part))

        answers = list(stub.Detect(resumed(), timeout=60))
        started = answers[0].started
        assert (started.job_id, started.next_batch, started.next_row) == (job.job_id, 3, 3 * BATCH_ROWS)
        replayed = [a.findings for a in answers[1:3]]
        assert [(a.batch_index, a.first_row, a.num_rows, a.stored) for a in replayed] == [
            (1, 1000, 1000, True), (2, 2000, 1000, True)]
        assert [decode_batch(a.arrow_batch).equals(decode_batch(b.arrow_batch)) for a, b in
                zip(replayed, first_answers[1:])] == [True, True]
        rest = [a.findings for a in answers[3:-1]]
        assert [(a.batch_index, a.first_row, a.stored) for a in rest] == [
            (i, i * BATCH_ROWS, True) for i in range(3, 20)]
        summary = answers[-1].summary
        assert (summary.rows, summary.batches, summary.job_id) == (ROWS, 20, job.job_id)
        job = stub.GetJob(pb.GetJobRequest(job_key=key), timeout=10)
        assert (job.status, job.rows, job.error) == (pb.JOB_STATUS_COMPLETED, ROWS, "")
        stored = pq.read_table(job.findings_path)
        assert stored.num_rows == summary.findings == job.summary.findings
        rows = stored.column("row").to_pylist()
        assert rows == sorted(rows)  # batch order, every attempt's parts in one file


def test_client_continues_a_stopped_job(pair: list[ServerProcess], parts: list[pa.RecordBatch]) -> None:
    """A program stopped mid-job (here: its input failed) is run again with resume: the input the job
    holds is skipped, its stored results come first, and the caller sees the whole job once."""
    with Client([s.target for s in pair], timeout=30) as client:
        baseline = _baseline(client, parts)
        key = _key("stopped")

        def breaks_after(n: int) -> Iterator[pa.RecordBatch]:
            yield from parts[:n]
            raise OSError("disk gone")

        stream = client.detect(breaks_after(6), CATALOG_COLUMNS, job_key=key, resume=True)
        with pytest.raises(OSError, match="disk gone"):
            for _ in stream:
                pass
        deadline = time.monotonic() + 10
        while (job := client.get_job(job_key=key)).status == "RUNNING":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert job.status == "CANCELLED" and job.rows % BATCH_ROWS == 0 and job.rows <= 6 * BATCH_ROWS

        again = client.detect(iter(parts), CATALOG_COLUMNS, job_key=key, resume=True)
        results = list(again)
        assert again.replayed == job.rows // BATCH_ROWS
        _assert_same_as_baseline(results, _stored(client, key), baseline)


def test_resume_of_a_new_key_starts_it(pair: list[ServerProcess], parts: list[pa.RecordBatch]) -> None:
    key = _key("new")
    with grpc.insecure_channel(pair[1].target) as ch:
        stub = detection_pb2_grpc.DetectionServiceStub(ch)
        requests = [pb.DetectRequest(config=pb.DetectConfig(columns=CATALOG_COLUMNS, job_key=key, resume=True,
                                                            replay_from_batch=0))]
        requests += [pb.DetectRequest(arrow_batch=encode_batch(p)) for p in parts[:2]]
        answers = list(stub.Detect(iter(requests), timeout=30))
    assert answers[0].WhichOneof("payload") == "started"
    assert (answers[0].started.next_batch, answers[0].started.next_row) == (0, 0)
    assert [a.findings.batch_index for a in answers[1:3]] == [0, 1] and answers[3].summary.rows == 2 * BATCH_ROWS
    assert answers[0].started.job_id == answers[3].summary.job_id


def test_resume_refusals(pair: list[ServerProcess], parts: list[pa.RecordBatch]) -> None:
    key = _key("done")
    with Client(pair[0].target, timeout=30) as client:
        done = client.detect(iter(parts[:1]), CATALOG_COLUMNS, job_key=key, resume=True)
        list(done)
        assert done.summary is not None and client.get_job(job_key=key).status == "COMPLETED"
        with pytest.raises(dqd_client.AlreadyExists, match=f"already completed as job {done.summary.job_id}"):
            list(client.detect(iter(parts[:1]), CATALOG_COLUMNS, job_key=key, resume=True))
        with pytest.raises(dqd_client.InputError, match="needs a job_key"):
            client.detect(iter(parts[:1]), CATALOG_COLUMNS, resume=True)
        # A stopped job resumed with other columns: refused, it would mix two different checks.
        stopped = _key("cols")
        with pytest.raises(OSError, match="no input"):
            list(client.detect(_failing_input(), CATALOG_COLUMNS, job_key=stopped, resume=True))
        with pytest.raises(dqd_client.InvalidArgument, match="was started with columns"):
            list(client.detect(iter(parts[:1]), {"material": "material"}, job_key=stopped, resume=True))

    with grpc.insecure_channel(pair[0].target) as ch:
        stub = detection_pb2_grpc.DetectionServiceStub(ch)
        for config, needle in [(pb.DetectConfig(columns=CATALOG_COLUMNS, resume=True), "resume needs a job_key"),
                               (pb.DetectConfig(columns=CATALOG_COLUMNS, job_key=_key("r"), replay_from_batch=0),
                                "replay_from_batch only applies with resume"),
                               (pb.DetectConfig(columns=CATALOG_COLUMNS, job_key=_key("r"), resume=True,
                                                replay_from_batch=5), "cannot re-send findings from batch 5")]:
            with pytest.raises(grpc.RpcError) as info:
                list(stub.Detect(iter([pb.DetectRequest(config=config)]), timeout=10))
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
            assert needle in info.value.details()


def _failing_input() -> Iterator[pa.RecordBatch]:
    raise OSError("no input")
    yield  # a generator


# -- the client's reconnect logic against a scripted in-process server ------------------------------
#
# Deterministic versions of what a dying replica can do to a stream: stored batches whose answers
# never arrived, a summary followed by a broken connection, a live owner, a server without resume.

ROWS_PER_PART = 10


def _part(i: int) -> pa.RecordBatch:
    return pa.record_batch({"material": [f"m{i}-{r}" for r in range(ROWS_PER_PART)]})


def _answer(i: int, *, stored: bool = True) -> pb.DetectResponse:
    findings = pa.RecordBatch.from_pylist(
        [dict(row=i * ROWS_PER_PART, column="material", field="material", method="pattern", code="X",
              message=f"batch {i}", confidence=0.5, value=f"m{i}-0")], schema=dqd_client.FINDINGS_SCHEMA)
    return pb.DetectResponse(findings=pb.BatchFindings(
        batch_index=i, first_row=i * ROWS_PER_PART, num_rows=ROWS_PER_PART, num_findings=1,
        arrow_batch=dqd_client._models.encode_batch(findings), stored=stored))


def _started(next_batch: int) -> pb.DetectResponse:
    return pb.DetectResponse(started=pb.StreamStarted(job_id="J", next_batch=next_batch,
                                                      next_row=next_batch * ROWS_PER_PART))


def _summary(n: int) -> pb.DetectResponse:
    return pb.DetectResponse(summary=pb.DetectSummary(rows=n * ROWS_PER_PART, batches=n, findings=n, job_id="J"))


def _answer_all(batches, first: int = 0):  # noqa: ANN001, ANN202
    """Answer every remaining batch (numbered from ``first``), then the summary: a server that just works."""
    n = first
    for _ in batches:
        yield _answer(n)
        n += 1
    yield _summary(n)


class Scripted(detection_pb2_grpc.DetectionServiceServicer):
    """Each Detect call runs the next script: ``script(config, batches, context)`` yields answers;
    ``batches`` is an iterator over the call's decoded input batches (recorded in ``received``)."""

    def __init__(self, *scripts: Callable[..., Iterator[pb.DetectResponse]]) -> None:
        self.scripts = list(scripts)
        self.configs: list[pb.DetectConfig] = []
        self.received: list[list[pa.RecordBatch]] = []

    def Detect(self, request_iterator, context):  # noqa: ANN001, ANN201, N802 - the gRPC servicer API
        config = next(request_iterator).config
        self.configs.append(config)
        got: list[pa.RecordBatch] = []
        self.received.append(got)

        def batches() -> Iterator[pa.RecordBatch]:
            for request in request_iterator:
                got.append(decode_batch(request.arrow_batch))
                yield got[-1]

        yield from self.scripts[len(self.configs) - 1](config, batches(), context)


@pytest.fixture
def scripted() -> Iterator[Callable[..., tuple[Scripted, str]]]:
    servers: list[grpc.Server] = []

    def serve(*scripts: Callable[..., Iterator[pb.DetectResponse]]) -> tuple[Scripted, str]:
        servicer = Scripted(*scripts)
        server = grpc.server(ThreadPoolExecutor(4))
        detection_pb2_grpc.add_DetectionServiceServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return servicer, f"127.0.0.1:{port}"

    yield serve
    for server in servers:
        server.stop(None)


def test_client_re_sends_only_unstored_batches_and_yields_each_answer_once(scripted) -> None:  # noqa: ANN001
    def dies_after_storing_three(config, batches, context):  # noqa: ANN001, ANN202
        assert config.resume and config.persist and config.replay_from_batch == 0
        yield _started(0)
        for i, _ in enumerate(batches):
            if i == 0:
                yield _answer(0)
            if i == 2:  # batches 1 and 2 are stored, their answers are lost with the server
                context.abort(grpc.StatusCode.UNAVAILABLE, "replica died")

    def continues(config, batches, context):  # noqa: ANN001, ANN202
        assert config.resume and config.replay_from_batch == 1
        yield _started(3)
        yield _answer(1)
        yield _answer(2)
        yield from _answer_all(batches, 3)

    first, a = scripted(dies_after_storing_three)
    second, b = scripted(continues)
    inputs = [_part(i) for i in range(8)]
    with Client([a, b]) as client:
        stream = client.detect(iter(inputs), {"material": "material"}, job_key="k", resume=True)
        results = list(stream)
    assert [r.batch_index for r in results] == list(range(8))
    assert [r.findings.column("message").to_pylist() for r in results] == [[f"batch {i}"] for i in range(8)]
    assert (stream.reconnects, stream.replayed, stream.target, stream.summary.batches) == (1, 2, b, 8)
    # The second server got exactly the batches it had not stored, with the same rows.
    assert [t.column("material")[0].as_py() for t in second.received[0]] == [f"m{i}-0" for i in range(3, 8)]
    assert len(first.received[0]) >= 3 and stream.rows_sent == 80


def test_client_finishes_when_the_job_completed_before_the_connection_broke(scripted) -> None:  # noqa: ANN001
    def completes_then_breaks(config, batches, context):  # noqa: ANN001, ANN202
        yield _started(0)
        yield from _answer_all(batches)
        context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset after the summary")

    def already_completed(config, batches, context):  # noqa: ANN001, ANN202
        context.abort(grpc.StatusCode.ALREADY_EXISTS, "job key 'k' already completed as job J; read it with GetJob")
        yield  # a generator

    _, a = scripted(completes_then_breaks, already_completed)
    with Client(a) as client:
        stream = client.detect(iter([_part(0), _part(1)]), {"material": "material"}, job_key="k", resume=True)
        assert [r.batch_index for r in stream] == [0, 1]
    assert stream.summary is not None and stream.summary.batches == 2 and stream.reconnects == 1


def test_client_waits_out_a_live_owner_on_the_same_target(scripted) -> None:  # noqa: ANN001
    def busy(config, batches, context):  # noqa: ANN001, ANN202
        context.set_trailing_metadata((("dqd-retry-after-ms", "300"),))
        context.abort(grpc.StatusCode.ALREADY_EXISTS, "job key 'k' is running in another stream as job J; "
                                                      "retry after 0.3 s")
        yield  # a generator

    def serves(config, batches, context):  # noqa: ANN001, ANN202
        yield _started(0)
        yield from _answer_all(batches)

    servicer, a = scripted(busy, serves)
    _, never = scripted()
    began = time.monotonic()
    with Client([a, never]) as client:
        stream = client.detect(iter([_part(0)]), {"material": "material"}, job_key="k", resume=True)
        assert [r.batch_index for r in stream] == [0]
    assert time.monotonic() - began >= 0.25  # waited for the hint
    assert stream.target == a and stream.reconnects == 1 and len(servicer.configs) == 2


def test_client_refuses_a_server_without_resume(scripted, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    def old_server(config, batches, context):  # noqa: ANN001, ANN202
        for i, _ in enumerate(batches):  # waits for batches; the client waits for StreamStarted
            yield _answer(i, stored=False)

    def answers_at_once(config, batches, context):  # noqa: ANN001, ANN202
        yield _answer(0, stored=False)

    monkeypatch.setattr(dqd_client._client, "RESUME_STARTED_TIMEOUT_S", 0.5)
    _, a = scripted(old_server, answers_at_once)
    with Client(a) as client:
        for _ in range(2):
            with pytest.raises(dqd_client.ProtocolError, match="does not support resume"):
                list(client.detect(iter([_part(0)]), {"material": "material"}, job_key="k", resume=True))


def test_client_gives_up_after_its_tries(scripted, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(dqd_client._client, "RESUME_FIRST_DELAY_S", 0.01)
    monkeypatch.setattr(dqd_client._client, "RESUME_MAX_DELAY_S", 0.02)

    def down(config, batches, context):  # noqa: ANN001, ANN202
        context.abort(grpc.StatusCode.UNAVAILABLE, "loading rules")
        yield  # a generator

    servicer, a = scripted(*[down] * 11)
    with Client(a) as client:
        with pytest.raises(dqd_client.Unavailable, match=r"gave up after 10 reconnect tries"):
            list(client.detect(iter([_part(0)]), {"material": "material"}, job_key="k", resume=True))
    assert len(servicer.configs) == 11
