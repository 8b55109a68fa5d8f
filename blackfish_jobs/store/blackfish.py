"""Registering finished downloads in Blackfish's ``model`` table, exactly as Blackfish 1.0 does.

Blackfish's schema (REFERENCE.md §1): ``id`` is the 16 raw bytes of a UUID, timestamps are naive
UTC text, ``revision`` is the full commit sha naming the snapshot folder, ``model_dir`` is the repo
root, ``image`` the pipeline tag, and ``UNIQUE(repo, profile, revision)`` holds. bfjobs writes only
that table (never ``download_task``, ``service``, ``jobs`` or ``ddl_version``) and never creates
it: without it Blackfish has not initialised the database, and the result waits in bfjobs' own
table (``registered_at`` is NULL) until ``bfjobs sync`` finds the table.

Blackfish's table is reached through SQLAlchemy, as Blackfish itself does; bfjobs' own row is
then marked through the job store. Between the two a crash leaves the row pending, and the next
``bfjobs sync`` upserts it again (same ``repo, profile, revision``): nothing is registered twice.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from .jobs import Database
from .rows import JobRow, utcnow

MODEL_TABLE = "model"

_UPSERT = (
    """
    INSERT INTO model (id, repo, profile, revision, image, created_at, updated_at, model_dir, metadata)
    VALUES (:id, :repo, :profile, :revision, :image, :now, :now, :model_dir, :metadata)
    ON CONFLICT (repo, profile, revision) DO UPDATE SET
        image = excluded.image,
        model_dir = excluded.model_dir,
        metadata = excluded.metadata,
        updated_at = excluded.updated_at
    """
)


def _sa() -> Any:
    """SQLAlchemy, imported by the writes only: ``cache ls`` reads the table without it (-0.16 s)."""
    import sqlalchemy

    return sqlalchemy


def _timestamp(moment: datetime) -> str:
    """Blackfish's text form: naive UTC with microseconds (``2026-11-27 07:55:52.811393``)."""
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


def has_model_table(db: Database) -> bool:
    with db.sa_engine().connect() as conn:
        return _sa().inspect(conn).has_table(MODEL_TABLE)


def _values(row: JobRow, now: datetime) -> dict[str, object]:
    result = row.result or {}
    listed = result.get("listed_bytes")  # the complete snapshot's size, from the commit's listing
    size = int(listed if listed is not None else result.get("bytes") or 0)
    metadata: dict[str, object] = {
        "model_size_gb": round(size / 1e9, 3),
        "size_source": "listing" if listed is not None else "disk",
        "fetched_at": now.isoformat(timespec="seconds") + "Z",
    }
    if result.get("partial"):  # a filtered download: Blackfish would serve a snapshot missing files
        metadata.update(partial=True, files_present=result.get("files"), files_listed=result.get("listed_files"))
    return {
        "id": uuid.uuid4().bytes,
        "repo": result["repo_id"],
        "profile": row.profile,
        "revision": result["commit"],
        "image": result.get("pipeline_tag") or "unknown",
        "now": _timestamp(now),
        "model_dir": result["model_dir"],
        "metadata": json.dumps(metadata),
    }


def register(db: Database, row: JobRow) -> bool:
    """Upsert one completed download (its kind registers: the caller's to say); False (and
    nothing written) if Blackfish has no table."""
    if row.state != "COMPLETED" or not row.result:
        return False
    if not has_model_table(db):
        db.unregistered.append(row.id)
        return False
    now = utcnow()
    with db.sa_engine().begin() as conn:
        conn.execute(_sa().text(_UPSERT), _values(row, now))
    db.mark_registered(row.id, now)
    row.registered_at = now
    return True


def sync(db: Database, kinds: Sequence[str]) -> tuple[int, int]:
    """Register every pending job of ``kinds`` (the kinds that register: downloads); returns
    (registered, still pending)."""
    rows = db.pending_registration(kinds)
    if not rows:
        return 0, 0
    if not has_model_table(db):
        return 0, len(rows)
    done = sum(register(db, row) for row in rows)
    return done, len(rows) - done


def model_keys(db: Database, profile: str) -> set[tuple[str, str, str]] | None:
    """``(repo, revision, model_dir)`` of the profile's rows in Blackfish's table (None: no table).

    A read on the store's own ``sqlite3`` connection: ``cache ls`` then never imports SQLAlchemy.
    """
    conn = db.conn
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (MODEL_TABLE,)).fetchone() is None:
        return None
    found = conn.execute("SELECT repo, revision, model_dir FROM model WHERE profile = ?", (profile,))
    return {(str(r[0]), str(r[1]), str(r[2])) for r in found}


def delete_models(db: Database, profile: str, keys: Sequence[tuple[str, str, str]]) -> int:
    """Delete the profile's rows ``(repo, revision, model_dir)`` whose snapshot is gone, as
    Blackfish's own refresh does; returns how many went (0 without a table)."""
    if not keys or not has_model_table(db):
        return 0
    statement = _sa().text(
        "DELETE FROM model WHERE profile = :profile AND repo = :repo AND revision = :revision "
        "AND model_dir = :model_dir"
    )
    gone = 0
    with db.sa_engine().begin() as conn:
        for repo, revision, model_dir in keys:
            result = conn.execute(
                statement, {"profile": profile, "repo": repo, "revision": revision, "model_dir": model_dir}
            )
            gone += result.rowcount or 0
    return gone
