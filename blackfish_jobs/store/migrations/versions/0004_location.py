"""Remember where each job's artefact goes: ``shared`` (the profile's cache_dir) or ``home`` (its home_dir).

``list`` and ``status`` show it for every row; deriving it from the target would mean reading
every row's profile (profiles.cfg) on each command. Downloads recorded before this revision say
so in their request (its ``shared`` key, which only they have) and are filled in here; earlier
image pulls stay NULL (shown as ``-``): which folder was their profile's cache_dir then is not
recorded anywhere. The backfill reads the requests in Python, so it needs no JSON functions of
the database's own.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TABLE = sa.table(
    "bfjobs_jobs", sa.column("id", sa.String), sa.column("request", sa.Text), sa.column("location", sa.String)
)


def _location(request: str | None) -> str | None:
    try:
        fields = json.loads(request or "null")
    except ValueError:
        return None
    if not isinstance(fields, dict) or "shared" not in fields:
        return None
    return "shared" if fields["shared"] else "home"


def upgrade() -> None:
    with op.batch_alter_table("bfjobs_jobs") as batch:
        batch.add_column(sa.Column("location", sa.String(8), nullable=True))
    bind = op.get_bind()
    found = {}
    for job_id, request in bind.execute(sa.select(TABLE.c.id, TABLE.c.request)):
        location = _location(request)
        if location is not None:
            found[job_id] = location
    for location in ("shared", "home"):
        ids = [job_id for job_id, where in found.items() if where == location]
        for start in range(0, len(ids), 500):
            bind.execute(sa.update(TABLE).where(TABLE.c.id.in_(ids[start : start + 500])).values(location=location))


def downgrade() -> None:
    with op.batch_alter_table("bfjobs_jobs") as batch:
        batch.drop_column("location")
