"""Resumable streams: the job_batches acknowledgement log (written by hand, frozen)."""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "job_batches",
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("batch_index", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("first_row", sa.BigInteger(), nullable=False),
        sa.Column("num_rows", sa.BigInteger(), nullable=False),
        sa.Column("findings", sa.BigInteger(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("stored_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_job_batches_job_id_jobs"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", "batch_index", name=op.f("pk_job_batches")),
    )


def downgrade() -> None:
    op.drop_table("job_batches")
