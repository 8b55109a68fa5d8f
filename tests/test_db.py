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

from blackfish_jobs import store as dbmod
from blackfish_jobs.api import job_json
from blackfish_jobs.constants import HEAD_REVISION, JOBS_TABLE, VERSION_TABLE
from blackfish_jobs.errors import BadInput
from blackfish_jobs.states import FINISHED as FINISHED_STATES
from blackfish_jobs.store import jobs as jobsmod
from blackfish_jobs.store import rows as rowsmod
from blackfish_jobs.store import schema


def test_head_revision_matches_migrations():
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory(str(schema.MIGRATIONS))
    assert scripts.get_current_head() == HEAD_REVISION


def test_fresh_database_gets_only_bfjobs_tables(site):
    database = dbmod.Database()
    database.migrate()
    assert database.url == f"sqlite:///{site.app_dir / 'app.sqlite'}"
    assert table_names(site.db_path) == {JOBS_TABLE, VERSION_TABLE}
    conn = sqlite3.connect(site.db_path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchall() == [(HEAD_REVISION,)]


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
    code = "from blackfish_jobs.store import Database; Database().migrate(); print('ok')"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(8)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outs]
    conn = sqlite3.connect(site.db_path)
    assert conn.execute(f"SELECT count(*) FROM {VERSION_TABLE}").fetchone()[0] == 1


# ----------------------------------------------------------------------------- rows and queries


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


def test_the_migrated_table_is_jobrow(tmp_path):
    """The migrations are the schema; JobRow's fields and the stored forms must match them."""
    import dataclasses

    path = tmp_path / "app.sqlite"
    schema.upgrade(str(path))
    with contextlib.closing(sqlite3.connect(path)) as conn:
        info = conn.execute(f"PRAGMA table_info({JOBS_TABLE})").fetchall()
    declared = {name: kind for _, name, kind, *_ in info}
    assert tuple(declared) == rowsmod.COLUMNS
    assert tuple(f.name for f in dataclasses.fields(dbmod.JobRow)) == rowsmod.COLUMNS
    assert {c for c, kind in declared.items() if kind == "JSON"} == rowsmod.JSON_COLUMNS
    assert {c for c, kind in declared.items() if kind == "DATETIME"} == rowsmod.DATETIME_COLUMNS


def test_values_are_stored_as_sqlalchemy_stored_them_and_read_back(tmp_path):
    """Databases written by earlier bfjobs (through SQLAlchemy) stay readable: the same rows and
    updates give the very text SQLAlchemy's JSON and DateTime types bind, and read back exactly
    what was written (JSON, NULLs, datetimes)."""
    import sqlalchemy as sa
    from sqlalchemy.dialects import sqlite as sqlite_dialect

    dialect = sqlite_dialect.dialect()
    json_bind = sa.JSON().bind_processor(dialect)
    datetime_bind = sa.DateTime().dialect_impl(dialect).bind_processor(dialect)

    def stored(row: dbmod.JobRow) -> tuple:
        values = []
        for column in rowsmod.COLUMNS:
            value = getattr(row, column)
            if column in rowsmod.JSON_COLUMNS:
                value = json_bind(value)
            elif column in rowsmod.DATETIME_COLUMNS and value is not None:
                value = datetime_bind(value)
            values.append(value)
        return tuple(values)

    rows = [_job(i) for i in range(12)]
    path = tmp_path / "lite.sqlite"
    db = dbmod.Database(f"sqlite:///{path}")
    db.insert_many(rows[:10])
    db.insert(rows[10])
    db.insert_many([rows[11]])
    assert _raw(path) == sorted(stored(r) for r in rows)
    moment = datetime(2026, 11, 27, 9, 30, 1, 5)
    changes = [  # updated_at given: otherwise "now" is stamped
        (rows[0].id, "PENDING", {"state": "RUNNING", "node": "n1", "reason": None, "updated_at": moment}),
        (rows[1].id, "PENDING", {"state": "FAILED"}),  # it is RUNNING: compare-and-set refuses
        (rows[4].id, "UNKNOWN", {"state": "COMPLETED", "result": {"a": ["\u00e9", 1.5]}, "ended_at": moment,
                                 "updated_at": moment}),
        (rows[5].id, "PENDING", {"state": "CANCELLED", "result": None, "ended_at": moment, "updated_at": moment}),
    ]
    assert db.update_many(changes) == {rows[0].id, rows[4].id, rows[5].id}
    db.update(rows[2].id, reason="done \u2603", registered_at=moment, updated_at=moment)
    expected = {r.id: r for r in rows}
    for job_id, _state, values in changes[:1] + changes[2:]:
        for column, value in values.items():
            setattr(expected[job_id], column, value)
    expected[rows[2].id].reason, expected[rows[2].id].registered_at = "done \u2603", moment
    expected[rows[2].id].updated_at = moment
    assert _raw(path) == sorted(stored(r) for r in expected.values())
    got = dbmod.Database(f"sqlite:///{path}").listing(limit=0)
    by_id = {r.id: r for r in got}
    assert by_id == expected
    assert [job_json(r) for r in got] == [job_json(expected[r.id]) for r in got]
    assert by_id[rows[3].id] == rows[3]  # untouched: read back exactly as written
    assert by_id[rows[4].id].result == {"a": ["\u00e9", 1.5]} and by_id[rows[4].id].ended_at == moment
    assert by_id[rows[5].id].result is None and by_id[rows[2].id].registered_at == moment


def test_every_query_answers_what_the_rows_say(tmp_path):
    """Each query against a plain Python filter over the rows inserted."""
    path = tmp_path / "app.sqlite"
    url = f"sqlite:///{path}"
    rows = [_job(i) for i in range(40)]
    rows[13].id = "abc123def456"
    dbmod.Database(url).insert_many(rows)
    db = dbmod.Database(url)
    since = rows[17].submitted_at
    live = [r for r in rows if r.state not in FINISHED_STATES]
    newest = sorted(rows, key=lambda r: r.submitted_at, reverse=True)  # ids grow with submit time
    by_id = {r.id: r for r in rows}
    assert db.unfinished() == live
    assert db.unfinished([r.id for r in rows[::3]]) == [r for r in live if r in rows[::3]]
    assert db.unfinished(targets=["/cache/t1.sif", "/cache/t4.sif"]) == [
        r for r in live if r.target in ("/cache/t1.sif", "/cache/t4.sif")]
    assert db.unfinished(targets=[]) == []
    got = db.get_many([rows[5].id, rows[7].id, "nosuchid0000", rows[5].id])
    assert sorted(got, key=lambda r: r.id) == [rows[5], rows[7]]
    assert db.get(rows[9].id) == rows[9] and db.get("nosuchid0000") is None
    assert db.listing() == newest
    assert db.listing(limit=5) == newest[:5]
    assert db.listing(states=["FAILED", "PENDING"], kind="pull-image") == [
        r for r in newest if r.state in ("FAILED", "PENDING") and r.kind == "pull-image"]
    assert db.listing(profile="local", since=since, limit=0) == [
        r for r in newest if r.profile == "local" and r.submitted_at >= since]
    assert db.listing(since=since) == [r for r in newest if r.submitted_at >= since]
    assert db.resolve(rows[13].id) == rows[13]
    assert db.resolve("abc12") == rows[13]  # a unique prefix
    assert db.resolve(rows[6].native_id or "") == rows[6]  # a Slurm job id
    assert db.resolve("77_10") == by_id[f"{10:012x}"]  # an array element's id ("_" is no LIKE wildcard)
    assert db.safe_url() == url
    assert db.live_native_ids("slurm") == (
        [r.native_id for r in live if r.backend == "slurm" and r.native_id],
        min(r.submitted_at for r in live if r.backend == "slurm"))
    assert db.live_native_ids("slurm", "della")[0] == [
        r.native_id for r in live if r.backend == "slurm" and r.profile == "della" and r.native_id]
    with pytest.raises(BadInput, match="ambiguous"):
        db.resolve("00000000000")
    with pytest.raises(BadInput, match="no bfjobs job"):
        db.resolve("fff")


def test_live_native_ids_skip_unknown_ids_but_not_their_submit_time(tmp_path):
    """A live job whose id is not known yet (a remote submission's placeholder: NULL) names no
    id in sacct's list, yet its submit time still bounds ``-S``: the survey computes the same."""
    url = f"sqlite:///{tmp_path / 'app.sqlite'}"
    rows = [_job(i, backend="slurm", state="PENDING") for i in range(1, 4)]
    rows[0].native_id = None  # the oldest
    rows[1].native_id = ""
    dbmod.Database(url).insert_many(rows)
    db = dbmod.Database(url)
    assert db.live_native_ids("slurm") == ([rows[2].native_id], rows[0].submitted_at)
    assert db.live_native_ids("local") == ([], None)


def test_many_ids_are_read_in_chunks(tmp_path):
    """More ids than an old SQLite allows parameters in one statement (999)."""
    rows = [_job(i, id=f"many{i:08d}", state="PENDING") for i in range(1200)]
    db = dbmod.Database(f"sqlite:///{tmp_path / 'app.sqlite'}")
    db.insert_many(rows)
    ids = [r.id for r in rows]
    assert sorted(r.id for r in db.get_many(ids)) == ids
    assert [r.id for r in db.unfinished(ids)] == ids


def test_json_columns_decode_on_first_use(tmp_path):
    """Rows read from the store keep their JSON as text until asked (status reads every live row)."""
    db = dbmod.Database(f"sqlite:///{tmp_path / 'app.sqlite'}")
    row = _job(3)  # result {...}
    db.insert(row)
    got = db.get(row.id)
    assert "request" not in vars(got) and "result" not in vars(got)
    assert got.request == row.request and "request" in vars(got) and "_json_request" not in vars(got)
    assert got == row and got.result == row.result
    got.request = {"changed": True}
    assert got.request == {"changed": True}
    with pytest.raises(AttributeError):
        _ = got.no_such_field


def test_an_older_schema_is_migrated_before_the_store_reads_it(tmp_path):
    """A database at revision 0001 (no registered_at): not at head, so Alembic migrates it first."""
    path = tmp_path / "old.sqlite"
    schema.upgrade(str(path), "0001")
    with contextlib.closing(schema.connect(str(path))) as conn:
        assert schema.revision(conn) == "0001" and not schema.at_head(conn)
    db = dbmod.Database(f"sqlite:///{path}")
    assert db.listing() == []
    assert db.current_revision() == HEAD_REVISION
    with contextlib.closing(schema.connect(str(path))) as conn:
        assert schema.at_head(conn)


def test_migration_0004_fills_in_where_earlier_downloads_went(tmp_path):
    """Rows from before 0004: a download's request says shared or not; an image pull's does not say."""
    path = tmp_path / "old.sqlite"
    schema.upgrade(str(path), "0003")
    columns = [c for c in rowsmod.COLUMNS if c != "location"]
    old_rows = [
        job_row(1, kind="download-model", request={"repo_id": "a/b", "shared": True}),
        job_row(2, kind="download-model", request={"repo_id": "a/c", "shared": False}),
        job_row(3),  # an image pull
    ]
    with contextlib.closing(schema.connect(str(path))) as conn, conn:
        conn.executemany(
            f"INSERT INTO {JOBS_TABLE} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
            [[rowsmod.to_sql(c, getattr(r, c)) for c in columns] for r in old_rows],
        )
    db = dbmod.Database(f"sqlite:///{path}")
    assert {r.id: r.location for r in db.listing()} == {
        old_rows[0].id: "shared", old_rows[1].id: "home", old_rows[2].id: None,
    }


def test_status_reads_of_unfinished_jobs_use_the_partial_index(tmp_path):
    """Only live rows are read, however long the history: the queries carry the index's own term."""
    import importlib

    migration = importlib.import_module("blackfish_jobs.store.migrations.versions.0003_unfinished_index")
    assert migration.UNFINISHED == jobsmod.UNFINISHED  # else SQLite silently stops using it
    db = dbmod.Database(f"sqlite:///{tmp_path / 'app.sqlite'}")
    conn = db.conn
    live = jobsmod.UNFINISHED
    slurm_ids = f"SELECT group_concat(native_id, ','), min(submitted_at) FROM {JOBS_TABLE} WHERE {live} AND backend = ?"
    newest = f"{jobsmod.SELECT} WHERE {jobsmod.UNFINISHED} ORDER BY submitted_at DESC, id"
    for sql, params in [
        (slurm_ids, ("slurm",)),
        (slurm_ids + " AND profile = ?", ("slurm", "della")),
        (f"{jobsmod.SELECT} WHERE {jobsmod.UNFINISHED} ORDER BY submitted_at", ()),
        (newest, ()),
    ]:
        plan = " ".join(str(step[-1]) for step in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
        assert "USING" in plan and "INDEX ix_bfjobs_jobs_unfinished" in plan, plan
    # the statements the code runs are those checked above
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    db.live_native_ids("slurm", "della")
    db.unfinished()
    db.unfinished(newest_first=True)
    assert statements == [slurm_ids.replace("?", "'slurm'") + " AND profile = 'della'",
                          f"{jobsmod.SELECT} WHERE {jobsmod.UNFINISHED} ORDER BY submitted_at", newest]


def test_store_connection_has_blackfish_pragmas(tmp_path):
    db = dbmod.Database(f"sqlite:///{tmp_path / 'app.sqlite'}")
    conn = db.conn
    assert [conn.execute(f"PRAGMA {name}").fetchone()[0] for name in
            ("journal_mode", "busy_timeout", "foreign_keys", "synchronous")] == ["wal", 5000, 1, 1]


@pytest.mark.parametrize("opener", ["stdlib", "sqlalchemy"])
def test_opening_a_fresh_store_another_process_is_creating_waits(tmp_path, opener):
    """Two ``submit``s racing on a new store (CI saw "database is locked"): the file is not WAL
    yet and another connection holds the write lock; SQLite answers the switch to WAL at once,
    without its busy timeout. Opening waits for the writer instead."""
    import threading
    import time

    path = str(tmp_path / "app.sqlite")
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("CREATE TABLE t (x)")
    threading.Timer(0.4, lambda: writer.execute("COMMIT")).start()
    started = time.monotonic()
    if opener == "stdlib":
        with contextlib.closing(schema.connect(path)) as conn:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    else:
        import sqlalchemy as sa

        engine = schema.engine(path)
        with engine.connect() as conn:
            mode = conn.execute(sa.text("PRAGMA journal_mode")).scalar()
        engine.dispose()
    assert mode == "wal" and time.monotonic() - started >= 0.3
    writer.close()


@pytest.mark.parametrize("url", [
    "sqlite:////abs/dir/app.sqlite", "sqlite:///rel/app.sqlite", "sqlite+pysqlite:////x/a b@c.db",
    "sqlite://", "sqlite:///:memory:", "sqlite:///x.db?timeout=3", "sqlite:///a%2Fb", "sqlite:///~u/x.db",
    "sqlite:///line\nbreak", "sqlite:///a\x00b", "postgresql://u@h/db", "SQLITE:///x.db", "sqlite:///x#y",
])
def test_only_plain_sqlite_file_urls_name_a_file(url):
    import sqlalchemy as sa

    path = dbmod.sqlite_path(url)
    plain = url.startswith(("sqlite:///", "sqlite+pysqlite:///")) and url[-1] not in "/:" and not any(
        c in url for c in "?%~\n\x00#")
    assert (path is not None) == (plain and ":memory:" not in url), url
    if path is not None:
        assert path == sa.engine.make_url(url).database  # the very file SQLAlchemy would open


@pytest.mark.parametrize(("url", "scheme"), [
    ("postgresql://blackfish:s3cret@db.example.org:5432/app", "postgresql"),
    ("mysql+pymysql://root:hunter2@localhost/app", "mysql+pymysql"),
    ("mariadb://u:pw@h/db", "mariadb"),
])
def test_a_non_sqlite_url_is_one_clear_line(site, url, scheme):
    """Blackfish's app database is SQLite: other URLs are refused, naming the scheme and nothing else."""
    for proc in (site.bfjobs("--db", url, "list"), site.bfjobs("status", BFJOBS_DB_URL=url)):
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and proc.stdout == "", proc.stderr
        line = proc.stderr.strip()
        assert f"{scheme}://" in line and "SQLite only" in line, line
        secret = url.split("://", 1)[1]
        assert not any(part in line for part in (secret, secret.split("@")[0], "@")), line


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_database_is_refused(url):
    with pytest.raises(BadInput, match="in-memory database keeps no jobs"):
        dbmod.Database(url)


def test_a_command_closes_the_store_so_sqlite_tidies_its_wal_files(site):
    """The entry point skips the exit's garbage collection (gc.freeze); the store is closed
    explicitly, so a `list` leaves no -wal/-shm files beside Blackfish's database."""
    site.bfjobs("list", check=True)  # creates and migrates the store, then reads it
    site.bfjobs("list", check=True)
    assert site.db_path.exists()
    assert not Path(f"{site.db_path}-wal").exists() and not Path(f"{site.db_path}-shm").exists()


def test_closing_the_client_after_registering_leaves_no_wal_files(site):
    """Blackfish's table is written through SQLAlchemy: its engine is the store's and is disposed
    with it, so a caller that closes the Client (as every command does) leaves no -wal/-shm files,
    even while its process lives on (Blackfish itself, a site's script)."""
    from blackfish_jobs.api import Client

    create_blackfish_db(site.db_path)
    done = job_row(
        1, kind="download-model", state="COMPLETED", ended_at=rowsmod.utcnow(),
        result={"repo_id": "ns/tiny", "commit": "a" * 40, "model_dir": str(site.root / "models--ns--tiny"),
                "bytes": 10},
    )
    client = Client(f"sqlite:///{site.db_path}")
    client.db.insert(done)
    assert client.sync().to_json()["registered"] == 1
    client.close()
    with contextlib.closing(sqlite3.connect(site.db_path)) as conn:
        assert conn.execute("SELECT repo, revision FROM model").fetchall() == [("ns/tiny", "a" * 40)]
    assert not Path(f"{site.db_path}-wal").exists() and not Path(f"{site.db_path}-shm").exists()
