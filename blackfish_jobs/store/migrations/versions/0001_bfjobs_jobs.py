"""Create bfjobs' job table.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bfjobs_jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("profile", sa.String(128), nullable=False),
        sa.Column("backend", sa.String(16), nullable=False),
        sa.Column("native_id", sa.String(64)),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("folder", sa.String(1024), nullable=False),
        sa.Column("target", sa.String(1024), nullable=False),
        sa.Column("request", sa.JSON, nullable=False),
        sa.Column("result", sa.JSON),
        sa.Column("node", sa.String(256)),
        sa.Column("user", sa.String(128)),
        sa.Column("submitted_at", sa.DateTime, nullable=False),
        sa.Column("ended_at", sa.DateTime),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_bfjobs_jobs_state", "bfjobs_jobs", ["state"])
    op.create_index("ix_bfjobs_jobs_submitted_at", "bfjobs_jobs", ["submitted_at"])
    op.create_index("ix_bfjobs_jobs_native_id", "bfjobs_jobs", ["native_id"])
    op.create_index("ix_bfjobs_jobs_target", "bfjobs_jobs", ["target"])


def downgrade() -> None:
    op.drop_table("bfjobs_jobs")
