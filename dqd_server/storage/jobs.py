"""Job bookkeeping: findings to Parquet parts, progress and results to SQL, job keys unique under concurrency.

Resumable streams live here too: per-batch acknowledgements (``job_batches``), heartbeats of the
streams that own running jobs, and the takeover of a job whose owner stopped heartbeating.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import time
import uuid
import weakref
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from dqd_server.engine.errors import AlreadyExists, DqdError, InvalidInput, NotFound
from dqd_server.engine.findings import FINDINGS_SCHEMA
from dqd_server.engine.pipeline import OK_CODE
from dqd_server.engine.stream import Summary

from .database import READ_ONLY, create_engine, migrate
from .models import DetectionMetric, DetectionResult, Job, JobBatch, utcnow
from .stats import FindingStats, counts_json

log = logging.getLogger(__name__)


STALE_AFTER_S = 300.0
# A stream owning a running job refreshes ``jobs.updated_at`` at least this often (and on every batch).
JOB_HEARTBEAT_S = 2.0  # default; the server passes the JOB_HEARTBEAT_S setting
# A resuming stream takes over a running job whose owner has not heartbeated for this long.
JOB_TAKEOVER_AFTER_S = 6.0  # default; the server passes the JOB_TAKEOVER_AFTER_S setting
STOPPED_ERROR = "server stopped before the job finished"
MAX_JOB_KEY_CHARS = 255
SCHEMA_PART = "part-schema.parquet"  # zero rows: the parts directory reads with the schema even when empty
_PART = re.compile(r"^part-(\d{9,})\.parquet$")
_STAGED = re.compile(r"^\.staged-(\d{9,})-(\d+)\.parquet$")
_JOBS = Job.__table__
_RESULTS = DetectionResult.__table__
_BATCHES = JobBatch.__table__


class JobBusy(AlreadyExists):
    """The job of a key is running in a live stream (it heartbeats); ``retry_after`` s may change that."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StorageError(DqdError):
    """Stored findings are missing or unreadable (a server-side problem: INTERNAL)."""


def part_name(batch_index: int) -> str:
    return f"part-{batch_index:09d}.parquet"


def _staged_name(batch_index: int, attempt: int) -> str:
    return f".staged-{batch_index:09d}-{attempt}.parquet"


def _parts_dir_of(results_dir: Path, job_id: str, attempt: int) -> Path:
    """Where a run of a job that starts from scratch at ``attempt`` keeps its parts."""
    return results_dir / (job_id if attempt == 1 else f"{job_id}.{attempt}")


def _final_file_of(results_dir: Path, job_id: str, attempt: int) -> Path:
    """The single Parquet file of a job completed by ``attempt``."""
    return results_dir / (f"{job_id}.parquet" if attempt == 1 else f"{job_id}.{attempt}.parquet")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_parquet(path: Path, table: pa.Table) -> None:
    """Write ``table`` (one row group) to ``path`` and fsync it."""
    with open(path, "wb") as f:
        pq.write_table(table, f, row_group_size=max(table.num_rows, 1))
        f.flush()
        os.fsync(f.fileno())


def _write_atomically(path: Path, table: pa.Table) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        _write_parquet(tmp, table)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _flagged(findings: pa.RecordBatch) -> int:
    """Findings rows that count as findings (emit-all ``OK`` rows do not)."""
    if not findings.num_rows:
        return 0
    return int(pc.sum(pc.not_equal(findings.column("code"), OK_CODE)).as_py() or 0)


def _read_part(path: Path) -> pa.RecordBatch:
    try:
        table = pq.read_table(path).select(FINDINGS_SCHEMA.names).cast(FINDINGS_SCHEMA)
    except FileNotFoundError:
        raise
    except (OSError, pa.ArrowException) as exc:
        raise StorageError(f"cannot read stored findings {path}: {exc}") from exc
    table = table.combine_chunks()
    batches = table.to_batches()
    return batches[0] if batches else pa.RecordBatch.from_pylist([], schema=FINDINGS_SCHEMA)


@dataclass(frozen=True)
class ResultRecord:
    """One detection_results row: the findings of one (column, method) of a job."""

    id: int
    job_id: str
    timestamp: datetime
    data_file: str | None
    field_name: str | None
    detection_method: str | None
    total_records: int | None
    errors_detected: int | None
    confidence_scores: dict[str, Any] | None
    detailed_results: dict[str, Any] | None
    processing_time: float | None

    @property
    def column(self) -> str | None:
        return (self.detailed_results or {}).get("column")


@dataclass(frozen=True)
class JobRecord:
    """A job as stored: every ``jobs`` column plus its detection_results rows."""

    id: str
    job_key: str | None
    status: str
    attempt: int
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    rows: int
    batches: int
    cells_checked: int
    findings: int
    data_file: str | None
    findings_path: str | None
    columns: dict[str, str]
    methods: list[str]
    error: str | None
    elapsed_seconds: float | None
    counts: list[dict[str, Any]]
    results: list[ResultRecord]

    def summary(self) -> Summary:
        """The job's totals in the engine's ``Summary`` shape (for a DetectSummary reply)."""
        counts: Counter[tuple[str, str, str]] = Counter(
            {(c["column"], c["field"], c["method"]): int(c["count"]) for c in self.counts}
        )
        return Summary(job_id=self.id, rows=self.rows, batches=self.batches, cells_checked=self.cells_checked,
                       findings=self.findings, counts=counts, elapsed_seconds=self.elapsed_seconds or 0.0)


@dataclass(frozen=True)
class StoredBatch:
    """One acknowledged batch of a job (a ``job_batches`` row)."""

    batch_index: int
    first_row: int
    num_rows: int
    findings: int
    attempt: int


class JobStore:
    """The jobs of this server (and of its sibling workers and replicas sharing the database).

    ``heartbeat_s`` (default ``JOB_HEARTBEAT_S``; the server's JOB_HEARTBEAT_S setting) is how often a background
    thread refreshes ``updated_at`` of the running jobs this store's streams own;
    ``takeover_after`` (default ``JOB_TAKEOVER_AFTER_S``, env JOB_TAKEOVER_AFTER_S) is how long
    without a heartbeat makes a running job free for a resuming stream to take over.
    """

    def __init__(self, url: str, results_dir: Path, *, stale_after: float = STALE_AFTER_S,
                 heartbeat_s: float | None = None, takeover_after: float | None = None) -> None:
        self.url = url
        self.results_dir = Path(results_dir).resolve()
        self.results_dir.mkdir(parents=True, exist_ok=True)
        self.stale_after = stale_after
        self.heartbeat_s = JOB_HEARTBEAT_S if heartbeat_s is None else float(heartbeat_s)
        self.takeover_after = JOB_TAKEOVER_AFTER_S if takeover_after is None else float(takeover_after)
        if not self.heartbeat_s > 0 or not self.takeover_after > self.heartbeat_s:
            raise ValueError(f"need 0 < heartbeat_s < takeover_after, got heartbeat_s={self.heartbeat_s}, "
                             f"takeover_after={self.takeover_after} (give the takeover a few heartbeats)")
        self.engine = create_engine(url)
        self._pg = self.engine.dialect.name == "postgresql"
        migrate(self.engine)
        self._live: weakref.WeakSet[JobHandle] = weakref.WeakSet()
        self._live_lock = threading.Lock()
        self._stop = threading.Event()
        self._beater: threading.Thread | None = None

    def __enter__(self) -> JobStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        if self._beater is not None and self._beater is not threading.current_thread():
            self._beater.join(5)
        self.engine.dispose()

    # -- clock ---------------------------------------------------------------------------------

    def now_sql(self) -> Any:
        """The time written to ``updated_at``: PostgreSQL's clock (one clock for every replica), else ours."""
        return sa.func.now() if self._pg else utcnow()

    def ago_sql(self, seconds: float) -> Any:
        """``now_sql()`` minus ``seconds``, for comparisons with ``updated_at``."""
        if self._pg:
            return sa.func.now() - sa.literal(timedelta(seconds=seconds), sa.Interval())
        return utcnow() - timedelta(seconds=seconds)

    # -- starting jobs -------------------------------------------------------------------------

    def start(self, *, job_key: str | None, data_file: str, columns: Mapping[str, str],
              methods: Sequence[str], resume: bool = False) -> JobHandle:
        """A running job: new, or the job of ``job_key`` run again.

        Without ``resume`` a failed/cancelled/stale job of the key is reset and run from scratch.
        With ``resume`` (needs a key) a failed, cancelled or abandoned (no heartbeat for
        ``takeover_after`` s) job continues from its stored batches (``handle.batches/rows``); a
        job whose owner still heartbeats raises :class:`JobBusy`. An empty ``job_key`` (proto3's
        unset string) means no key.
        """
        job_key = job_key or None
        if job_key is not None and len(job_key) > MAX_JOB_KEY_CHARS:
            raise InvalidInput(f"job_key must be at most {MAX_JOB_KEY_CHARS} characters, got {len(job_key)}")
        if resume and job_key is None:
            raise InvalidInput("resume needs a job_key naming the job to continue")
        cols, meths = {str(k): str(v) for k, v in columns.items()}, [str(m) for m in methods]
        for _ in range(3):
            job_id, now = uuid.uuid4().hex, utcnow()
            parts = _parts_dir_of(self.results_dir, job_id, 1)
            values = _fresh_values(self, now, data_file, parts, cols, meths)
            try:
                with self.engine.begin() as conn:
                    conn.execute(sa.insert(_JOBS).values(id=job_id, job_key=job_key, created_at=now, **values))
            except IntegrityError:
                if job_key is None:
                    raise
                # The UNIQUE(job_key) constraint decided: the key has a job already.
                handle = (self._resume(job_key, data_file, cols, meths) if resume
                          else self._restart(job_key, data_file, cols, meths, self.stale_after))
                if handle is not None:
                    return handle
                continue  # that job was deleted meanwhile: insert again
            handle = JobHandle(self, job_id, job_key, 1, parts, data_file, cols, meths, restarted=False)
            return self._opened(handle, fresh=True)
        raise JobBusy(f"job key {job_key!r} is being started by other streams right now; retry later", 1.0)

    def _opened(self, handle: JobHandle, *, fresh: bool) -> JobHandle:
        """Prepare the parts directory (fresh run) or recover the stored parts (resume); register heartbeats."""
        try:
            if fresh:
                handle.parts_dir.mkdir(parents=True, exist_ok=True)
                _write_atomically(handle.parts_dir / SCHEMA_PART, FINDINGS_SCHEMA.empty_table())
            else:
                handle._recover()
        except BaseException as exc:
            try:
                handle.fail("failed", f"cannot open the job's findings in {handle.parts_dir}: {exc}")
            except Exception:  # the original error is the one to report
                log.exception("job %s: could not record the failure to open it", handle.job_id)
            raise
        self._register(handle)
        return handle

    def _restart(self, key: str, data_file: str, cols: dict[str, str], meths: list[str],
                 idle_s: float, *, resuming: bool = False) -> JobHandle | None:
        with self.engine.connect().execution_options(**READ_ONLY) as conn:
            row = conn.execute(
                sa.select(_JOBS.c.id, _JOBS.c.status, _JOBS.c.attempt, _JOBS.c.findings_path,
                          (_JOBS.c.updated_at < self.ago_sql(idle_s)).label("idle"))
                .where(_JOBS.c.job_key == key)
            ).one_or_none()
        if row is None:
            return None
        if row.status == "completed":
            raise AlreadyExists(f"job key {key!r} already completed as job {row.id}; read it with GetJob")
        busy = (JobBusy(f"job key {key!r} is running in another stream as job {row.id}; retry after "
                        f"{idle_s:.1f} s", idle_s) if resuming else
                AlreadyExists(f"job key {key!r} is running in another stream as job {row.id}; "
                              f"wait for it to end or use another job key"))
        if row.status == "running" and not row.idle:
            raise busy
        attempt = row.attempt + 1
        parts = _parts_dir_of(self.results_dir, row.id, attempt)
        now = utcnow()
        restartable = sa.or_(_JOBS.c.status.in_(("failed", "cancelled")),
                             sa.and_(_JOBS.c.status == "running", _JOBS.c.updated_at < self.ago_sql(idle_s)))
        with self.engine.begin() as conn:
            # Compare-and-set on (attempt, status): of two streams restarting the key, one wins.
            res = conn.execute(
                sa.update(_JOBS).where(_JOBS.c.id == row.id, _JOBS.c.attempt == row.attempt, restartable)
                .values(attempt=attempt, **_fresh_values(self, now, data_file, parts, cols, meths))
            )
            if res.rowcount != 1:
                raise busy
            conn.execute(sa.delete(_RESULTS).where(_RESULTS.c.job_id == row.id))
            conn.execute(sa.delete(_BATCHES).where(_BATCHES.c.job_id == row.id))
        _remove_findings(row.findings_path, keep=parts)
        log.info("job %s (key %r) restarted from scratch as attempt %d", row.id, key, attempt)
        handle = JobHandle(self, row.id, key, attempt, parts, data_file, cols, meths, restarted=True)
        return self._opened(handle, fresh=True)

    def _resume(self, key: str, data_file: str, cols: dict[str, str], meths: list[str]) -> JobHandle | None:
        now_col = sa.func.now() if self._pg else sa.literal(utcnow(), Job.__table__.c.updated_at.type)
        with self.engine.connect().execution_options(**READ_ONLY) as conn:
            row = conn.execute(
                sa.select(_JOBS, now_col.label("db_now")).where(_JOBS.c.job_key == key)
            ).one_or_none()
        if row is None:
            return None
        if row.status == "completed":
            raise AlreadyExists(f"job key {key!r} already completed as job {row.id}; read it with GetJob")
        if dict(row.columns) != cols or list(row.methods) != meths:
            raise InvalidInput(f"job key {key!r} was started with columns {dict(row.columns)} and methods "
                               f"{list(row.methods)}; resume it with the same ones (got {cols}, {meths})")
        if row.status == "running":
            age = max((row.db_now - row.updated_at).total_seconds(), 0.0)
            if age < self.takeover_after:
                wait = self.takeover_after - age
                raise JobBusy(f"job key {key!r} is running in another stream as job {row.id} (last heartbeat "
                              f"{age:.1f} s ago); retry after {wait:.1f} s", wait)
        parts = Path(row.findings_path) if row.findings_path else None
        if parts is None or parts.suffix == ".parquet":
            # A job stored before resumable streams (one Parquet file per attempt): run it again from scratch.
            return self._restart(key, data_file, cols, meths, self.takeover_after, resuming=True)
        attempt = row.attempt + 1
        resumable = sa.or_(_JOBS.c.status.in_(("failed", "cancelled")),
                           sa.and_(_JOBS.c.status == "running",
                                   _JOBS.c.updated_at < self.ago_sql(self.takeover_after)))
        with self.engine.begin() as conn:
            # Compare-and-set on (attempt, status, heartbeat): of two resuming streams, one wins, and
            # the previous owner's later writes (guarded by its attempt) all fail.
            res = conn.execute(
                sa.update(_JOBS).where(_JOBS.c.id == row.id, _JOBS.c.attempt == row.attempt, resumable)
                .values(attempt=attempt, status="running", updated_at=self.now_sql(), finished_at=None,
                        error=None, counts=[], data_file=data_file or row.data_file)
            )
            if res.rowcount != 1:
                raise JobBusy(f"job key {key!r} is running in another stream as job {row.id} (another stream "
                              f"resumed it just now); retry after {self.takeover_after:.1f} s", self.takeover_after)
            conn.execute(sa.delete(_RESULTS).where(_RESULTS.c.job_id == row.id))
        log.info("job %s (key %r) resumed as attempt %d at batch %d, row %d (was %s)", row.id, key, attempt,
                 row.batches, row.rows, row.status)
        handle = JobHandle(self, row.id, key, attempt, parts, data_file or row.data_file or "", cols, meths,
                           restarted=True, resumed=True, rows=row.rows, batches=row.batches,
                           elapsed_before=row.elapsed_seconds or 0.0)
        return self._opened(handle, fresh=False)

    # -- heartbeats ----------------------------------------------------------------------------

    def _register(self, handle: JobHandle) -> None:
        with self._live_lock:
            self._live.add(handle)
            if self._beater is None and not self._stop.is_set():
                self._beater = threading.Thread(target=self._beat, name="dqd-job-heartbeat", daemon=True)
                self._beater.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            with self._live_lock:
                handles = list(self._live)
            for handle in handles:
                if self._stop.is_set():
                    return
                try:
                    if not handle.heartbeat():
                        with self._live_lock:
                            self._live.discard(handle)
                except SQLAlchemyError as exc:  # the database is away for a moment: next round
                    log.warning("heartbeat of job %s failed: %s", handle.job_id, exc)
                except Exception:  # the heartbeat thread must live on
                    log.exception("heartbeat of job %s failed", handle.job_id)

    def live_jobs(self) -> list[str]:
        """Ids of the running jobs this store's streams own (and heartbeat)."""
        with self._live_lock:
            return [h.job_id for h in self._live if h.status == "running"]

    # -- reading -------------------------------------------------------------------------------

    def get(self, job_id: str | None = None, job_key: str | None = None) -> JobRecord:
        """The job with this id or job key; ``NotFound`` if there is none."""
        if (job_id is None) == (job_key is None):
            raise InvalidInput("give exactly one of job_id or job_key")
        where = _JOBS.c.id == job_id if job_id is not None else _JOBS.c.job_key == job_key
        with self.engine.connect().execution_options(**READ_ONLY) as conn:
            job = conn.execute(sa.select(_JOBS).where(where)).one_or_none()
            if job is None:
                what = f"id {job_id!r}" if job_id is not None else f"job key {job_key!r}"
                raise NotFound(f"no job with {what}; job ids come from the summary of a Detect stream that set persist or job_key")
            results = conn.execute(
                sa.select(_RESULTS).where(_RESULTS.c.job_id == job.id).order_by(_RESULTS.c.id)
            ).all()
        names = {f.name for f in fields(ResultRecord)}
        return JobRecord(**dict(job._mapping),
                         results=[ResultRecord(**{k: v for k, v in r._mapping.items() if k in names})
                                  for r in results])

    def stored_batches(self, job_id: str, from_batch: int = 0) -> list[StoredBatch]:
        """The acknowledged batches of an unfinished job from ``from_batch`` on, in order."""
        with self.engine.connect().execution_options(**READ_ONLY) as conn:
            rows = conn.execute(
                sa.select(_BATCHES.c.batch_index, _BATCHES.c.first_row, _BATCHES.c.num_rows,
                          _BATCHES.c.findings, _BATCHES.c.attempt)
                .where(_BATCHES.c.job_id == job_id, _BATCHES.c.batch_index >= from_batch)
                .order_by(_BATCHES.c.batch_index)
            ).all()
        return [StoredBatch(*r) for r in rows]

    def mark_stale_running_failed(self, older_than: float) -> int:
        """Fail the jobs left running (no heartbeat for ``older_than`` s) by a stopped server; returns how many.

        With several workers on one database, pass at least ``stale_after``: a smaller value would
        also fail the live jobs of sibling workers. Their stored batches stay: a resume continues them.
        """
        now = utcnow()
        with self.engine.begin() as conn:
            res = conn.execute(
                sa.update(_JOBS)
                .where(_JOBS.c.status == "running", _JOBS.c.updated_at < self.ago_sql(older_than))
                .values(status="failed", error=STOPPED_ERROR, finished_at=now, updated_at=self.now_sql())
            )
        if res.rowcount:
            log.warning("marked %d job(s) left running by a stopped server as failed", res.rowcount)
        return int(res.rowcount)


def _fresh_values(store: JobStore, now: datetime, data_file: str, parts: Path, cols: dict[str, str],
                  meths: list[str]) -> dict[str, Any]:
    return dict(status="running", updated_at=store.now_sql(), finished_at=None, rows=0, batches=0,
                cells_checked=0, findings=0, data_file=data_file, findings_path=str(parts), columns=cols,
                methods=meths, error=None, elapsed_seconds=None, counts=[])


def _remove_findings(path: str | None, keep: Path) -> None:
    """Delete an earlier run's findings (a parts directory or a legacy/compacted file)."""
    if not path or Path(path) == keep:
        return
    p = Path(path)
    if p.is_dir():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


class JobHandle:
    """One stream's hold on a running job. ``append``, ``complete``, ``fail`` and ``heartbeat`` are thread-safe.

    ``rows``/``batches`` are what the job has stored (a resumed handle starts at the stored
    totals: the next batch to store is ``batches``, its first row ``rows``).
    """

    def __init__(self, store: JobStore, job_id: str, job_key: str | None, attempt: int, parts_dir: Path,
                 data_file: str, columns: dict[str, str], methods: list[str], *, restarted: bool,
                 resumed: bool = False, rows: int = 0, batches: int = 0, elapsed_before: float = 0.0) -> None:
        self.store = store
        self.job_id = job_id
        self.job_key = job_key
        self.attempt = attempt
        self.parts_dir = parts_dir
        self.findings_path = parts_dir  # the completed job's single file once ``complete`` returned
        self.data_file = data_file
        self.columns = columns
        self.methods = methods
        self.restarted = restarted  # True when an earlier run of the key was reset or resumed
        self.resumed = resumed  # True when this run continues the stored batches of earlier attempts
        self.rows = rows
        self.batches = batches
        self.status = "running"
        self._elapsed_before = elapsed_before
        self._stats = FindingStats(columns, methods)
        self._lock = threading.Lock()
        self._started = time.perf_counter()

    # -- what the job holds ----------------------------------------------------------------------

    @property
    def findings(self) -> int:
        """Findings stored so far (all attempts; emit-all ``OK`` rows excluded)."""
        return self._stats.errors

    @property
    def cells_checked(self) -> int:
        return self.rows * len(self.columns)

    def finding_counts(self) -> Counter[tuple[str, str, str]]:
        """Stored findings per (column, field, method), as ``Summary.counts``."""
        return Counter({(p.column, p.field, p.method): p.errors for p in self._stats.pairs.values() if p.errors})

    def stored_batches(self, from_batch: int) -> list[StoredBatch]:
        """The acknowledged batches ``from_batch .. batches - 1`` (for re-sending their findings)."""
        if not 0 <= from_batch <= self.batches:
            raise InvalidInput(f"cannot re-send findings from batch {from_batch}: job {self.job_id} has "
                               f"{self.batches} stored batches (0..{self.batches - 1})")
        entries = self.store.stored_batches(self.job_id, from_batch)
        if [e.batch_index for e in entries] != list(range(from_batch, self.batches)):
            raise StorageError(f"job {self.job_id}: the acknowledgement log does not list batches "
                               f"{from_batch}..{self.batches - 1}; their findings cannot be re-sent")
        return entries

    def batch_findings(self, entry: StoredBatch) -> pa.RecordBatch:
        """The stored findings of one acknowledged batch."""
        if not entry.findings:
            return pa.RecordBatch.from_pylist([], schema=FINDINGS_SCHEMA)
        path = self.parts_dir / part_name(entry.batch_index)
        try:
            batch = _read_part(path)
        except FileNotFoundError:
            raise StorageError(f"job {self.job_id}: stored findings of batch {entry.batch_index} are missing "
                               f"({path}); replicas that resume each other's jobs must share the results "
                               "directory (DATA_PATH/results)") from None
        if batch.num_rows != entry.findings:
            raise StorageError(f"job {self.job_id}: {path} holds {batch.num_rows} findings, the "
                               f"acknowledgement log says {entry.findings}")
        return batch

    # -- writing -------------------------------------------------------------------------------

    def append(self, findings: pa.RecordBatch, rows: int, batches: int = 1) -> None:
        """Store one checked batch durably; when this returns, the batch is acknowledged.

        Order: the findings go to a hidden, fsynced staged file; one transaction then updates
        ``jobs.rows/batches/updated_at`` (compare-and-set on this attempt) and logs the batch in
        ``job_batches``; last, the staged file is renamed to ``part-<batch>.parquet``. A crash
        between commit and rename leaves a staged file that the next resume promotes.
        """
        if rows < 0 or batches < 0:
            raise ValueError("rows and batches must be >= 0")
        with self._lock:
            if self.status != "running":
                raise InvalidInput(f"job {self.job_id} has ended ({self.status}); no more batches are stored")
            if not findings.schema.equals(FINDINGS_SCHEMA):
                try:
                    findings = findings.cast(FINDINGS_SCHEMA)
                except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as exc:
                    raise InvalidInput(f"findings do not have the findings schema: {exc}") from exc
            index, first_row = self.batches, self.rows
            staged: Path | None = None
            if findings.num_rows:
                staged = self.parts_dir / _staged_name(index, self.attempt)
                try:
                    _write_parquet(staged, pa.Table.from_batches([findings]))
                except FileNotFoundError:
                    staged = None
                    self._update_job()  # raises AlreadyExists when another stream took the job (and its dir)
                    raise StorageError(f"the findings directory {self.parts_dir} of job {self.job_id} "
                                       "is gone") from None
                _fsync_dir(self.parts_dir)
            found = self._stats.errors + _flagged(findings)
            try:
                with self.store.engine.begin() as conn:
                    # Only now, with the findings on disk, may the job row say these rows are done.
                    self._update_job(conn, rows=first_row + rows, batches=index + batches, findings=found,
                                     cells_checked=(first_row + rows) * len(self.columns))
                    conn.execute(sa.insert(_BATCHES).values(
                        job_id=self.job_id, batch_index=index, first_row=first_row, num_rows=rows,
                        findings=findings.num_rows, attempt=self.attempt, stored_at=utcnow()))
            except BaseException:
                if staged is not None:
                    staged.unlink(missing_ok=True)
                raise
            self.rows, self.batches = first_row + rows, index + batches
            if findings.num_rows:
                self._stats.add(findings)
            if staged is not None:
                self._promote(staged, index)

    def _promote(self, staged: Path, index: int) -> None:
        final = self.parts_dir / part_name(index)
        try:
            os.replace(staged, final)
        except FileNotFoundError:
            if not final.exists():  # not promoted by a stream that took the job over meanwhile
                raise
        _fsync_dir(self.parts_dir)

    def heartbeat(self) -> bool:
        """Refresh ``updated_at`` while the job runs; False once it ended or another stream took it over."""
        if self.status != "running":
            return False
        with self.store.engine.begin() as conn:
            matched = conn.execute(
                sa.update(_JOBS).where(_JOBS.c.id == self.job_id, _JOBS.c.attempt == self.attempt,
                                       _JOBS.c.status == "running").values(updated_at=self.store.now_sql())
            ).rowcount
        if matched != 1 and self.status == "running":
            self.status = "lost"
            log.warning("job %s: another stream took it over (attempt %d is no longer current)",
                        self.job_id, self.attempt)
            return False
        return matched == 1

    def complete(self, summary: Summary) -> None:
        """End the job as completed with the stream's totals; a second call (or one after fail) is a no-op.

        The parts of all attempts are first copied, in batch order, into one Parquet file
        (``<job_id>[.<attempt>].parquet``, one row group per batch), which becomes ``findings_path``;
        the parts directory is removed after the commit.
        """
        with self._lock:
            if self.status == "lost":
                raise AlreadyExists(f"job {self.job_id} is no longer run by this stream: another stream "
                                    "resumed or restarted it; its result is that stream's")
            if self.status != "running":
                return
            if summary.rows != self.rows:
                log.warning("job %s: summary has %d rows but %d were stored", self.job_id, summary.rows, self.rows)
            final = _final_file_of(self.store.results_dir, self.job_id, self.attempt)
            self._compact(final)
            try:
                self._end("completed", None, summary.elapsed_seconds + self._elapsed_before,
                          summary.cells_checked, summary.findings, counts_json(summary.counts), final)
            except BaseException:
                final.unlink(missing_ok=True)
                raise
            self.findings_path = final
            shutil.rmtree(self.parts_dir, ignore_errors=True)

    def fail(self, status: Literal["failed", "cancelled"], error: str) -> None:
        """End the job as failed/cancelled, keeping what was stored (a resume continues it); a second call is a no-op."""
        if status not in ("failed", "cancelled"):
            raise ValueError(f"status must be 'failed' or 'cancelled', not {status!r}")
        with self._lock:
            if self.status != "running":
                return
            try:
                self._end(status, error, time.perf_counter() - self._started + self._elapsed_before,
                          self.cells_checked, self._stats.errors, self._stats.counts())
            except AlreadyExists as exc:  # another stream owns the job now: nothing of ours to record
                log.warning("%s", exc)

    def _compact(self, final: Path) -> None:
        parts = sorted((int(m.group(1)), p) for p in self.parts_dir.iterdir() if (m := _PART.match(p.name)))
        tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with open(tmp, "wb") as f:
                with pq.ParquetWriter(f, FINDINGS_SCHEMA) as writer:
                    for index, path in parts:
                        if index >= self.batches:
                            continue  # not acknowledged: never part of the job
                        table = pa.Table.from_batches([_read_part(path)])
                        if table.num_rows:
                            writer.write_table(table, row_group_size=table.num_rows)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(final.parent)

    def _recover(self) -> None:
        """Resume: promote the staged parts of earlier attempts that were acknowledged, drop the
        rest, check every acknowledged batch's part, and rebuild the finding statistics from them."""
        if not self.parts_dir.is_dir():
            if self.batches:
                raise StorageError(f"the findings directory {self.parts_dir} of job {self.job_id} is missing; "
                                   "replicas that resume each other's jobs must share DATA_PATH/results")
            self.parts_dir.mkdir(parents=True, exist_ok=True)
        if not (self.parts_dir / SCHEMA_PART).exists():
            _write_atomically(self.parts_dir / SCHEMA_PART, FINDINGS_SCHEMA.empty_table())
        for path in list(self.parts_dir.iterdir()):
            if m := _STAGED.match(path.name):
                index, attempt = int(m.group(1)), int(m.group(2))
                if attempt >= self.attempt:
                    continue
                final = self.parts_dir / part_name(index)
                if index < self.batches and not final.exists():
                    os.replace(path, final)
                    log.info("job %s: promoted the staged findings of batch %d", self.job_id, index)
                else:
                    path.unlink(missing_ok=True)
            elif (m := _PART.match(path.name)) and int(m.group(1)) >= self.batches:
                path.unlink(missing_ok=True)  # cannot happen (parts appear after their commit); be safe
        _fsync_dir(self.parts_dir)
        entries = self.store.stored_batches(self.job_id)
        if len(entries) != self.batches or (entries and entries[-1].batch_index != self.batches - 1):
            raise StorageError(f"job {self.job_id}: the acknowledgement log lists {len(entries)} batches, "
                               f"the job {self.batches}")
        for entry in entries:
            batch = self.batch_findings(entry)
            if batch.num_rows:
                self._stats.add(batch)

    def _end(self, status: str, error: str | None, elapsed: float, cells: int, findings: int,
             counts: list[dict[str, Any]], final: Path | None = None) -> None:
        now = utcnow()
        results = [
            {"job_id": self.job_id, "timestamp": now, "data_file": self.data_file, "field_name": p.field,
             "detection_method": p.method, "total_records": self.rows, "errors_detected": p.errors,
             "confidence_scores": p.confidence_scores(), "detailed_results": p.detailed_results(),
             "processing_time": elapsed}
            for _, p in sorted(self._stats.pairs.items())
        ]
        labels = {"job_id": self.job_id, "status": status}
        metrics = [
            {"timestamp": now, "metric_name": name, "metric_value": float(value), "labels": labels}
            for name, value in (("rows_per_second", self.rows / elapsed if elapsed > 0 else 0.0),
                                ("findings_per_row", findings / self.rows if self.rows else 0.0),
                                ("elapsed_seconds", elapsed))
        ]
        extra = {"findings_path": str(final)} if final is not None else {}
        with self.store.engine.begin() as conn:
            self._update_job(conn, status=status, finished_at=now, rows=self.rows,
                             batches=self.batches, cells_checked=cells, findings=findings, error=error,
                             elapsed_seconds=elapsed, counts=counts, **extra)
            if results:
                conn.execute(sa.insert(_RESULTS), results)
            conn.execute(sa.insert(DetectionMetric.__table__), metrics)
            if status == "completed":
                conn.execute(sa.delete(_BATCHES).where(_BATCHES.c.job_id == self.job_id))
        self.status = status

    def _update_job(self, conn: sa.Connection | None = None, **values: Any) -> None:
        """Update this attempt's job row (and ``updated_at``); raises ``AlreadyExists`` if another stream took it."""
        stmt = sa.update(_JOBS).where(_JOBS.c.id == self.job_id, _JOBS.c.attempt == self.attempt,
                                      _JOBS.c.status == "running").values(updated_at=self.store.now_sql(), **values)
        if conn is None:
            with self.store.engine.begin() as own:
                matched = own.execute(stmt).rowcount
        else:
            matched = conn.execute(stmt).rowcount
        if matched != 1:
            self.status = "lost"
            raise AlreadyExists(f"job {self.job_id} is no longer run by this stream: another stream restarted "
                                f"or resumed it, or a server marked it failed as stale; start a new stream")
