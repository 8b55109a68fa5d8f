"""bfjobs' own table and migrations inside Blackfish's app database."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from blackfish_schema import BLACKFISH_REVISION, create_blackfish_db, table_names

from blackfish_jobs import db as dbmod
from blackfish_jobs.constants import JOBS_TABLE, VERSION_TABLE


def test_head_revision_matches_migrations():
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory(str(Path(dbmod.__file__).with_name("migrations")))
    assert scripts.get_current_head() == dbmod.HEAD_REVISION


def test_fresh_database_gets_only_bfjobs_tables(site):
    database = dbmod.Database()
    database.migrate()
    assert database.url == f"sqlite:///{site.app_dir / 'app.sqlite'}"
    assert table_names(site.db_path) == {JOBS_TABLE, VERSION_TABLE}
    conn = sqlite3.connect(site.db_path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchall() == [(dbmod.HEAD_REVISION,)]


def test_blackfish_tables_and_ddl_version_untouched(site):
    create_blackfish_db(site.db_path)
    before = table_names(site.db_path)
    dbmod.Database().migrate()
    assert table_names(site.db_path) == before | {JOBS_TABLE, VERSION_TABLE}
    conn = sqlite3.connect(site.db_path)
    assert conn.execute("SELECT version_num FROM ddl_version").fetchall() == [(BLACKFISH_REVISION,)]


def test_env_url_and_explicit_url(site, monkeypatch, tmp_path):
    monkeypatch.setenv("BFJOBS_DB_URL", f"sqlite:///{tmp_path / 'other.sqlite'}")
    assert dbmod.Database().url.endswith("other.sqlite")
    assert dbmod.Database(f"sqlite:///{tmp_path / 'x.sqlite'}").url.endswith("x.sqlite")


def test_concurrent_first_use_migrates_once(site):
    """Eight processes opening a fresh DB at once: all succeed, one version row."""
    code = "from blackfish_jobs.db import Database; Database().migrate(); print('ok')"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(8)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outs]
    conn = sqlite3.connect(site.db_path)
    assert conn.execute(f"SELECT count(*) FROM {VERSION_TABLE}").fetchone()[0] == 1
