"""Where the job store lives and which schema it has: URLs, connections, Alembic.

bfjobs' tables are created and changed only by its Alembic migrations (``migrations/``), with
its own version table (``bfjobs_alembic_version``); Blackfish's tables and ``ddl_version`` are
never created or altered. The everyday path checks the version row with one ``sqlite3`` SELECT
and imports SQLAlchemy and Alembic (slow to import) only when the database is not at head.

Blackfish's app database is SQLite, and so is bfjobs' store: other URLs are refused in one line
that names only their scheme (a URL may carry a password). SQLite is opened the way Blackfish
opens it: WAL, a busy timeout, foreign keys, ``synchronous=NORMAL``.
"""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..constants import HEAD_REVISION, VERSION_TABLE
from ..errors import BadInput, show

if TYPE_CHECKING:
    import sqlalchemy as sa

#: Applied to every connection, the stdlib's and SQLAlchemy's (Blackfish opens its DB so), after
#: WAL mode (:func:`_wal`).
PRAGMAS = ("busy_timeout=5000", "foreign_keys=ON", "synchronous=NORMAL")
#: How long :func:`_wal` keeps trying, in seconds (the same as the busy timeout).
_WAL_PATIENCE = 5.0

MIGRATIONS = Path(__file__).with_name("migrations")

_URL_PREFIXES = ("sqlite:///", "sqlite+pysqlite:///")


def sqlite_path(url: str) -> str | None:
    """The file of a plain ``sqlite:///path`` URL (what SQLAlchemy would open), else None.

    Unchecked input (the early ``status`` path reads the URL before the CLI validates it): a
    query string, percent-escapes, ``~``, control characters and ``:memory:`` give None.
    """
    path = next((url[len(p) :] for p in _URL_PREFIXES if url.startswith(p)), None)
    if not path or path == ":memory:" or any(c in path for c in "?#%~") or not path.isprintable():
        return None
    return path


def check_url(url: str) -> str:
    """The SQLite file a database URL names; refuse anything that would be misread.

    bfjobs writes where the user said, or nowhere: an absolute file with portable characters (no
    query string, ``%`` escapes or ``~user`` surprises; ``~`` alone is expanded). An in-memory
    database would forget every job at exit, so it is refused too.
    """
    from .. import validate

    validate.basic("--db", url, max_len=2048)
    scheme = re.match(r"^([a-z][a-z0-9+]*)://", url)
    if not scheme:
        raise BadInput(f"--db: not a database URL (e.g. sqlite:////path/app.sqlite): {show(url)}")
    if not scheme.group(1).startswith("sqlite"):
        raise BadInput(
            f"--db: bfjobs keeps its jobs in SQLite only, as Blackfish does; a {scheme.group(1)}:// URL "
            "is not supported (use sqlite:////absolute/path/app.sqlite)"
        )
    if url in ("sqlite://", "sqlite:///:memory:"):
        raise BadInput("--db: an in-memory database keeps no jobs: name a file (sqlite:////absolute/path/app.sqlite)")
    if not url.startswith("sqlite:///") or any(c in url for c in "?#%"):
        raise BadInput(f"--db: expected sqlite:////absolute/path/file.sqlite (no query string): {show(url)}")
    path = url[len("sqlite:///") :]
    if path.startswith("~"):
        try:
            path = str(Path(path).expanduser())
        except (RuntimeError, KeyError, ValueError):
            raise BadInput(f"--db: cannot expand '~' in {show(url)}") from None
    elif not path.startswith("/"):
        raise BadInput(f"--db: the SQLite file must be an absolute path: {show(url)}")
    validate.safe_path("--db", path)
    return "sqlite:///" + path


def connect(path: str) -> sqlite3.Connection:
    """A connection in autocommit mode (writes open their own transaction) with Blackfish's pragmas."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=_WAL_PATIENCE)
    apply_pragmas(conn)
    return conn


def apply_pragmas(conn: sqlite3.Connection) -> None:
    """WAL mode, then :data:`PRAGMAS`, on a new connection (either driver's: SQLAlchemy hands
    over the same ``sqlite3`` connection)."""
    _wal(conn)
    for pragma in PRAGMAS:
        conn.execute(f"PRAGMA {pragma}")


def _wal(conn: sqlite3.Connection) -> None:
    """Switch the file to WAL unless it is already (the mode is stored in the file).

    Why not plain ``PRAGMA journal_mode=WAL``: on a fresh file that several processes open at
    once (two ``submit``s racing to create the store), SQLite answers "database is locked" at
    once to the one that cannot get the exclusive lock the switch needs, without waiting for the
    busy timeout; the CI saw that. Asking first costs nothing once the file is WAL, and a locked
    answer is retried for as long as the busy timeout would have waited.
    """
    deadline = time.monotonic() + _WAL_PATIENCE
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def revision(conn: sqlite3.Connection) -> str | None:
    """The bfjobs schema revision of this database (None before the first migration)."""
    try:
        # fetchall: the statement runs to its end, so no read transaction outlives this call
        rows = conn.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchall()
    except sqlite3.OperationalError:  # no version table yet
        return None
    return rows[0][0] if rows else None


def at_head(conn: sqlite3.Connection) -> bool:
    """Is this database's bfjobs schema at :data:`HEAD_REVISION`? (False for any SQLite error.)"""
    try:
        return revision(conn) == HEAD_REVISION
    except sqlite3.Error:
        return False


def engine(path: str) -> sa.Engine:
    """A SQLAlchemy engine on the file, with the same pragmas (Alembic, Blackfish's table)."""
    import sqlalchemy as sa

    created = sa.create_engine(f"sqlite:///{path}")
    sa.event.listen(created, "connect", _pragmas)
    return created


def _pragmas(dbapi_conn: Any, _record: Any) -> None:
    apply_pragmas(dbapi_conn)


def upgrade(path: str, target: str = "head") -> None:
    """Run bfjobs' migrations up to ``target`` unless the database is at head already.

    Two processes may race here on a fresh database; the loser's CREATE fails, it re-reads the
    version and carries on once the winner has committed.
    """
    import sqlalchemy as sa
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    on = engine(path)
    try:
        for attempt in range(20):
            try:
                with on.begin() as conn:
                    if target == "head" and _sa_revision(conn) == HEAD_REVISION:
                        return
                    cfg.attributes["connection"] = conn
                    command.upgrade(cfg, target)
                return
            except sa.exc.OperationalError:
                if attempt == 19:
                    raise
                time.sleep(0.1 * (attempt + 1))
    finally:
        on.dispose()


def _sa_revision(conn: sa.Connection) -> str | None:
    import sqlalchemy as sa

    if not sa.inspect(conn).has_table(VERSION_TABLE):
        return None
    return conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
