"""Persisted jobs through a real server: GetJob on SQLite and PostgreSQL, job keys, a killed client."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dqd_server._proto import detection_pb2 as pb
from dqd_server._proto import detection_pb2_grpc
from dqd_server.engine.ipc import encode_batch
from dqd_server.launcher import ServerProcess

GOOD = ["100% Cotton", "78% Viscose - 22% Nylon", "95% Cotton - 5% Elastane"]


def batch(n: int, bad_every: int = 10) -> pa.RecordBatch:
    material = [("78% Viscose - 22% Nylonn" if i % bad_every == 0 else GOOD[i % 3]) for i in range(n)]
    return pa.record_batch({"material": material})


def config(**kw: object) -> pb.DetectRequest:
    return pb.DetectRequest(config=pb.DetectConfig(columns={"material": "material"}, **kw))


def requests(cfg: pb.DetectRequest, n_batches: int, rows: int = 100) -> Iterator[pb.DetectRequest]:
    yield cfg
    for _ in range(n_batches):
        yield pb.DetectRequest(arrow_batch=encode_batch(batch(rows)))


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def job_server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    env = {"LOG_LEVEL": "WARNING"}
    if request.param == "postgresql":
        env["DATABASE_URL"] = request.getfixturevalue("pg_server").new_database()
    with ServerProcess(env=env) as srv:
        yield srv


@pytest.fixture(scope="module")
def job_stub(job_server: ServerProcess) -> Iterator[detection_pb2_grpc.DetectionServiceStub]:
    with grpc.insecure_channel(job_server.target) as ch:
        yield detection_pb2_grpc.DetectionServiceStub(ch)


def test_persisted_job_reads_back(job_server: ServerProcess, job_stub) -> None:  # noqa: ANN001
    out = list(job_stub.Detect(requests(config(persist=True, data_file="shop.csv"), 3), timeout=30))
    summary = out[-1].summary
    job = job_stub.GetJob(pb.GetJobRequest(job_id=summary.job_id), timeout=10)
    assert job.status == pb.JOB_STATUS_COMPLETED and job.rows == 300 and job.data_file == "shop.csv"
    assert job.summary.findings == summary.findings == 30 and job.finished_at
    assert [(c.column, c.method, c.count) for c in job.summary.counts] == [("material", "pattern", 30)]
    stored = pq.read_table(job.findings_path)
    assert stored.num_rows == 30 and stored.column("row").to_pylist() == list(range(0, 300, 10))


def test_job_key_is_idempotent(job_stub) -> None:  # noqa: ANN001
    key = f"nightly-{time.time_ns()}"
    first = list(job_stub.Detect(requests(config(job_key=key), 1), timeout=30))[-1].summary
    with pytest.raises(grpc.RpcError) as info:
        list(job_stub.Detect(requests(config(job_key=key), 1), timeout=30))
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert first.job_id in info.value.details()
    by_key = job_stub.GetJob(pb.GetJobRequest(job_key=key), timeout=10)
    assert by_key.job_id == first.job_id and by_key.status == pb.JOB_STATUS_COMPLETED


def test_get_job_errors(job_stub) -> None:  # noqa: ANN001
    with pytest.raises(grpc.RpcError) as info:
        job_stub.GetJob(pb.GetJobRequest(job_id="nope"), timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as info:
        job_stub.GetJob(pb.GetJobRequest(), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_bad_input_mid_stream_marks_job_failed(job_stub) -> None:  # noqa: ANN001
    key = f"bad-{time.time_ns()}"

    def reqs() -> Iterator[pb.DetectRequest]:
        yield from requests(config(job_key=key), 2)
        yield pb.DetectRequest(arrow_batch=b"garbage")

    with pytest.raises(grpc.RpcError):
        list(job_stub.Detect(reqs(), timeout=30))
    job = job_stub.GetJob(pb.GetJobRequest(job_key=key), timeout=10)
    assert job.status == pb.JOB_STATUS_FAILED and job.rows == 200 and "Arrow IPC" in job.error
    assert pq.read_table(job.findings_path).num_rows == 20  # the stored batches stay readable
    again = list(job_stub.Detect(requests(config(job_key=key), 1), timeout=30))[-1].summary  # a retry
    assert again.job_id == job.job_id
    assert job_stub.GetJob(pb.GetJobRequest(job_key=key), timeout=10).status == pb.JOB_STATUS_COMPLETED


KILLED_CLIENT = textwrap.dedent('''
    import sys, time
    import grpc, pyarrow as pa
    from dqd_server._proto import detection_pb2 as pb, detection_pb2_grpc
    from dqd_server.engine.ipc import encode_batch
    rows = pa.record_batch({"material": ["100% Cotton"] * 500})
    def reqs():
        yield pb.DetectRequest(config=pb.DetectConfig(columns={"material": "material"}, job_key=sys.argv[2]))
        for _ in range(4):
            yield pb.DetectRequest(arrow_batch=encode_batch(rows))
        time.sleep(60)  # hold the stream open; the test kills this process
    with grpc.insecure_channel(sys.argv[1]) as ch:
        for resp in detection_pb2_grpc.DetectionServiceStub(ch).Detect(reqs()):
            print(resp.findings.batch_index, flush=True)
''')


def test_killed_client_leaves_job_cancelled_with_its_rows(job_server: ServerProcess, job_stub) -> None:  # noqa: ANN001
    key = f"killed-{time.time_ns()}"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_CLIENT, job_server.target, key],
                            stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        seen = [proc.stdout.readline().strip() for _ in range(4)]
        assert seen == ["0", "1", "2", "3"]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            job = job_stub.GetJob(pb.GetJobRequest(job_key=key), timeout=10)
            if job.status != pb.JOB_STATUS_RUNNING:
                break
            time.sleep(0.1)
        assert job.status == pb.JOB_STATUS_CANCELLED, job
        assert job.rows == 2000 and "cancelled after 2000 rows" in job.error
        assert pq.read_table(job.findings_path).num_rows == 0
    finally:
        proc.kill()
