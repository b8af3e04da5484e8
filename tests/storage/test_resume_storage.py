"""JobStore resume on SQLite and PostgreSQL: continuing stored batches, takeover, heartbeats, parts, recovery."""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from test_jobs import COLUMNS, METHODS, ROWS_PER_BATCH, age_job, expected_counts, make_batch, race, summary_of

from dqd_server.engine.errors import AlreadyExists, InvalidInput
from dqd_server.engine.findings import FINDINGS_SCHEMA
from dqd_server.engine.stream import Summary
from dqd_server.storage import (
    JOB_HEARTBEAT_S,
    JOB_TAKEOVER_AFTER_S,
    Job,
    JobBatch,
    JobBusy,
    JobHandle,
    JobStore,
    StorageError,
)
from dqd_server.storage.jobs import part_name


def start(store: JobStore, key: str | None, *, resume: bool = True, columns: dict[str, str] = COLUMNS) -> JobHandle:
    return store.start(job_key=key, data_file="people.csv", columns=columns, methods=METHODS, resume=resume)


def feed(handle: JobHandle, first: int, n: int) -> list[pa.RecordBatch]:
    """Store batches ``first .. first+n-1`` (their findings numbered by row, as a stream would)."""
    batches = [make_batch(i * ROWS_PER_BATCH) for i in range(first, first + n)]
    for b in batches:
        handle.append(b, rows=ROWS_PER_BATCH)
    return batches


def log_rows(store: JobStore, job_id: str) -> list[tuple[int, int, int, int, int]]:
    t = JobBatch.__table__
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            sa.select(t.c.batch_index, t.c.first_row, t.c.num_rows, t.c.findings, t.c.attempt)
            .where(t.c.job_id == job_id).order_by(t.c.batch_index))]


def test_defaults_and_knobs(make_store: Callable[..., JobStore]) -> None:
    assert (JOB_HEARTBEAT_S, JOB_TAKEOVER_AFTER_S) == (2.0, 6.0)
    store = make_store(heartbeat_s=0.25, takeover_after=1.5)
    assert (store.heartbeat_s, store.takeover_after) == (0.25, 1.5)
    with pytest.raises(ValueError, match="heartbeat_s < takeover_after"):
        make_store(heartbeat_s=2, takeover_after=2)


@pytest.mark.parametrize("ended", ["cancelled", "failed"])
def test_resume_continues_a_stopped_job(store: JobStore, ended: str) -> None:
    first = start(store, f"resume-{ended}")
    assert not first.resumed and (first.batches, first.rows) == (0, 0)
    batches = feed(first, 0, 3)
    first.fail(ended, "the client went away")  # type: ignore[arg-type]
    stopped = store.get(first.job_id)
    assert pq.read_table(stopped.findings_path).equals(pa.Table.from_batches(batches))  # the parts dir reads whole

    again = start(store, f"resume-{ended}")
    assert (again.job_id, again.attempt, again.resumed, again.restarted) == (first.job_id, 2, True, True)
    assert (again.batches, again.rows, again.cells_checked) == (3, 3 * ROWS_PER_BATCH, 3 * ROWS_PER_BATCH * 2)
    assert again.findings == sum(expected_counts(batches).values())  # rebuilt from the stored parts
    assert again.finding_counts() == expected_counts(batches)
    job = store.get(again.job_id)
    assert (job.status, job.rows, job.batches, job.error, job.finished_at, job.results) == (
        "running", 180, 3, None, None, [])
    batches += feed(again, 3, 2)
    assert log_rows(store, again.job_id) == [(i, i * 60, 60, batches[i].num_rows, 1 if i < 3 else 2)
                                             for i in range(5)]
    assert pq.read_table(store.get(again.job_id).findings_path).equals(pa.Table.from_batches(batches))

    again.complete(summary_of(again, batches))
    job = store.get(job_key=f"resume-{ended}")
    counts = expected_counts(batches)
    assert (job.status, job.rows, job.batches, job.attempt) == ("completed", 300, 5, 2)
    assert job.findings == sum(counts.values()) and job.summary().counts == counts
    assert Path(job.findings_path or "").name == f"{job.id}.2.parquet"
    table = pq.read_table(job.findings_path)
    assert table.equals(pa.Table.from_batches(batches))  # all attempts, batch order, nothing twice
    assert pq.ParquetFile(job.findings_path).num_row_groups == 5
    assert not Path(stopped.findings_path or "").exists()  # the parts directory is gone
    assert log_rows(store, job.id) == []  # the acknowledgement log of a completed job is dropped
    assert {r.total_records for r in job.results} == {300}
    errors = {(r.column, r.detection_method): r.errors_detected for r in job.results}
    assert errors == {(c, m): counts[(c, COLUMNS[c], m)] for c in COLUMNS for m in METHODS}
    assert job.elapsed_seconds is not None and job.elapsed_seconds >= 1.25
    with pytest.raises(AlreadyExists, match="already completed"):
        start(store, f"resume-{ended}")


def test_resume_of_an_unknown_key_starts_it(store: JobStore) -> None:
    handle = start(store, "never-seen")
    assert (handle.resumed, handle.attempt, handle.batches, handle.rows) == (False, 1, 0, 0)
    assert store.get(handle.job_id).status == "running"
    with pytest.raises(InvalidInput, match="resume needs a job_key"):
        start(store, None)
    with pytest.raises(InvalidInput, match="resume needs a job_key"):
        start(store, "")


def test_resume_with_other_columns_is_refused(store: JobStore) -> None:
    start(store, "cols").fail("cancelled", "gone")
    with pytest.raises(InvalidInput, match="was started with columns"):
        start(store, "cols", columns={"email": "email"})


def test_restart_without_resume_still_runs_from_scratch(store: JobStore) -> None:
    first = start(store, "scratch")
    feed(first, 0, 2)
    first.fail("failed", "bad data")
    old_dir = Path(store.get(first.job_id).findings_path or "")
    again = start(store, "scratch", resume=False)
    assert (again.resumed, again.batches, again.rows, again.attempt) == (False, 0, 0, 2)
    assert not old_dir.exists() and log_rows(store, first.job_id) == []
    assert Path(store.get(first.job_id).findings_path or "").name == f"{first.job_id}.2"
    assert pq.read_table(store.get(first.job_id).findings_path).num_rows == 0


def test_live_owner_refuses_a_resume_then_a_stale_one_is_taken_over(make_store: Callable[..., JobStore]) -> None:
    owner_store, resumer = make_store(takeover_after=30), make_store(takeover_after=30)
    owner = start(owner_store, "taken")
    batches = feed(owner, 0, 2)
    with pytest.raises(JobBusy, match=r"is running in another stream as job \w+ \(last heartbeat .* ago\); "
                                      r"retry after") as info:
        start(resumer, "taken")
    assert 25 < info.value.retry_after <= 30
    assert isinstance(info.value, AlreadyExists)  # ALREADY_EXISTS on the wire

    age_job(resumer, owner.job_id, 31)  # the owner stopped heartbeating (its replica died)
    taker = start(resumer, "taken")
    assert (taker.job_id, taker.attempt, taker.batches, taker.rows) == (owner.job_id, 2, 2, 120)
    # The old owner's late writes all fail; its end is ignored.
    with pytest.raises(AlreadyExists, match="no longer run by this stream"):
        owner.append(make_batch(120), rows=ROWS_PER_BATCH)
    assert not owner.heartbeat()
    owner.fail("failed", "late")
    with pytest.raises(AlreadyExists, match="no longer run by this stream"):
        owner.complete(summary_of(owner, batches))
    assert not list(Path(taker.parts_dir).glob(".staged-*"))  # the late append cleaned up after itself
    batches += feed(taker, 2, 1)
    taker.complete(summary_of(taker, batches))
    job = owner_store.get(taker.job_id)
    assert (job.status, job.rows, job.attempt) == ("completed", 180, 2)
    assert pq.read_table(job.findings_path).equals(pa.Table.from_batches(batches))


def test_heartbeats_keep_a_live_job_from_being_taken(make_store: Callable[..., JobStore]) -> None:
    owner_store = make_store(heartbeat_s=0.1, takeover_after=0.6)
    resumer = make_store(heartbeat_s=0.1, takeover_after=0.6)
    owner = start(owner_store, "beating")
    assert owner_store.live_jobs() == [owner.job_id]
    time.sleep(1.2)  # two takeover periods without a batch: only heartbeats keep it
    with pytest.raises(JobBusy):
        start(resumer, "beating")
    owner_store.close()  # the replica dies: heartbeats stop
    deadline = time.monotonic() + 10
    while True:
        try:
            taker = start(resumer, "beating")
            break
        except JobBusy as exc:
            assert time.monotonic() < deadline
            time.sleep(min(exc.retry_after, 0.2))
    assert taker.attempt == 2 and resumer.live_jobs() == [taker.job_id]
    taker.fail("cancelled", "done here")
    time.sleep(0.3)
    assert resumer.live_jobs() == []


def test_concurrent_resume_of_one_abandoned_key_gives_one_owner(make_store: Callable[..., JobStore]) -> None:
    stores = [make_store(), make_store()]
    for n in range(3):
        key = f"race-resume-{n}"
        first = start(stores[0], key)
        feed(first, 0, 1)
        first.fail("cancelled", "gone")
        won, lost = race(stores, lambda s: start(s, key), JobBusy)  # noqa: B023 - run within the iteration
        assert len(won) == 1 and len(lost) == 1, (won, lost)
        assert won[0].attempt == 2 and won[0].batches == 1 and "running in another stream" in str(lost[0])


def test_crash_between_commit_and_rename_is_recovered(store: JobStore) -> None:
    """A replica died after committing batch 2 but before renaming its part, and while writing
    batch 3 (never committed): the resume promotes the first and drops the second."""
    owner = start(store, "crashed")
    batches = feed(owner, 0, 3)
    parts = owner.parts_dir
    os.replace(parts / part_name(2), parts / ".staged-000000002-1.parquet")  # acknowledged, not renamed
    (parts / ".staged-000000003-1.parquet").write_bytes(b"PAR1 half a file")  # not acknowledged
    assert pq.read_table(parts).num_rows == sum(b.num_rows for b in batches[:2])  # staged files are hidden
    age_job(store, owner.job_id, store.takeover_after + 5)

    taker = start(store, "crashed")
    assert (taker.batches, taker.findings) == (3, sum(expected_counts(batches).values()))
    assert sorted(p.name for p in parts.iterdir()) == [part_name(0), part_name(1), part_name(2), "part-schema.parquet"]
    batches += feed(taker, 3, 1)
    taker.complete(summary_of(taker, batches))
    assert pq.read_table(store.get(taker.job_id).findings_path).equals(pa.Table.from_batches(batches))


def test_stored_batches_are_re_read_for_replay(store: JobStore) -> None:
    handle = start(store, "replay")
    batches = feed(handle, 0, 3)
    handle.append(make_batch(0, 0), rows=25)  # a batch without findings: no part file
    entries = handle.stored_batches(1)
    assert [(e.batch_index, e.first_row, e.num_rows, e.findings) for e in entries] == [
        (1, 60, 60, batches[1].num_rows), (2, 120, 60, batches[2].num_rows), (3, 180, 25, 0)]
    assert handle.batch_findings(entries[0]).equals(batches[1].cast(FINDINGS_SCHEMA))
    assert handle.batch_findings(entries[2]).num_rows == 0
    assert handle.stored_batches(4) == []
    with pytest.raises(InvalidInput, match="cannot re-send findings from batch 5"):
        handle.stored_batches(5)
    (handle.parts_dir / part_name(2)).unlink()
    with pytest.raises(StorageError, match="must share the results directory"):
        handle.batch_findings(entries[1])


def test_missing_parts_fail_the_resume_instead_of_losing_findings(store: JobStore) -> None:
    """A replica that does not see the other's results directory must not continue its job."""
    owner = start(store, "not-shared")
    feed(owner, 0, 2)
    owner.fail("cancelled", "gone")
    for p in owner.parts_dir.iterdir():
        p.unlink()
    owner.parts_dir.rmdir()
    with pytest.raises(StorageError, match="share DATA_PATH/results"):
        start(store, "not-shared")
    job = store.get(owner.job_id)
    assert job.status == "failed" and "cannot open the job's findings" in (job.error or "")


def test_a_job_stored_before_resume_existed_runs_again_from_scratch(store: JobStore) -> None:
    old = start(store, "legacy")
    feed(old, 0, 1)
    old.fail("failed", "old server")
    legacy = store.results_dir / f"{old.job_id}.parquet"
    pq.write_table(FINDINGS_SCHEMA.empty_table(), legacy)
    with store.engine.begin() as conn:
        conn.execute(sa.update(Job.__table__).where(Job.__table__.c.id == old.job_id)
                     .values(findings_path=str(legacy)))
    again = start(store, "legacy")
    assert (again.resumed, again.batches, again.attempt) == (False, 0, 2) and not legacy.exists()


def test_empty_resumed_job_completes_with_an_empty_file(store: JobStore) -> None:
    first = start(store, "empty")
    first.append(make_batch(0, 0), rows=10)
    first.fail("cancelled", "gone")
    again = start(store, "empty")
    again.append(make_batch(0, 0), rows=5)
    again.complete(Summary(job_id=again.job_id, rows=15, batches=2))
    job = store.get(again.job_id)
    table = pq.read_table(job.findings_path)
    assert (job.rows, table.num_rows) == (15, 0) and table.schema.equals(FINDINGS_SCHEMA)
