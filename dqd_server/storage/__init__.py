"""Results storage of dqd: jobs, their findings (Parquet) and result summaries (SQL), safe for several workers.

Design
------
* **Where things live.** Findings rows go to Parquet *parts*, one file per stored batch that had
  findings: ``results_dir/<job_id>/part-<batch:09d>.parquet`` (plus ``part-schema.parquet``, zero
  rows, so the directory reads with the findings schema even before the first finding). While a
  job is running, failed or cancelled, ``findings_path`` is that directory and
  ``pyarrow.parquet.read_table(findings_path)`` reads all its findings, every attempt's, in batch
  order (hidden ``.staged-*`` files are ignored by Arrow's dataset discovery). ``complete`` copies
  the parts, in order and one row group per batch, into one file ``results_dir/<job_id>.parquet``
  (``<job_id>.<attempt>.parquet`` when a later attempt completed it), points ``findings_path`` at it
  and removes the directory. A restart from scratch (same key, no resume) uses a new directory
  ``<job_id>.<attempt>/`` and deletes the previous one. Replicas that resume each other's jobs must
  share ``DATA_PATH/results`` (a shared volume) besides the database. Everything else is SQL through
  synchronous SQLAlchemy 2 (the gRPC servicers call it via ``asyncio.to_thread``): the ``jobs`` table,
  ``job_batches`` (the acknowledgement log of unfinished jobs: one row per stored batch with its
  first row, rows and findings), ``detection_results`` (one row per column x method, the seed
  deployment guide's table) and ``detection_metrics`` (rows_per_second, findings_per_row,
  elapsed_seconds per job end). SQLite (``default_url(DATA_PATH)`` -> ``DATA_PATH/dqd.db``) for one
  node, PostgreSQL for several.
* **Schema.** ``models.py`` is the source of truth; ``migrations/versions/*.py`` are hand-written,
  frozen Alembic revisions shipped in the package. ``migrate(url)`` runs ``alembic upgrade head``
  with a Config built in code (no alembic.ini). It is idempotent and safe for workers starting
  together: on PostgreSQL the upgrade runs in one transaction holding ``pg_advisory_xact_lock``; on
  SQLite every transaction of our engines is ``BEGIN IMMEDIATE`` (pysqlite's implicit transactions
  are switched off), so the upgrade is one atomic, single-writer transaction with transactional
  DDL; the other worker waits (busy timeout 30 s) and finds the schema at head. No file lock.
* **Progress is never ahead of storage; an acknowledged batch survives a crash.** ``JobHandle.append``
  writes the batch's findings to a hidden staged file ``.staged-<batch>-<attempt>.parquet`` and
  fsyncs it, then one short transaction updates ``jobs.rows/batches/updated_at`` (compare-and-set on
  the attempt) and inserts the batch's ``job_batches`` row, then renames the staged file to its
  ``part-<batch>.parquet``. When ``append`` returns the batch is stored: the Detect stream answers it
  with ``BatchFindings.stored = true`` (the acknowledgement). A crash between commit and rename
  leaves an acknowledged batch staged; the stream that resumes the job promotes it (staged files of
  unacknowledged batches are deleted). Every part is a complete file, so a crash never leaves an
  unreadable one.
* **Job keys.** Uniqueness rests on ``UNIQUE(job_key)``: ``start`` inserts first and only on
  ``IntegrityError`` looks at the existing job. Completed -> ``AlreadyExists``. Without ``resume``:
  freshly running -> ``AlreadyExists``; failed, cancelled or running without a heartbeat for
  ``stale_after`` s -> the same row is reset to run from scratch with a compare-and-set
  ``UPDATE ... WHERE attempt = :seen AND status is restartable``, so of two concurrent restarters
  exactly one wins. With ``resume``: failed, cancelled, or running without a heartbeat for
  ``takeover_after`` s -> the same compare-and-set bumps the attempt but keeps rows, batches and
  parts, and the new stream continues at batch ``jobs.batches``, row ``jobs.rows``; a running job
  whose owner heartbeats -> ``JobBusy`` (an ``AlreadyExists`` with ``retry_after``). Every later write
  of a handle is guarded by ``(id, attempt, status='running')``: a stream whose job was taken over
  gets ``AlreadyExists`` instead of overwriting the new run.
* **Heartbeats.** One daemon thread per ``JobStore`` refreshes ``updated_at`` of the running jobs its
  streams own every ``heartbeat_s`` (``JOB_HEARTBEAT_S``, default 2 s; every append refreshes it
  too). ``takeover_after`` (``JOB_TAKEOVER_AFTER_S``, default 6 s) must exceed it by a few beats. On
  PostgreSQL ``updated_at`` and the cutoffs use the database clock (``now()``), so replicas' clocks
  need not agree.
* **Statistics** per (column, method) are accumulated per batch with Arrow group-by kernels and
  numpy (one Python step per group, never per finding) and written at job end, also for failed and
  cancelled jobs (covering the rows stored). A resumed job rebuilds them from its parts, so they
  cover every attempt, as do ``jobs.findings`` and ``elapsed_seconds`` (the attempts' times added;
  a crashed attempt's time is unknown and left out). ``OK`` rows of emit-all mode are stored in Parquet but
  not counted as findings. ``field_name`` holds the column's field type; the column name is in
  ``detailed_results["column"]`` (``ResultRecord.column``).
* **Time.** All timestamps are timezone-aware UTC (SQLite stores naive UTC text).
"""
from __future__ import annotations

from .database import create_engine, default_url, migrate
from .jobs import (
    JOB_HEARTBEAT_S,
    JOB_TAKEOVER_AFTER_S,
    STALE_AFTER_S,
    STOPPED_ERROR,
    JobBusy,
    JobHandle,
    JobRecord,
    JobStore,
    ResultRecord,
    StorageError,
    StoredBatch,
)
from .models import JOB_STATUSES, Base, DetectionMetric, DetectionResult, Job, JobBatch

__all__ = [
    "JOB_HEARTBEAT_S",
    "JOB_STATUSES",
    "JOB_TAKEOVER_AFTER_S",
    "STALE_AFTER_S",
    "STOPPED_ERROR",
    "Base",
    "DetectionMetric",
    "DetectionResult",
    "Job",
    "JobBatch",
    "JobBusy",
    "JobHandle",
    "JobRecord",
    "JobStore",
    "ResultRecord",
    "StorageError",
    "StoredBatch",
    "create_engine",
    "default_url",
    "migrate",
]
