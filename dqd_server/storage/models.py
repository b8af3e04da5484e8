"""The storage tables as typed SQLAlchemy models: the single source the migrations must match."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

JOB_STATUSES: tuple[str, ...] = ("running", "completed", "failed", "cancelled")

# Fixed constraint names, so migrations, models and every dialect agree on them.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every dialect (SQLite stores naive UTC text)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSONType, list[Any]: JSONType}


class Job(Base):
    """One Detect stream (or its restart under the same job key)."""

    __tablename__ = "jobs"
    __table_args__ = (
        sa.CheckConstraint(
            "status IN (" + ", ".join(f"'{s}'" for s in JOB_STATUSES) + ")", name="status"
        ),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)  # uuid4 hex
    job_key: Mapped[str | None] = mapped_column(sa.String(255), unique=True)
    status: Mapped[str] = mapped_column(sa.String(16))
    attempt: Mapped[int] = mapped_column(sa.Integer, default=1)  # bumped by each restart of the key
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()
    rows: Mapped[int] = mapped_column(sa.BigInteger, default=0)  # rows fully processed and stored
    batches: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    cells_checked: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    findings: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    data_file: Mapped[str | None] = mapped_column(sa.Text)
    findings_path: Mapped[str | None] = mapped_column(sa.Text)
    columns: Mapped[dict[str, Any]] = mapped_column(default=dict)  # column -> field type
    methods: Mapped[list[Any]] = mapped_column(default=list)
    error: Mapped[str | None] = mapped_column(sa.Text)
    elapsed_seconds: Mapped[float | None] = mapped_column(sa.Float)
    counts: Mapped[list[Any]] = mapped_column(default=list)  # [{column, field, method, count}]


class DetectionResult(Base):
    """Per job, one row per (column, method): the seed deployment guide's results table."""

    __tablename__ = "detection_results"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(
        sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), index=True
    )
    timestamp: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now(), index=True)
    data_file: Mapped[str | None] = mapped_column(sa.Text)
    field_name: Mapped[str | None] = mapped_column(sa.String(255), index=True)  # the column's field type
    detection_method: Mapped[str | None] = mapped_column(sa.String(64))
    total_records: Mapped[int | None] = mapped_column(sa.BigInteger)
    errors_detected: Mapped[int | None] = mapped_column(sa.BigInteger)
    confidence_scores: Mapped[dict[str, Any] | None] = mapped_column()
    detailed_results: Mapped[dict[str, Any] | None] = mapped_column()
    processing_time: Mapped[float | None] = mapped_column(sa.Float)


class DetectionMetric(Base):
    """Per job end: throughput and finding-rate metrics, labelled by job id and status."""

    __tablename__ = "detection_metrics"
    __table_args__ = (sa.Index("ix_detection_metrics_timestamp_metric_name", "timestamp", "metric_name"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    timestamp: Mapped[datetime] = mapped_column(default=utcnow, server_default=sa.func.now())
    metric_name: Mapped[str] = mapped_column(sa.String(100))
    metric_value: Mapped[float] = mapped_column(sa.Float)
    labels: Mapped[dict[str, Any] | None] = mapped_column()


class JobBatch(Base):
    """The acknowledgement log of an unfinished job: one row per stored batch of a Detect stream.

    Written in the same transaction as the job's progress (``jobs.rows/batches``), so it always
    agrees with it; a resumed stream reads it to re-send the findings of stored batches whose
    answers a client lost in flight. ``findings`` is the row count of the batch's part file
    (0: no file). Deleted when the job completes or is run again from scratch.
    """

    __tablename__ = "job_batches"

    job_id: Mapped[str] = mapped_column(
        sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    batch_index: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    first_row: Mapped[int] = mapped_column(sa.BigInteger)
    num_rows: Mapped[int] = mapped_column(sa.BigInteger)
    findings: Mapped[int] = mapped_column(sa.BigInteger)
    attempt: Mapped[int] = mapped_column(sa.Integer)  # the job attempt that stored the batch
    stored_at: Mapped[datetime] = mapped_column(default=utcnow)
