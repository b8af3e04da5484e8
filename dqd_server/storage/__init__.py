"""Results storage of dqd: jobs, their findings (Parquet) and result summaries (SQL), safe for several workers.

Design
------
* **Where things live.** Findings rows go to one Parquet file per job attempt,
  ``results_dir/<job_id>.parquet`` (a restart of the same job key writes a *new* file,
  ``<job_id>.<attempt>.parquet``, and deletes the previous one). Everything else is SQL through
  synchronous SQLAlchemy 2 (the gRPC servicers call it via ``asyncio.to_thread``): the ``jobs`` table,
  ``detection_results`` (one row per column x method, the seed deployment guide's table) and
  ``detection_metrics`` (rows_per_second, findings_per_row, elapsed_seconds per job end).
  SQLite (``default_url(DATA_PATH)`` -> ``DATA_PATH/dqd.db``) for one node, PostgreSQL for several.
* **Schema.** ``models.py`` is the source of truth; ``migrations/versions/*.py`` are hand-written,
  frozen Alembic revisions shipped in the package. ``migrate(url)`` runs ``alembic upgrade head``
  with a Config built in code (no alembic.ini). It is idempotent and safe for workers starting
  together: on PostgreSQL the upgrade runs in one transaction holding ``pg_advisory_xact_lock``; on
  SQLite every transaction of our engines is ``BEGIN IMMEDIATE`` (pysqlite's implicit transactions
  are switched off), so the upgrade is one atomic, single-writer transaction with transactional
  DDL; the other worker waits (busy timeout 30 s) and finds the schema at head. No file lock.
* **Progress is never ahead of storage.** ``JobHandle.append`` writes the batch's findings as one
  Parquet row group, then updates ``jobs.rows/batches/updated_at`` in one short transaction. An
  ended job (completed, failed or cancelled) always has a closed, readable Parquet file (empty if
  there were no findings). A process crash leaves the open file without its footer: such a job is
  set failed by ``mark_stale_running_failed`` at the next start, its file is not readable.
* **Job keys.** Uniqueness rests on ``UNIQUE(job_key)``: ``start`` inserts first and only on
  ``IntegrityError`` looks at the existing job. Completed or freshly running -> ``AlreadyExists``;
  failed, cancelled or running without progress for ``stale_after`` s -> the same row is reset
  with a compare-and-set ``UPDATE ... WHERE attempt = :seen AND status is restartable``, so of two
  concurrent restarters exactly one wins. Every later write of a handle is guarded by
  ``(id, attempt, status='running')``: a stream whose job was taken over gets ``AlreadyExists``
  instead of overwriting the new run.
* **Statistics** per (column, method) are accumulated per batch with Arrow group-by kernels and
  numpy (one Python step per group, never per finding) and written at job end, also for failed and
  cancelled jobs (covering the rows stored). ``OK`` rows of emit-all mode are stored in Parquet but
  not counted as findings. ``field_name`` holds the column's field type; the column name is in
  ``detailed_results["column"]`` (``ResultRecord.column``).
* **Time.** All timestamps are timezone-aware UTC (SQLite stores naive UTC text).
"""
from __future__ import annotations

from .database import create_engine, default_url, migrate
from .jobs import STALE_AFTER_S, STOPPED_ERROR, JobHandle, JobRecord, JobStore, ResultRecord
from .models import JOB_STATUSES, Base, DetectionMetric, DetectionResult, Job

__all__ = [
    "JOB_STATUSES",
    "STALE_AFTER_S",
    "STOPPED_ERROR",
    "Base",
    "DetectionMetric",
    "DetectionResult",
    "Job",
    "JobHandle",
    "JobRecord",
    "JobStore",
    "ResultRecord",
    "create_engine",
    "default_url",
    "migrate",
]
