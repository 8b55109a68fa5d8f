"""bfjobs' job table on SQLite through the stdlib ``sqlite3`` module: the fast path of :mod:`db`.

Why: ``import sqlalchemy`` alone costs 110-135 ms, most of a ``bfjobs list`` or ``status``,
whose queries take a few ms. SQLAlchemy and Alembic still own the schema: the table is defined
once in :mod:`db` and created by the migrations. This module only reads and writes rows of a
database already at :data:`constants.HEAD_REVISION` (:meth:`SqliteJobs.open` checks that with one
SELECT and returns None otherwise, so :class:`db.Database` migrates through Alembic first).

Values are stored byte for byte as SQLAlchemy stores them: JSON columns as ``json.dumps(value)``
(``None`` too, as the text ``null``), datetimes as naive ``YYYY-MM-DD HH:MM:SS.ffffff``; the
connection gets the same pragmas. Either path reads what the other wrote (tests/test_db.py).

``bfjobs status`` reads the unfinished Slurm jobs through :func:`at_head` and
:func:`slurm_unfinished` before it starts ``sacct`` (entry.py): no SQLAlchemy here.

Only plain file URLs (``sqlite:///path``) take this path: a query string, percent-escapes, ``~``
or control characters — and every other database — go through SQLAlchemy, unchanged.
"""

from __future__ import annotations

import sqlite3
from datetime import date, datetime
from typing import TYPE_CHECKING

from .constants import HEAD_REVISION, JOBS_TABLE, VERSION_TABLE
from .states import FINISHED

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence
    from typing import Any

    from .db import JobRow

#: Applied to every connection, here and on SQLAlchemy's engine (Blackfish opens its DB so).
PRAGMAS = ("journal_mode=WAL", "busy_timeout=5000", "foreign_keys=ON", "synchronous=NORMAL")

#: ``bfjobs_jobs``' columns in table (and :class:`db.JobRow` field) order; tests check them
#: against the SQLAlchemy table, which is the definition.
COLUMNS = (
    "id", "kind", "profile", "backend", "native_id", "state", "reason", "folder", "target", "request",
    "result", "node", "user", "submitted_at", "ended_at", "updated_at", "registered_at",
)  # fmt: skip
JSON_COLUMNS = frozenset({"request", "result"})
DATETIME_COLUMNS = frozenset({"submitted_at", "ended_at", "updated_at", "registered_at"})

_URL_PREFIXES = ("sqlite:///", "sqlite+pysqlite:///")
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM {JOBS_TABLE}"
_UNFINISHED = f"state NOT IN ({', '.join(repr(s.value) for s in sorted(FINISHED))})"
_JSON_AT = tuple(i for i, c in enumerate(COLUMNS) if c in JSON_COLUMNS)
_DATETIME_AT = tuple(i for i, c in enumerate(COLUMNS) if c in DATETIME_COLUMNS)
#: Ids per ``IN (...)``: old SQLite builds allow 999 parameters per statement.
_CHUNK = 500


def sqlite_path(url: str) -> str | None:
    """The file of a plain ``sqlite:///path`` URL (what SQLAlchemy would open), else None."""
    path = next((url[len(p) :] for p in _URL_PREFIXES if url.startswith(p)), None)
    if not path or path == ":memory:" or any(c in path for c in "?#%~") or not path.isprintable():
        return None
    return path


def to_sql(column: str, value: Any) -> Any:
    """A Python value as SQLAlchemy binds it for ``column`` (JSON text, datetime text)."""
    if column in JSON_COLUMNS:
        import json  # not at module level: `bfjobs status` imports this module before starting sacct

        return json.dumps(value)
    if column in DATETIME_COLUMNS and value is not None:
        if not isinstance(value, date):
            raise TypeError(f"{column}: SQLite DateTime type only accepts Python datetime and date objects")
        if not isinstance(value, datetime):
            value = datetime(value.year, value.month, value.day)
        return (
            f"{value.year:04d}-{value.month:02d}-{value.day:02d} "
            f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}.{value.microsecond:06d}"
        )
    return value


def connect(path: str) -> sqlite3.Connection:
    """A connection in autocommit mode (writes open their own transaction) with Blackfish's pragmas."""
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in PRAGMAS:
        conn.execute(f"PRAGMA {pragma}")
    return conn


def at_head(conn: sqlite3.Connection) -> bool:
    """Is this database's bfjobs schema at :data:`HEAD_REVISION`? (False for any SQLite error.)"""
    try:
        row = conn.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchone()
    except sqlite3.Error:
        return False
    return row is not None and row[0] == HEAD_REVISION


def slurm_unfinished(conn: sqlite3.Connection, profile: str | None = None) -> tuple[list[str | None], datetime | None]:
    """Slurm ids of the unfinished Slurm jobs and their oldest submit time: all ``status`` needs
    for its sacct call (the stored text sorts as the times do: fixed width, zero-padded)."""
    sql = f"SELECT native_id, submitted_at FROM {JOBS_TABLE} WHERE {_UNFINISHED} AND backend = 'slurm'"
    params: tuple[str, ...] = ()
    if profile:
        sql, params = sql + " AND profile = ?", (profile,)
    found = conn.execute(sql, params).fetchall()
    if not found:
        return [], None
    return [sid for sid, _ in found], datetime.fromisoformat(min(at for _, at in found))


class _Transaction:
    """``BEGIN IMMEDIATE``: take the write lock up front (waiting up to busy_timeout) rather than
    fail when a read transaction cannot be upgraded under another writer."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        self.conn.execute("ROLLBACK" if kind is not None else "COMMIT")


def _qmarks(values: Sequence[Any]) -> str:
    return ", ".join("?" * len(values))


def _chunks(values: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


class SqliteJobs:
    """Rows of ``bfjobs_jobs`` in one SQLite file at the head schema; one connection per thread."""

    def __init__(self, path: str) -> None:
        import threading

        self.path = path
        self._local = threading.local()

    @classmethod
    def open(cls, path: str) -> SqliteJobs | None:
        """A handle if the file's schema is at head, else None (migrate through Alembic first).

        Any SQLite error (no version table yet, a file that cannot be opened) also gives None:
        the SQLAlchemy path then meets the same problem and reports it as it always has.
        """
        store = cls(path)
        try:
            if at_head(store.conn):
                return store
        except sqlite3.Error:  # the file cannot be opened as a database
            pass
        store.close()
        return None

    @property
    def conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = connect(self.path)
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _transaction(self) -> _Transaction:
        return _Transaction(self.conn)

    # ------------------------------------------------------------------ reads

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[JobRow]:
        import json

        from .db import JobRow  # db imports this module; JobRow is needed only once rows exist

        loads, parse = json.loads, datetime.fromisoformat
        rows = []
        for record in self.conn.execute(sql, params):
            values = list(record)
            for i in _JSON_AT:
                if values[i] is not None:
                    values[i] = loads(values[i])
            for i in _DATETIME_AT:
                if values[i] is not None:
                    values[i] = parse(values[i])
            rows.append(JobRow(*values))
        return rows

    def get_many(self, ids: Sequence[str]) -> list[JobRow]:
        """Rows by id (any order; unknown ids are simply absent)."""
        unique = list(dict.fromkeys(ids))
        return [row for part in _chunks(unique) for row in self._rows(f"{_SELECT} WHERE id IN ({_qmarks(part)})", part)]

    def slurm_jobs(self, ref: str) -> list[JobRow]:
        """Slurm jobs whose id is ``ref``, or elements ``<ref>_<index>`` of the job array ``ref``
        (a range over the ``native_id`` index: ``"_"`` sorts just before ``"`"``)."""
        sql = (
            f"{_SELECT} WHERE backend = 'slurm' AND (native_id = ? OR (native_id > ? AND native_id < ?))"
        )
        return self._rows(sql, (ref, ref + "_", ref + "`"))

    def prefixed(self, ref: str, limit: int) -> list[JobRow]:
        """Up to ``limit`` jobs whose bfjobs id starts with ``ref`` (``LIKE`` escaped as
        SQLAlchemy's ``startswith(autoescape=True)`` does)."""
        pattern = ref.replace("/", "//").replace("%", "/%").replace("_", "/_") + "%"
        return self._rows(f"{_SELECT} WHERE id LIKE ? ESCAPE '/' ORDER BY id LIMIT ?", (pattern, limit))

    def unfinished(self, ids: Sequence[str] | None = None, *, targets: Sequence[str] | None = None) -> list[JobRow]:
        """Jobs not finished yet, oldest first: all (no ``ids``), or only these ids or targets."""
        column, values = ("target", targets) if targets is not None else ("id", ids)
        if not values:
            return [] if targets is not None else self._rows(f"{_SELECT} WHERE {_UNFINISHED} ORDER BY submitted_at")
        rows: list[JobRow] = []
        for part in _chunks(list(dict.fromkeys(values))):
            rows += self._rows(f"{_SELECT} WHERE {_UNFINISHED} AND {column} IN ({_qmarks(part)})", part)
        return sorted(rows, key=lambda r: r.submitted_at)

    def slurm_unfinished(self, profile: str | None = None) -> tuple[list[str | None], datetime | None]:
        """See :func:`slurm_unfinished`."""
        return slurm_unfinished(self.conn, profile)

    def listing(
        self,
        *,
        states: Sequence[str] = (),
        kind: str | None = None,
        profile: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> list[JobRow]:
        """Newest first, filtered as ``bfjobs list`` asks."""
        where: list[str] = []
        params: list[Any] = []
        if states:
            where.append(f"state IN ({_qmarks(states)})")
            params += states
        for column, value in (("kind", kind), ("profile", profile)):
            if value:
                where.append(f"{column} = ?")
                params.append(value)
        if since:
            where.append("submitted_at >= ?")
            params.append(to_sql("submitted_at", since))
        sql = _SELECT + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY submitted_at DESC, id"
        if limit:
            sql += " LIMIT ?"
            params.append(limit)
        return self._rows(sql, params)

    # ------------------------------------------------------------------ writes

    def insert_many(self, rows: Iterable[JobRow]) -> None:
        """Insert rows in one transaction."""
        sql = f"INSERT INTO {JOBS_TABLE} ({', '.join(COLUMNS)}) VALUES ({_qmarks(COLUMNS)})"
        values = [[to_sql(c, getattr(row, c)) for c in COLUMNS] for row in rows]
        with self._transaction() as conn:
            conn.executemany(sql, values)

    def update_many(self, changes: Iterable[tuple[str, str | None, dict[str, Any]]]) -> set[str]:
        """Apply ``(job_id, expected_state or None, values)`` in one transaction; the ids changed.

        With an expected state a row is changed only if it still has it (compare-and-set).
        """
        done: set[str] = set()
        with self._transaction() as conn:
            for job_id, expected, values in changes:
                unknown = set(values) - set(COLUMNS)
                if unknown:
                    raise ValueError(f"not columns of {JOBS_TABLE}: {sorted(unknown)}")
                sql = f"UPDATE {JOBS_TABLE} SET {', '.join(f'{c} = ?' for c in values)} WHERE id = ?"
                params = [to_sql(c, v) for c, v in values.items()] + [job_id]
                if expected is not None:
                    sql += " AND state = ?"
                    params.append(expected)
                if conn.execute(sql, params).rowcount:
                    done.add(job_id)
        return done
