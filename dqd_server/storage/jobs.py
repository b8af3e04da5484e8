"""Job bookkeeping: findings to Parquet, progress and results to SQL, job keys unique under concurrency."""
from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from dqd_server.engine.errors import AlreadyExists, InvalidInput, NotFound
from dqd_server.engine.findings import FINDINGS_SCHEMA
from dqd_server.engine.stream import Summary

from .database import READ_ONLY, create_engine, migrate
from .models import DetectionMetric, DetectionResult, Job, utcnow
from .stats import FindingStats, counts_json

log = logging.getLogger(__name__)

STALE_AFTER_S = 300.0
STOPPED_ERROR = "server stopped before the job finished"
MAX_JOB_KEY_CHARS = 255
_JOBS = Job.__table__
_RESULTS = DetectionResult.__table__


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


class JobStore:
    """The jobs of this server (and of its sibling workers sharing the database)."""

    def __init__(self, url: str, results_dir: Path, *, stale_after: float = STALE_AFTER_S) -> None:
        self.url = url
        self.results_dir = Path(results_dir).resolve()
        self.results_dir.mkdir(parents=True, exist_ok=True)
        self.stale_after = stale_after
        self.engine = create_engine(url)
        migrate(self.engine)

    def __enter__(self) -> JobStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.engine.dispose()

    def start(self, *, job_key: str | None, data_file: str, columns: Mapping[str, str],
              methods: Sequence[str]) -> JobHandle:
        """A running job: new, or the failed/cancelled/stale job of ``job_key`` reset to run again.

        An empty ``job_key`` (proto3's unset string) means no key.
        """
        job_key = job_key or None
        if job_key is not None and len(job_key) > MAX_JOB_KEY_CHARS:
            raise InvalidInput(f"job_key must be at most {MAX_JOB_KEY_CHARS} characters, got {len(job_key)}")
        cols, meths = {str(k): str(v) for k, v in columns.items()}, [str(m) for m in methods]
        for _ in range(3):
            job_id, now = uuid.uuid4().hex, utcnow()
            path = self.results_dir / f"{job_id}.parquet"
            values = _fresh_values(now, data_file, path, cols, meths)
            try:
                with self.engine.begin() as conn:
                    conn.execute(sa.insert(_JOBS).values(id=job_id, job_key=job_key, created_at=now, **values))
            except IntegrityError:
                if job_key is None:
                    raise
                # The UNIQUE(job_key) constraint decided: the key has a job already.
                handle = self._restart(job_key, data_file, cols, meths)
                if handle is not None:
                    return handle
                continue  # that job was deleted meanwhile: insert again
            return JobHandle(self, job_id, job_key, 1, path, data_file, cols, meths, restarted=False)
        raise AlreadyExists(f"job key {job_key!r} is being started by other streams right now; retry later")

    def _restart(self, key: str, data_file: str, cols: dict[str, str], meths: list[str]) -> JobHandle | None:
        with self.engine.connect().execution_options(**READ_ONLY) as conn:
            row = conn.execute(
                sa.select(_JOBS.c.id, _JOBS.c.status, _JOBS.c.updated_at, _JOBS.c.attempt, _JOBS.c.findings_path)
                .where(_JOBS.c.job_key == key)
            ).one_or_none()
        if row is None:
            return None
        if row.status == "completed":
            raise AlreadyExists(f"job key {key!r} already completed as job {row.id}; read it with GetJob")
        now = utcnow()
        cutoff = now - timedelta(seconds=self.stale_after)
        busy = AlreadyExists(f"job key {key!r} is running in another stream as job {row.id}; "
                             f"wait for it to end or use another job key")
        if row.status == "running" and row.updated_at >= cutoff:
            raise busy
        attempt = row.attempt + 1
        path = self.results_dir / f"{row.id}.{attempt}.parquet"
        restartable = sa.or_(_JOBS.c.status.in_(("failed", "cancelled")),
                             sa.and_(_JOBS.c.status == "running", _JOBS.c.updated_at < cutoff))
        with self.engine.begin() as conn:
            # Compare-and-set on (attempt, status): of two streams restarting the key, one wins.
            res = conn.execute(
                sa.update(_JOBS).where(_JOBS.c.id == row.id, _JOBS.c.attempt == row.attempt, restartable)
                .values(attempt=attempt, **_fresh_values(now, data_file, path, cols, meths))
            )
            if res.rowcount != 1:
                raise busy
            conn.execute(sa.delete(_RESULTS).where(_RESULTS.c.job_id == row.id))
        if row.findings_path and row.findings_path != str(path):
            Path(row.findings_path).unlink(missing_ok=True)
        log.info("job %s (key %r) restarted as attempt %d", row.id, key, attempt)
        return JobHandle(self, row.id, key, attempt, path, data_file, cols, meths, restarted=True)

    def get(self, job_id: str | None = None, job_key: str | None = None) -> JobRecord:
        """The job with this id or job key; ``NotFound`` if there is none."""
        if (job_id is None) == (job_key is None):
            raise InvalidInput("give exactly one of job_id or job_key")
        where = _JOBS.c.id == job_id if job_id is not None else _JOBS.c.job_key == job_key
        with self.engine.connect().execution_options(**READ_ONLY) as conn:
            job = conn.execute(sa.select(_JOBS).where(where)).one_or_none()
            if job is None:
                what = f"id {job_id!r}" if job_id is not None else f"job key {job_key!r}"
                raise NotFound(f"no job with {what}; job ids come from the Detect summary or ListJobs")
            results = conn.execute(
                sa.select(_RESULTS).where(_RESULTS.c.job_id == job.id).order_by(_RESULTS.c.id)
            ).all()
        names = {f.name for f in fields(ResultRecord)}
        return JobRecord(**dict(job._mapping),
                         results=[ResultRecord(**{k: v for k, v in r._mapping.items() if k in names})
                                  for r in results])

    def mark_stale_running_failed(self, older_than: float) -> int:
        """Fail the jobs left running (no progress for ``older_than`` s) by a stopped server; returns how many.

        With several workers on one database, pass at least ``stale_after``: a smaller value would
        also fail the live jobs of sibling workers.
        """
        now = utcnow()
        with self.engine.begin() as conn:
            res = conn.execute(
                sa.update(_JOBS)
                .where(_JOBS.c.status == "running", _JOBS.c.updated_at < now - timedelta(seconds=older_than))
                .values(status="failed", error=STOPPED_ERROR, finished_at=now, updated_at=now)
            )
        if res.rowcount:
            log.warning("marked %d job(s) left running by a stopped server as failed", res.rowcount)
        return int(res.rowcount)


def _fresh_values(now: datetime, data_file: str, path: Path, cols: dict[str, str],
                  meths: list[str]) -> dict[str, Any]:
    return dict(status="running", updated_at=now, finished_at=None, rows=0, batches=0, cells_checked=0,
                findings=0, data_file=data_file, findings_path=str(path), columns=cols, methods=meths,
                error=None, elapsed_seconds=None, counts=[])


class JobHandle:
    """One stream's hold on a running job. ``append``, ``complete`` and ``fail`` are thread-safe."""

    def __init__(self, store: JobStore, job_id: str, job_key: str | None, attempt: int, findings_path: Path,
                 data_file: str, columns: dict[str, str], methods: list[str], *, restarted: bool) -> None:
        self.store = store
        self.job_id = job_id
        self.job_key = job_key
        self.attempt = attempt
        self.findings_path = findings_path
        self.data_file = data_file
        self.columns = columns
        self.methods = methods
        self.restarted = restarted  # True when an earlier failed/cancelled/stale run of the key was reset
        self.rows = 0
        self.batches = 0
        self.status = "running"
        self._stats = FindingStats(columns, methods)
        self._lock = threading.Lock()
        self._writer: pq.ParquetWriter | None = None
        self._file_done = False
        self._started = time.perf_counter()

    def append(self, findings: pa.RecordBatch, rows: int, batches: int = 1) -> None:
        """Store one checked batch: its findings to Parquet first, then the job's progress to SQL."""
        if rows < 0 or batches < 0:
            raise ValueError("rows and batches must be >= 0")
        with self._lock:
            if self.status != "running" or self._file_done:
                raise InvalidInput(f"job {self.job_id} has ended ({self.status}); no more batches are stored")
            if not findings.schema.equals(FINDINGS_SCHEMA):
                try:
                    findings = findings.cast(FINDINGS_SCHEMA)
                except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as exc:
                    raise InvalidInput(f"findings do not have the findings schema: {exc}") from exc
            if findings.num_rows:
                if self._writer is None:
                    self._writer = pq.ParquetWriter(self.findings_path, FINDINGS_SCHEMA)
                self._writer.write_batch(findings, row_group_size=findings.num_rows)
                self._stats.add(findings)
            self.rows += rows
            self.batches += batches
            # Only now, with the findings written, may the job row say these rows are done.
            self._update_job(rows=self.rows, batches=self.batches, findings=self._stats.errors,
                             cells_checked=self.rows * len(self.columns), updated_at=utcnow())

    def complete(self, summary: Summary) -> None:
        """End the job as completed with the stream's totals; a second call (or one after fail) is a no-op."""
        with self._lock:
            if self.status != "running":
                return
            if summary.rows != self.rows:
                log.warning("job %s: summary has %d rows but %d were stored", self.job_id, summary.rows, self.rows)
            self._end("completed", None, summary.elapsed_seconds, summary.cells_checked, summary.findings,
                      counts_json(summary.counts))

    def fail(self, status: Literal["failed", "cancelled"], error: str) -> None:
        """End the job as failed/cancelled, keeping what was stored; a second call is a no-op."""
        if status not in ("failed", "cancelled"):
            raise ValueError(f"status must be 'failed' or 'cancelled', not {status!r}")
        with self._lock:
            if self.status != "running":
                return
            try:
                self._end(status, error, time.perf_counter() - self._started, self.rows * len(self.columns),
                          self._stats.errors, self._stats.counts())
            except AlreadyExists as exc:  # another stream owns the job now: nothing of ours to record
                log.warning("%s", exc)

    def _end(self, status: str, error: str | None, elapsed: float, cells: int, findings: int,
             counts: list[dict[str, Any]]) -> None:
        self._close_file()
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
        with self.store.engine.begin() as conn:
            self._update_job(conn=conn, status=status, finished_at=now, updated_at=now, rows=self.rows,
                             batches=self.batches, cells_checked=cells, findings=findings, error=error,
                             elapsed_seconds=elapsed, counts=counts)
            if results:
                conn.execute(sa.insert(_RESULTS), results)
            conn.execute(sa.insert(DetectionMetric.__table__), metrics)
        self.status = status

    def _update_job(self, conn: sa.Connection | None = None, **values: Any) -> None:
        """Update this attempt's job row; raises ``AlreadyExists`` if another stream has taken it over."""
        stmt = sa.update(_JOBS).where(_JOBS.c.id == self.job_id, _JOBS.c.attempt == self.attempt,
                                      _JOBS.c.status == "running").values(**values)
        if conn is None:
            with self.store.engine.begin() as own:
                matched = own.execute(stmt).rowcount
        else:
            matched = conn.execute(stmt).rowcount
        if matched != 1:
            self.status = "lost"
            self._close_file(create_empty=False)
            raise AlreadyExists(f"job {self.job_id} is no longer run by this stream: another stream restarted "
                                f"it or a server marked it failed as stale; start a new stream")

    def _close_file(self, create_empty: bool = True) -> None:
        """Finish the Parquet file (an empty one if no findings came), so it is readable whatever the outcome."""
        if self._file_done:
            return
        if self._writer is not None:
            self._writer.close()
        elif create_empty:
            pq.write_table(FINDINGS_SCHEMA.empty_table(), self.findings_path)
        self._file_done = True
