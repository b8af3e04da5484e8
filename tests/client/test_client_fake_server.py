"""Client behaviour against an in-process fake server: streaming order, laziness, errors, metadata."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

import dqd_client
from dqd_client import Client, findings_table

MATERIALS = ["100% Cotton", "78% Viscose - 22% Nylon", "78% Viscose - 22% Nylonn", None]


def _batches(n: int, rows: int = 4) -> list[pa.RecordBatch]:
    return [pa.record_batch({"material": [MATERIALS[i % 4] for i in range(rows)], "other": [1] * rows})
            for _ in range(n)]


def test_detect_streams_results_in_order(fake_server) -> None:
    with Client(fake_server.target) as client:
        stream = client.detect(_batches(3), {"material": "material"})
        assert stream.summary is None
        results = list(stream)
    assert [r.batch_index for r in results] == [0, 1, 2]
    assert [r.first_row for r in results] == [0, 4, 8]
    assert all(r.num_rows == 4 for r in results)
    table = pa.Table.from_batches([r.findings for r in results])
    assert table.column("row").to_pylist() == [2, 3, 6, 7, 10, 11]
    assert table.column("value").to_pylist()[:2] == ["78% Viscose - 22% Nylonn", None]
    assert stream.summary is not None and stream.summary.rows == 12 and stream.summary.findings == 6
    assert stream.summary.job_id == "fake-job"
    assert stream.summary.counts[0] == dqd_client.FindingCount("material", "material", "validation", 6)
    assert stream.rows_sent == 12 and stream.rows_done == 12
    assert list(stream) == []                   # exhausted stays exhausted
    assert fake_server.servicer.batches_received == [4, 4, 4]


def test_only_mapped_columns_are_sent_as_text(fake_server, monkeypatch) -> None:
    sent: list[pa.Schema] = []
    import dqd_client._client as client_mod
    real = client_mod.encode_batch

    def spy(batch: pa.RecordBatch) -> bytes:
        sent.append(batch.schema)
        return real(batch)

    monkeypatch.setattr(client_mod, "encode_batch", spy)
    with Client(fake_server.target) as client:
        list(client.detect([pa.record_batch({"x": [1], "material": pa.array(["a"]).dictionary_encode()})],
                           {"material": "material"}))
    assert sent == [pa.schema([("material", pa.string())])]


def test_request_iterator_is_lazy(fake_server) -> None:
    """Findings for batch 0 must arrive before batch 1 is even produced."""
    first_answered = threading.Event()
    produced: list[int] = []

    def gen() -> Iterator[pa.RecordBatch]:
        for i, batch in enumerate(_batches(3)):
            if i == 1:
                assert first_answered.wait(10), "no findings for batch 0 before batch 1 was read"
            produced.append(i)
            yield batch

    with Client(fake_server.target) as client:
        for result in client.detect(gen(), {"material": "material"}):
            if result.batch_index == 0:
                assert produced == [0]
                first_answered.set()
    assert produced == [0, 1, 2]


def test_input_error_cancels_and_is_reraised(fake_server) -> None:
    class Boom(RuntimeError):
        pass

    def gen() -> Iterator[pa.RecordBatch]:
        yield _batches(1)[0]
        raise Boom("disk on fire")

    with Client(fake_server.target) as client:
        stream = client.detect(gen(), {"material": "material"})
        with pytest.raises(Boom, match="disk on fire"):
            list(stream)
        assert stream.summary is None
        with pytest.raises(dqd_client.InputError, match=r"\['material'\] not found in the batch"):
            list(client.detect([pa.record_batch({"x": ["1"]})], {"material": "material"}))


def test_unknown_field_is_invalid_argument(fake_server) -> None:
    with Client(fake_server.target) as client:
        with pytest.raises(dqd_client.InvalidArgument, match="unknown field type.*known: \\['material'\\]") as info:
            list(client.detect(_batches(1), {"material": "no_such_field"}))
        assert info.value.status == "INVALID_ARGUMENT"
        with pytest.raises(dqd_client.InvalidArgument):
            client.detect_rows([{"material": "x"}], {"material": "no_such_field"})


def test_detect_rows(fake_server) -> None:
    with Client(fake_server.target) as client:
        findings, summary = client.detect_rows(
            [{"material": MATERIALS[0]}, {"material": MATERIALS[2]}, {"material": None}, {}],
            {"material": "material"})
    assert [(f.row, f.code, f.value) for f in findings] == [
        (1, "typo", MATERIALS[2]), (2, "missing", None), (3, "missing", None)]
    assert summary.rows == 4 and summary.findings == 3


def test_unary_calls_and_api_key(fake_server) -> None:
    with Client(fake_server.target, api_key="s3cret", timeout=5) as client:
        fields = client.list_fields()
        assert [f.name for f in fields] == ["material"]
        assert fields[0].methods == (dqd_client.MethodInfo("validation", "1", 3),)
        assert client.health() == "SERVING"
        with pytest.raises(dqd_client.NotFound):
            client.health("no.such.Service")
        client.detect_rows([{"material": "x"}], {"material": "material"})
        list(client.detect(_batches(1), {"material": "material"}))
    assert len(fake_server.servicer.metadata) == 3
    assert all(md.get("x-api-key") == "s3cret" for md in fake_server.servicer.metadata)


def test_unavailable_server() -> None:
    with Client("127.0.0.1:1", timeout=5) as client:
        with pytest.raises(dqd_client.Unavailable):
            client.list_fields()
        with pytest.raises(dqd_client.Unavailable):
            list(client.detect(_batches(1), {"material": "material"}))


def test_oversized_batch_is_split(fake_server) -> None:
    big = pa.record_batch({"material": ["x" * 1000 + " Nylonn"] * 1000})  # ~1 MB
    with Client(fake_server.target, max_message_bytes=300_000) as client:
        stream = client.detect([big], {"material": "material"})
        table = findings_table(stream)
    assert len(fake_server.servicer.batches_received) > 1
    assert sum(fake_server.servicer.batches_received) == 1000
    assert table.column("row").to_pylist() == list(range(1000))


def test_cancel_with_context_manager(fake_server) -> None:
    with Client(fake_server.target) as client:
        with client.detect(iter(_batches(1000)), {"material": "material"}) as stream:
            first = next(stream)
        assert first.batch_index == 0 and stream.done
        assert list(stream) == []


def test_protocol_error_on_bad_row_numbers(fake_server) -> None:
    fake_server.servicer.skew_rows = 1
    with Client(fake_server.target) as client:
        with pytest.raises(dqd_client.ProtocolError, match="out of order"):
            list(client.detect(_batches(2), {"material": "material"}))


def test_check_table_and_file(fake_server, tmp_path: Path) -> None:
    table = pa.Table.from_batches(_batches(5, rows=10))
    with Client(fake_server.target) as client:
        results = list(client.check_table(table, {"material": "material"}, batch_size=16))
        assert [r.num_rows for r in results] == [16, 16, 16, 2]
        path = tmp_path / "in.csv"
        path.write_text('material,x\n100% Cotton,1\n,2\n"78% Viscose - 22% Nylonn",3\nN/A,4\n')
        found = findings_table(client.check_file(path, {"material": "material"}, batch_size=2))
    assert found.column("row").to_pylist() == [1, 2]
    assert found.column("value").to_pylist() == [None, "78% Viscose - 22% Nylonn"]


def test_abandoned_stream_is_cancelled(fake_server) -> None:
    import gc
    import time

    produced = [0]

    def endless() -> Iterator[pa.RecordBatch]:
        batch = _batches(1)[0]
        while True:
            produced[0] += 1
            yield batch

    with Client(fake_server.target) as client:
        stream = client.detect(endless(), {"material": "material"})
        next(stream)
        del stream
        gc.collect()
        time.sleep(0.3)
        before = produced[0]
        time.sleep(0.5)
        assert produced[0] == before, "an abandoned stream kept reading its input"


def test_persist_and_get_job(fake_server, tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("material\nx\n")
    with Client(fake_server.target) as client:
        list(client.detect(_batches(1), {"material": "material"}, job_key="k1", persist=True, data_file="d.bin"))
        list(client.check_file(path, {"material": "material"}))
        config, file_config = fake_server.servicer.configs
        assert (config.job_key, config.persist, config.data_file) == ("k1", True, "d.bin")
        assert (file_config.persist, file_config.data_file) == (False, "in.csv")
        job = client.get_job("fake-job")
        assert job == client.get_job(job_key="k1")
        assert (job.status, job.rows, job.findings_path) == ("COMPLETED", 4, "/jobs/fake-job.parquet")
        assert job.summary is not None and job.summary.findings == 2
        with pytest.raises(dqd_client.NotFound, match="no job 'nope'"):
            client.get_job("nope")
        with pytest.raises(dqd_client.InputError, match="exactly one"):
            client.get_job()
        with pytest.raises(dqd_client.InputError, match="exactly one"):
            client.get_job("a", job_key="b")
