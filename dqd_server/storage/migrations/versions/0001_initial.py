"""Initial schema: jobs, detection_results and detection_metrics (written by hand, frozen)."""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Frozen copies of the model types: a revision must not change when models.py does. Names are
# wrapped in op.f() so the naming convention of the target metadata is not applied twice.
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("job_key", sa.String(255), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=True),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("batches", sa.BigInteger(), nullable=False),
        sa.Column("cells_checked", sa.BigInteger(), nullable=False),
        sa.Column("findings", sa.BigInteger(), nullable=False),
        sa.Column("data_file", sa.Text(), nullable=True),
        sa.Column("findings_path", sa.Text(), nullable=True),
        sa.Column("columns", JSON, nullable=False),
        sa.Column("methods", JSON, nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("elapsed_seconds", sa.Float(), nullable=True),
        sa.Column("counts", JSON, nullable=False),
        sa.CheckConstraint("status IN ('running', 'completed', 'failed', 'cancelled')", name=op.f("ck_jobs_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint("job_key", name=op.f("uq_jobs_job_key")),
    )
    op.create_table(
        "detection_results",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("timestamp", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("data_file", sa.Text(), nullable=True),
        sa.Column("field_name", sa.String(255), nullable=True),
        sa.Column("detection_method", sa.String(64), nullable=True),
        sa.Column("total_records", sa.BigInteger(), nullable=True),
        sa.Column("errors_detected", sa.BigInteger(), nullable=True),
        sa.Column("confidence_scores", JSON, nullable=True),
        sa.Column("detailed_results", JSON, nullable=True),
        sa.Column("processing_time", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_detection_results_job_id_jobs"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_detection_results")),
    )
    op.create_index(op.f("ix_detection_results_job_id"), "detection_results", ["job_id"])
    op.create_index(op.f("ix_detection_results_timestamp"), "detection_results", ["timestamp"])
    op.create_index(op.f("ix_detection_results_field_name"), "detection_results", ["field_name"])
    op.create_table(
        "detection_metrics",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("timestamp", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("metric_name", sa.String(100), nullable=False),
        sa.Column("metric_value", sa.Float(), nullable=False),
        sa.Column("labels", JSON, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_detection_metrics")),
    )
    op.create_index(op.f("ix_detection_metrics_timestamp_metric_name"), "detection_metrics",
                    ["timestamp", "metric_name"])


def downgrade() -> None:
    op.drop_index(op.f("ix_detection_metrics_timestamp_metric_name"), table_name="detection_metrics")
    op.drop_table("detection_metrics")
    op.drop_index(op.f("ix_detection_results_field_name"), table_name="detection_results")
    op.drop_index(op.f("ix_detection_results_timestamp"), table_name="detection_results")
    op.drop_index(op.f("ix_detection_results_job_id"), table_name="detection_results")
    op.drop_table("detection_results")
    op.drop_table("jobs")
