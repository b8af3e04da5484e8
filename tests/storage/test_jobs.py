"""JobStore on SQLite and PostgreSQL: lifecycle, failure, job keys under concurrency, stale jobs, results."""
from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from dqd_server.engine.errors import AlreadyExists, InvalidInput, NotFound
from dqd_server.engine.findings import FINDINGS_SCHEMA
from dqd_server.engine.stream import Summary
from dqd_server.storage import STOPPED_ERROR, DetectionMetric, Job, JobHandle, JobStore
from dqd_server.storage.models import utcnow

COLUMNS = {"email": "email", "phone": "phone"}
METHODS = ["validation", "pattern"]
ROWS_PER_BATCH = 60


def make_batch(first_row: int, n: int = ROWS_PER_BATCH) -> pa.RecordBatch:
    """Findings of rows first_row..first_row+n: email/validation, phone/pattern, and emit-all OK rows."""
    out: list[dict[str, object]] = []
    for row in range(first_row, first_row + n):
        if row % 3 == 0:
            out.append(dict(row=row, column="email", field="email", method="validation", code="BAD_FORMAT",
                            message="not an email", confidence=0.95, value=f"user{row % 7}-at-example"))
        if row % 4 == 0:
            out.append(dict(row=row, column="email", field="email", method="pattern", code="OK",
                            message="", confidence=0.0, value=f"u{row}@example.com"))
        if row % 5 == 0:
            code = "TOO_SHORT" if row % 10 else "BAD_CHARS"
            out.append(dict(row=row, column="phone", field="phone", method="pattern", code=code,
                            message="odd phone", confidence=0.55 if row % 10 else 0.15,
                            value=None if row % 20 == 0 else f"{row % 13}"))
    return pa.RecordBatch.from_pylist(out, schema=FINDINGS_SCHEMA)


def expected_counts(batches: list[pa.RecordBatch]) -> Counter[tuple[str, str, str]]:
    counts: Counter[tuple[str, str, str]] = Counter()
    for b in batches:
        for r in b.to_pylist():
            if r["code"] != "OK":
                counts[(r["column"], r["field"], r["method"])] += 1
    return counts


def run_batches(handle: JobHandle, n: int) -> list[pa.RecordBatch]:
    batches = [make_batch(i * ROWS_PER_BATCH) for i in range(n)]
    for b in batches:
        handle.append(b, rows=ROWS_PER_BATCH)
    return batches


def summary_of(handle: JobHandle, batches: list[pa.RecordBatch]) -> Summary:
    counts = expected_counts(batches)
    rows = ROWS_PER_BATCH * len(batches)
    return Summary(job_id=handle.job_id, rows=rows, batches=len(batches), cells_checked=rows * len(COLUMNS),
                   findings=sum(counts.values()), counts=counts, elapsed_seconds=1.25)


def start(store: JobStore, key: str | None = None) -> JobHandle:
    return store.start(job_key=key, data_file="people.csv", columns=COLUMNS, methods=METHODS)


def age_job(store: JobStore, job_id: str, seconds: float) -> None:
    """Pretend the job made no progress for ``seconds``."""
    with store.engine.begin() as conn:
        conn.execute(sa.update(Job.__table__).where(Job.__table__.c.id == job_id)
                     .values(updated_at=utcnow() - timedelta(seconds=seconds)))


def test_lifecycle_complete(store: JobStore) -> None:
    handle = start(store, "nightly-1")
    assert store.get(handle.job_id).status == "running"
    batches: list[pa.RecordBatch] = []
    for i in range(3):
        batches.append(make_batch(i * ROWS_PER_BATCH))
        handle.append(batches[-1], rows=ROWS_PER_BATCH)
        assert store.get(handle.job_id).rows == (i + 1) * ROWS_PER_BATCH  # progress after each batch
    handle.complete(summary_of(handle, batches))
    handle.complete(summary_of(handle, batches))  # idempotent

    job = store.get(job_key="nightly-1")
    counts = expected_counts(batches)
    assert (job.id, job.status, job.rows, job.batches) == (handle.job_id, "completed", 180, 3)
    assert job.findings == sum(counts.values()) and job.cells_checked == 360
    assert job.counts == [{"column": c, "field": f, "method": m, "count": n} for (c, f, m), n in sorted(counts.items())]
    assert job.summary().counts == counts and job.summary().elapsed_seconds == 1.25
    assert job.created_at.tzinfo is not None and job.finished_at is not None
    assert job.finished_at.utcoffset() == timedelta(0) and job.finished_at >= job.created_at
    assert job.error is None and job.columns == COLUMNS and job.methods == METHODS

    table = pq.read_table(job.findings_path)
    assert table.schema.equals(FINDINGS_SCHEMA)
    assert table.equals(pa.Table.from_batches(batches))  # all findings, OK rows included, in order
    assert pq.ParquetFile(job.findings_path).num_row_groups == 3

    with store.engine.connect() as conn:
        metrics = {m.metric_name: m for m in conn.execute(sa.select(DetectionMetric.__table__))}
    assert set(metrics) == {"rows_per_second", "findings_per_row", "elapsed_seconds"}
    assert metrics["rows_per_second"].metric_value == pytest.approx(180 / 1.25)
    assert metrics["findings_per_row"].labels == {"job_id": job.id, "status": "completed"}


def test_detection_results_per_column_and_method(store: JobStore) -> None:
    handle = start(store)
    batches = run_batches(handle, 3)
    handle.complete(summary_of(handle, batches))
    results = {(r.column, r.detection_method): r for r in store.get(handle.job_id).results}
    assert set(results) == {(c, m) for c in COLUMNS for m in METHODS}
    counts = expected_counts(batches)
    for (col, meth), r in results.items():
        assert r.field_name == COLUMNS[col] and r.total_records == 180 and r.data_file == "people.csv"
        assert r.errors_detected == counts[(col, COLUMNS[col], meth)]
        assert r.processing_time == 1.25 and r.timestamp.tzinfo is not None
        scores = r.confidence_scores
        assert scores is not None and scores["count"] == r.errors_detected
        assert sum(scores["histogram"]["counts"]) == r.errors_detected
        assert len(scores["histogram"]["counts"]) == 10
    email = results[("email", "validation")]
    assert email.confidence_scores["mean"] == pytest.approx(0.95)
    assert email.confidence_scores["histogram"]["counts"][9] == email.errors_detected
    assert email.detailed_results["findings_by_code"] == {"BAD_FORMAT": 60}
    examples = email.detailed_results["examples"]["BAD_FORMAT"]
    assert len(examples) == 5 and len(set(examples)) == 5 and all(v.startswith("user") for v in examples)
    phone = results[("phone", "pattern")]
    assert phone.detailed_results["findings_by_code"] == {"BAD_CHARS": 18, "TOO_SHORT": 18}
    scores = phone.confidence_scores
    assert (scores["min"], scores["max"]) == (pytest.approx(0.15), pytest.approx(0.55))
    assert scores["histogram"]["counts"][1] == 18 and scores["histogram"]["counts"][5] == 18
    assert None in phone.detailed_results["examples"]["BAD_CHARS"]  # a missing cell is an example too
    ok_only = results[("email", "pattern")]  # emit-all OK rows are not findings
    assert ok_only.errors_detected == 0 and ok_only.detailed_results["findings_by_code"] == {}
    assert ok_only.confidence_scores["mean"] is None
    assert results[("phone", "validation")].errors_detected == 0


@pytest.mark.parametrize("status", ["failed", "cancelled"])
def test_fail_or_cancel_keeps_what_was_stored(store: JobStore, status: str) -> None:
    handle = start(store, f"key-{status}")
    batches = run_batches(handle, 2)
    handle.fail(status, "client went away")  # type: ignore[arg-type]
    handle.fail("failed", "second call is ignored")
    handle.complete(summary_of(handle, batches))  # also ignored: the job ended
    with pytest.raises(InvalidInput, match="has ended"):
        handle.append(make_batch(120), rows=ROWS_PER_BATCH)

    job = store.get(handle.job_id)
    assert (job.status, job.error, job.rows, job.batches) == (status, "client went away", 120, 2)
    assert job.finished_at is not None and job.elapsed_seconds is not None
    assert job.findings == sum(expected_counts(batches).values())
    assert pq.read_table(job.findings_path).equals(pa.Table.from_batches(batches))
    assert {r.total_records for r in job.results} == {120} and len(job.results) == 4


def test_empty_findings_batches_count_rows_but_write_nothing(store: JobStore) -> None:
    handle = start(store)
    handle.append(make_batch(0, 0), rows=500)
    handle.append(make_batch(500), rows=ROWS_PER_BATCH)
    handle.append(make_batch(0, 0), rows=7, batches=2)
    assert store.get(handle.job_id).rows == 567
    handle.fail("failed", "boom")
    job = store.get(handle.job_id)
    assert (job.rows, job.batches) == (567, 4)
    # A failed job's findings_path is its parts directory: one part per batch that had findings.
    parts = sorted(p.name for p in Path(job.findings_path or "").glob("part-*.parquet"))
    assert parts == ["part-000000001.parquet", "part-schema.parquet"]
    assert pq.read_table(job.findings_path).num_rows == make_batch(500).num_rows


def test_job_without_findings_has_a_readable_empty_file(store: JobStore) -> None:
    handle = start(store)
    handle.append(make_batch(0, 0), rows=10)
    handle.complete(Summary(job_id=handle.job_id, rows=10, batches=1))
    table = pq.read_table(store.get(handle.job_id).findings_path)
    assert table.num_rows == 0 and table.schema.equals(FINDINGS_SCHEMA)


def test_append_and_fail_from_two_threads(store: JobStore) -> None:
    """Cancel arrives on another thread mid-stream: the file stays readable and rows match it."""
    handle = start(store)
    stop = threading.Event()

    def stream() -> None:
        i = 0
        while True:
            try:
                handle.append(make_batch(i * 10, 10), rows=10)
            except InvalidInput:
                return
            i += 1
            if i == 3:
                stop.set()

    t = threading.Thread(target=stream)
    t.start()
    stop.wait(10)
    handle.fail("cancelled", "client cancelled")
    t.join(10)
    job = store.get(handle.job_id)
    stored = pq.read_table(job.findings_path)
    assert job.rows >= 30 and stored.num_rows == sum(make_batch(i * 10, 10).num_rows for i in range(job.rows // 10))


def test_job_key_completed_is_already_exists(store: JobStore) -> None:
    handle = start(store, "done-key")
    handle.complete(summary_of(handle, run_batches(handle, 1)))
    message = rf"'done-key' already completed as job {handle.job_id}; read it with GetJob"
    with pytest.raises(AlreadyExists, match=message):
        start(store, "done-key")


def test_job_key_running_elsewhere_is_already_exists(store: JobStore) -> None:
    start(store, "busy-key")
    with pytest.raises(AlreadyExists, match="is running in another stream"):
        start(store, "busy-key")


def test_failed_job_key_restarts_the_same_job(store: JobStore) -> None:
    first = start(store, "retry-key")
    run_batches(first, 2)
    first.fail("failed", "disk full")
    old_path = Path(store.get(first.job_id).findings_path or "")
    assert old_path.exists()

    again = start(store, "retry-key")
    assert (again.job_id, again.attempt, again.restarted) == (first.job_id, 2, True)
    job = store.get(again.job_id)
    assert (job.status, job.rows, job.error, job.finished_at, job.results) == ("running", 0, None, None, [])
    assert job.findings_path != str(old_path) and not old_path.exists()  # a new findings file
    batches = run_batches(again, 1)
    again.complete(summary_of(again, batches))
    job = store.get(job_key="retry-key")
    assert (job.status, job.rows, job.attempt) == ("completed", 60, 2)
    assert pq.read_table(job.findings_path).num_rows == batches[0].num_rows


def test_stale_running_job_key_is_taken_over(store: JobStore) -> None:
    stale = start(store, "stale-key")
    run_batches(stale, 1)
    age_job(store, stale.job_id, store.stale_after + 5)
    fresh = start(store, "stale-key")
    assert fresh.job_id == stale.job_id and fresh.attempt == 2
    with pytest.raises(AlreadyExists, match="no longer run by this stream"):
        stale.append(make_batch(60), rows=ROWS_PER_BATCH)  # the old stream cannot clobber the new run
    stale.fail("failed", "late")  # quietly ignored: not its job any more
    assert store.get(fresh.job_id).status == "running"


def race(stores: list[JobStore], run: Callable[[JobStore], JobHandle], loses: type[Exception]
         ) -> tuple[list[JobHandle], list[Exception]]:
    """``run`` on every store at the same moment (one thread each): what won, and the ``loses`` errors raised."""
    barrier = threading.Barrier(len(stores))
    won: list[JobHandle] = []
    lost: list[Exception] = []

    def go(s: JobStore) -> None:
        barrier.wait(5)
        try:
            won.append(run(s))
        except loses as exc:
            lost.append(exc)

    threads = [threading.Thread(target=go, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return won, lost


@pytest.mark.parametrize("previous", [None, "failed"])
def test_concurrent_start_of_one_key_gives_one_job(make_store: Callable[..., JobStore], previous: str | None) -> None:
    """Two workers (own engines, own connections) start the same key at once: one wins."""
    stores = [make_store(), make_store()]
    for n in range(3):
        key = f"race-{previous}-{n}"
        if previous:
            start(stores[0], key).fail("failed", "try again")
        won, lost = race(stores, lambda s: start(s, key), AlreadyExists)  # noqa: B023 - run within the iteration
        assert len(won) == 1 and len(lost) == 1, (won, lost)
        assert "running in another stream" in str(lost[0])
        with stores[0].engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(Job.__table__)
                                .where(Job.__table__.c.job_key == key)).scalar_one() == 1
        assert stores[0].get(job_key=key).status == "running"


def test_mark_stale_running_failed(store: JobStore) -> None:
    crashed = start(store, "crashed")
    run_batches(crashed, 1)
    live = start(store)
    done = start(store)
    done.complete(Summary(job_id=done.job_id))
    age_job(store, crashed.job_id, 3600)
    age_job(store, done.job_id, 3600)

    assert store.mark_stale_running_failed(older_than=600) == 1
    job = store.get(crashed.job_id)
    assert (job.status, job.error, job.rows) == ("failed", STOPPED_ERROR, 60)
    assert job.finished_at is not None and job.finished_at.tzinfo == timezone.utc
    assert store.get(live.job_id).status == "running" and store.get(done.job_id).status == "completed"
    assert store.mark_stale_running_failed(older_than=600) == 0
    assert start(store, "crashed").restarted  # a failed key can be run again


def test_get_unknown_job_is_not_found(store: JobStore) -> None:
    with pytest.raises(NotFound, match="no job with id 'nope'"):
        store.get("nope")
    with pytest.raises(NotFound, match="no job with job key 'nokey'"):
        store.get(job_key="nokey")
    with pytest.raises(InvalidInput, match="exactly one"):
        store.get()
    with pytest.raises(InvalidInput, match="job_key must be at most 255"):
        start(store, "k" * 256)
    assert start(store, "").job_key is None  # proto3's empty string: no key


def test_get_does_not_wait_for_a_writer(store: JobStore) -> None:
    """GetJob stays fast while another transaction holds the (SQLite) write lock."""
    handle = start(store)
    with store.engine.begin() as writer:
        writer.execute(sa.update(Job.__table__).where(Job.__table__.c.id == handle.job_id).values(batches=1))
        began = time.perf_counter()
        assert store.get(handle.job_id).batches == 0  # sees the last committed state
        assert time.perf_counter() - began < 2
