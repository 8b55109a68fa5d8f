"""bfjobs' own table and migrations inside Blackfish's app database."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from support.blackfish import BLACKFISH_REVISION, create_blackfish_db, table_names
from support.rows import job_row

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


# ----------------------------------------------------------------------------- the stdlib SQLite path


def _job(i: int, **extra) -> dbmod.JobRow:
    """Rows with every kind of value the table holds: nested/unicode JSON, NULLs, microseconds."""
    now = datetime(2026, 11, 27, 8, 0, 0, 250000) + timedelta(minutes=i)
    values = dict(
        id=f"{i:012x}", kind=("pull-image", "download-model")[i % 2], profile=("della", "local")[i % 2],
        backend=("slurm", "local")[i % 3 == 2], native_id=(str(5000 + i) if i % 5 else f"77_{i}"),
        state=("PENDING", "RUNNING", "COMPLETED", "FAILED", "UNKNOWN")[i % 5],
        reason=None if i % 4 else f"reason \u00e9 \u2603 {i}", folder=f"/jobs/{i}", target=f"/cache/t{i % 7}.sif",
        request={"uri": f"docker://x/y:{i}", "n": [1, 2.5, None, True], "deep": {"\u00fc": "\U0001f600"}},
        result=None if i % 3 else {"path": f"/cache/t{i}.sif", "size": 2**40 + i, "ok": False},
        node=None if i % 2 else "dtn1", user="jdoe", submitted_at=now, ended_at=None if i % 2 else now,
        updated_at=now.replace(microsecond=0), registered_at=None if i % 4 else now,
    )
    values.update(extra)
    return job_row(i, **values)


def _raw(path: Path) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute(f"SELECT * FROM {JOBS_TABLE} ORDER BY id").fetchall()


def test_stdlib_columns_are_the_tables():
    import dataclasses

    import sqlalchemy as sa

    from blackfish_jobs import sqlite_jobs

    table = dbmod.jobs
    assert tuple(c.name for c in table.columns) == sqlite_jobs.COLUMNS
    assert tuple(f.name for f in dataclasses.fields(dbmod.JobRow)) == sqlite_jobs.COLUMNS
    assert {c.name for c in table.columns if isinstance(c.type, sa.JSON)} == sqlite_jobs.JSON_COLUMNS
    assert {c.name for c in table.columns if isinstance(c.type, sa.DateTime)} == sqlite_jobs.DATETIME_COLUMNS


def test_both_paths_store_the_same_bytes_and_read_each_other(tmp_path):
    """The same rows and updates through the stdlib and through SQLAlchemy: identical files, and
    each path reads back exactly what the other wrote (JSON, NULLs, datetimes)."""
    rows = [_job(i) for i in range(12)]
    paths = {name: tmp_path / f"{name}.sqlite" for name in ("lite", "sa")}
    dbs = {name: dbmod.Database(f"sqlite:///{path}", stdlib_sqlite=name == "lite") for name, path in paths.items()}
    assert dbs["lite"]._lite() is not None and dbs["sa"]._lite() is None
    for db in dbs.values():
        db.insert_many(rows[:10])
        db.insert(rows[10])
        db.insert_many([rows[11]])
    assert _raw(paths["lite"]) == _raw(paths["sa"])
    moment = datetime(2026, 11, 27, 9, 30, 1, 5)
    changes = [  # updated_at given: otherwise each path stamps its own "now"
        (rows[0].id, "PENDING", {"state": "RUNNING", "node": "n1", "reason": None, "updated_at": moment}),
        (rows[1].id, "PENDING", {"state": "FAILED"}),  # it is RUNNING: compare-and-set refuses
        (rows[4].id, "UNKNOWN", {"state": "COMPLETED", "result": {"a": ["\u00e9", 1.5]}, "ended_at": moment,
                                 "updated_at": moment}),
        (rows[5].id, "PENDING", {"state": "CANCELLED", "result": None, "ended_at": moment, "updated_at": moment}),
    ]
    for db in dbs.values():
        assert db.update_many(changes) == {rows[0].id, rows[4].id, rows[5].id}
        db.update(rows[2].id, reason="done \u2603", registered_at=moment, updated_at=moment)
    assert _raw(paths["lite"]) == _raw(paths["sa"])
    for writer, path in paths.items():
        url = f"sqlite:///{path}"
        lite, alchemy = dbmod.Database(url), dbmod.Database(url, stdlib_sqlite=False)
        got = lite.listing(limit=0)
        assert got == alchemy.listing(limit=0), writer
        assert [r.to_json() for r in got] == [r.to_json() for r in alchemy.listing(limit=0)]
        by_id = {r.id: r for r in got}
        assert by_id[rows[3].id] == rows[3]  # untouched: read back exactly as written
        assert by_id[rows[4].id].result == {"a": ["\u00e9", 1.5]} and by_id[rows[4].id].ended_at == moment
        assert by_id[rows[5].id].result is None and by_id[rows[2].id].registered_at == moment


def test_both_paths_answer_every_query_alike(tmp_path):
    path = tmp_path / "app.sqlite"
    url = f"sqlite:///{path}"
    rows = [_job(i) for i in range(40)]
    rows[13].id = "abc123def456"
    dbmod.Database(url).insert_many(rows)
    lite, alchemy = dbmod.Database(url), dbmod.Database(url, stdlib_sqlite=False)
    since = rows[17].submitted_at
    queries = [
        lambda db: db.unfinished(),
        lambda db: db.unfinished([r.id for r in rows[::3]]),
        lambda db: db.unfinished(targets=["/cache/t1.sif", "/cache/t4.sif"]),
        lambda db: db.unfinished(targets=[]),
        lambda db: sorted(db.get_many([rows[5].id, rows[7].id, "nosuchid0000", rows[5].id]), key=lambda r: r.id),
        lambda db: db.get(rows[9].id),
        lambda db: db.get("nosuchid0000"),
        lambda db: db.listing(),
        lambda db: db.listing(limit=5),
        lambda db: db.listing(states=["FAILED", "PENDING"], kind="pull-image"),
        lambda db: db.listing(profile="local", since=since, limit=0),
        lambda db: db.listing(since=since),
        lambda db: db.resolve(rows[13].id),
        lambda db: db.resolve("abc12"),  # a unique prefix
        lambda db: db.resolve(rows[6].native_id or ""),  # a Slurm job id
        lambda db: db.resolve("77_10"),  # an array element's id ("_" is no LIKE wildcard)
        lambda db: db.safe_url(),
    ]
    for n, query in enumerate(queries):
        assert query(lite) == query(alchemy), n
    for db in (lite, alchemy):
        with pytest.raises(dbmod.BadInput, match="ambiguous"):
            db.resolve("00000000000")
        with pytest.raises(dbmod.BadInput, match="no bfjobs job"):
            db.resolve("fff")


def test_an_older_schema_is_migrated_before_the_stdlib_reads_it(tmp_path):
    """A database at revision 0001 (no registered_at): the stdlib path refuses it, Alembic migrates."""
    from alembic import command
    from alembic.config import Config

    from blackfish_jobs import sqlite_jobs

    path = tmp_path / "old.sqlite"
    old = dbmod.Database(f"sqlite:///{path}", stdlib_sqlite=False)
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(dbmod.__file__).with_name("migrations")))
    with old.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
    assert sqlite_jobs.SqliteJobs.open(str(path)) is None
    db = dbmod.Database(f"sqlite:///{path}")
    assert db.listing() == []
    assert db.current_revision() == dbmod.HEAD_REVISION
    assert sqlite_jobs.SqliteJobs.open(str(path)) is not None


def test_status_reads_of_unfinished_jobs_use_the_partial_index(tmp_path):
    """Only live rows are read, however long the history: the queries carry the index's own term."""
    import importlib

    from blackfish_jobs import sqlite_jobs

    migration = importlib.import_module("blackfish_jobs.migrations.versions.0003_unfinished_index")
    assert migration.UNFINISHED == sqlite_jobs._UNFINISHED  # else SQLite silently stops using it
    db = dbmod.Database(f"sqlite:///{tmp_path / 'app.sqlite'}")
    lite = db._lite()
    conn = lite.conn
    live = sqlite_jobs._UNFINISHED
    slurm_ids = f"SELECT native_id, submitted_at FROM {JOBS_TABLE} WHERE {live} AND backend = 'slurm'"
    for sql, params in [
        (slurm_ids, ()),
        (slurm_ids + " AND profile = ?", ("della",)),
        (f"{sqlite_jobs._SELECT} WHERE {sqlite_jobs._UNFINISHED} ORDER BY submitted_at", ()),
    ]:
        plan = " ".join(str(step[-1]) for step in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
        assert "USING" in plan and "INDEX ix_bfjobs_jobs_unfinished" in plan, plan
    # the statements the code runs are those checked above
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    lite.slurm_unfinished("della")
    lite.unfinished()
    assert statements == [slurm_ids + " AND profile = 'della'",
                          f"{sqlite_jobs._SELECT} WHERE {sqlite_jobs._UNFINISHED} ORDER BY submitted_at"]


def test_stdlib_connection_has_blackfish_pragmas(tmp_path):
    db = dbmod.Database(f"sqlite:///{tmp_path / 'app.sqlite'}")
    conn = db._lite().conn
    assert [conn.execute(f"PRAGMA {name}").fetchone()[0] for name in
            ("journal_mode", "busy_timeout", "foreign_keys", "synchronous")] == ["wal", 5000, 1, 1]


@pytest.mark.parametrize("url", [
    "sqlite:////abs/dir/app.sqlite", "sqlite:///rel/app.sqlite", "sqlite+pysqlite:////x/a b@c.db",
    "sqlite://", "sqlite:///:memory:", "sqlite:///x.db?timeout=3", "sqlite:///a%2Fb", "sqlite:///~u/x.db",
    "sqlite:///line\nbreak", "sqlite:///a\x00b", "postgresql://u@h/db", "SQLITE:///x.db", "sqlite:///x#y",
])
def test_only_plain_sqlite_file_urls_take_the_stdlib_path(url):
    import sqlalchemy as sa

    from blackfish_jobs.sqlite_jobs import sqlite_path

    path = sqlite_path(url)
    plain = url.startswith(("sqlite:///", "sqlite+pysqlite:///")) and url[-1] not in "/:" and not any(
        c in url for c in "?%~\n\x00#")
    assert (path is not None) == (plain and ":memory:" not in url), url
    if path is not None:
        assert path == sa.engine.make_url(url).database  # the very file SQLAlchemy would open
