"""Remember when a finished download was registered in Blackfish's ``model`` table.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("bfjobs_jobs") as batch:
        batch.add_column(sa.Column("registered_at", sa.DateTime, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("bfjobs_jobs") as batch:
        batch.drop_column("registered_at")
