"""A Blackfish-1.0-shaped app database, built from the schema facts in shared/REFERENCE.md §1.

Only what bfjobs must coexist with: Blackfish's own Alembic table ``ddl_version`` and its
``model``, ``service``, ``jobs`` and ``download_task`` tables (the last three reduced to a key,
since bfjobs must never touch them; their presence is what matters).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

BLACKFISH_REVISION = "9f1c0de1a5b2"

SCHEMA = """
CREATE TABLE ddl_version (version_num VARCHAR(32) NOT NULL, CONSTRAINT ddl_version_pkc PRIMARY KEY (version_num));
CREATE TABLE model (
    id NUMERIC(16) NOT NULL,
    repo VARCHAR NOT NULL,
    profile VARCHAR NOT NULL,
    revision VARCHAR NOT NULL,
    image VARCHAR NOT NULL,
    sa_orm_sentinel INTEGER,
    created_at DATETIME NOT NULL,
    updated_at DATETIME NOT NULL,
    model_dir VARCHAR NOT NULL,
    metadata JSON,
    CONSTRAINT pk_model PRIMARY KEY (id),
    CONSTRAINT uq_model_repo_profile_revision UNIQUE (repo, profile, revision)
);
CREATE TABLE service (id NUMERIC(16) NOT NULL PRIMARY KEY, name VARCHAR);
CREATE TABLE jobs (id NUMERIC(16) NOT NULL PRIMARY KEY, name VARCHAR);
CREATE TABLE download_task (id NUMERIC(16) NOT NULL PRIMARY KEY, status VARCHAR);
"""


def create_blackfish_db(path: Path, *, with_model: bool = True) -> Path:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    statements = [s for s in SCHEMA.split(";") if s.strip()]
    for statement in statements:
        if not with_model and "CREATE TABLE model" in statement:
            continue
        conn.execute(statement)
    conn.execute("INSERT INTO ddl_version VALUES (?)", (BLACKFISH_REVISION,))
    conn.commit()
    conn.close()
    return path


def table_names(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()
