"""A partial index over the jobs not finished yet: ``status`` reads only those.

Every ``bfjobs status`` (and ``wait``) starts by reading the unfinished jobs, and the table keeps
every job ever submitted. Without this index that read scans the whole history (on the
critical path of ``status``, before its ``sacct`` call can start);
with it, the read touches only the live rows, in submit order, and the Slurm ids and submit
times come from the index alone.

The WHERE clause is the very text the stdlib queries use (``store.live.UNFINISHED``): SQLite
uses a partial index only for a query carrying the same term (tests/test_db.py checks both).
Frozen here on purpose: a migration must not change when the code does. PostgreSQL gets the
same partial index; databases without partial indexes (MySQL, MariaDB) get none.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

NAME = "ix_bfjobs_jobs_unfinished"
COLUMNS = ["submitted_at", "backend", "profile", "native_id", "state"]
UNFINISHED = (
    "state NOT IN ('CANCELLED', 'COMPLETED', 'FAILED', 'NODE_FAIL', 'OUT_OF_MEMORY', 'PREEMPTED', 'TIMEOUT')"
)


def upgrade() -> None:
    if op.get_bind().dialect.name in ("sqlite", "postgresql"):
        where = sa.text(UNFINISHED)
        op.create_index(NAME, "bfjobs_jobs", COLUMNS, sqlite_where=where, postgresql_where=where)


def downgrade() -> None:
    if op.get_bind().dialect.name in ("sqlite", "postgresql"):
        op.drop_index(NAME, table_name="bfjobs_jobs")
