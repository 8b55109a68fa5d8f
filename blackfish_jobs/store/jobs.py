"""bfjobs' job table: every query, once, on the stdlib ``sqlite3`` module.

Why the stdlib: ``import sqlalchemy`` alone costs more than the rest of a ``bfjobs list`` or
``status`` together, queries included (figures: benchmarks/README.md). The schema belongs to
the migrations (:mod:`.schema` runs Alembic when a database is not at head); this module reads
and writes rows of a database at head, one connection per thread.

The live-job reads carry :data:`.live.UNFINISHED`, the very term of the partial index migration
0003 creates: SQLite uses a partial index only for a query with the same term.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from .. import constants
from ..errors import BadInput, JobNotFound, show
from ..jobids import BY_NATIVE_ID
from ..jobids import describe as _describe
from . import schema
from .live import UNFINISHED, live_native_ids
from .rows import COLUMNS, JobRow, from_records, to_sql, utcnow

JOBS = constants.JOBS_TABLE
SELECT = f"SELECT {', '.join(COLUMNS)} FROM {JOBS}"
#: Ids per ``IN (...)``: old SQLite builds allow 999 parameters per statement.
_CHUNK = 500
#: Candidates named in an "ambiguous" or "job array" error, at most.
_SHOWN = 10


class _Transaction:
    """``BEGIN IMMEDIATE``: take the write lock up front (waiting up to busy_timeout) rather than
    fail when a read transaction cannot be upgraded under another writer."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def __enter__(self) -> Any:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        self.conn.execute("ROLLBACK" if kind is not None else "COMMIT")


def _qmarks(values: Sequence[Any]) -> str:
    return ", ".join("?" * len(values))


def _chunks(values: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


class Database:
    """bfjobs' jobs in one SQLite file (default: Blackfish's ``app.sqlite``), migrated to head on
    first use; one connection per thread."""

    def __init__(self, url: str | None = None) -> None:
        # A URL the user gave (--db, BFJOBS_DB_URL) must name an existing directory: a typo would
        # otherwise answer "no jobs" from a new empty file. Blackfish's own app dir is created.
        named_by = "--db" if url else "BFJOBS_DB_URL" if constants.db_url_env() else None
        self.url = schema.check_url(url or constants.default_db_url())
        self.path = self.url[len("sqlite:///") :]
        folder = Path(self.path).parent
        if named_by is None:
            folder.mkdir(parents=True, exist_ok=True)
        elif not folder.is_dir():
            raise BadInput(f"{named_by}: directory {show(str(folder), 300)} does not exist (bfjobs does not create it)")
        self._local = threading.local()
        self._migrated = False
        self._engine: Any = None  # SQLAlchemy's, for Blackfish's table: made on first use (see sa_engine)
        #: Ids of downloads seen completing while the database had no Blackfish ``model`` table
        #: (:func:`.blackfish.register`): the command that saw it says so once, at its end.
        self.unregistered: list[str] = []

    # ------------------------------------------------------------------ connection and schema

    @property
    def conn(self) -> Any:
        """This thread's ``sqlite3`` connection, the schema migrated to head first."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = schema.connect(self.path)
            if not self._migrated:  # one SELECT of the version, on the connection the command then uses
                if not schema.at_head(conn):
                    conn.close()
                    schema.upgrade(self.path)
                    conn = schema.connect(self.path)
                self._migrated = True
            self._local.conn = conn
        return conn

    def migrate(self) -> None:
        """Apply bfjobs' migrations if needed (one SELECT of the version when already at head)."""
        if not self._migrated:
            _ = self.conn  # opening this thread's connection migrates

    def current_revision(self) -> str | None:
        conn = schema.connect(self.path)
        try:
            return schema.revision(conn)
        finally:
            conn.close()

    def sa_engine(self) -> Any:
        """A SQLAlchemy engine on this file, for Blackfish's ``model`` table: one per store,
        made on first use (most commands never touch the table), disposed by :meth:`close`."""
        if self._engine is None:
            self._engine = schema.engine(self.path)
        return self._engine

    def close(self) -> None:
        """Close this thread's connection and the engine's pooled ones (reopened on next use),
        so SQLite checkpoints and removes its ``-wal``/``-shm`` files."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def safe_url(self) -> str:
        """The URL for messages (a SQLite file URL has no password to hide)."""
        return self.url

    def _transaction(self) -> _Transaction:
        return _Transaction(self.conn)

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[JobRow]:
        return from_records(self.conn.execute(sql, params))

    # ------------------------------------------------------------------ writes

    def insert(self, row: JobRow) -> None:
        self.insert_many([row])

    def insert_many(self, rows: Sequence[JobRow]) -> None:
        """Insert rows in one transaction (a job array's elements are recorded together)."""
        if not rows:
            return
        sql = f"INSERT INTO {JOBS} ({', '.join(COLUMNS)}) VALUES ({_qmarks(COLUMNS)})"
        values = [[to_sql(c, getattr(row, c)) for c in COLUMNS] for row in rows]
        with self._transaction() as conn:
            conn.executemany(sql, values)

    def replace_unconfirmed(self, ids: Sequence[str], rows: Sequence[JobRow]) -> None:
        """In one transaction: drop the placeholder rows ``ids`` (a remote submission's, recorded
        before its request was sent: no native id yet), then insert ``rows`` (what the cluster
        confirmed; usually the same ids)."""
        sql = f"INSERT INTO {JOBS} ({', '.join(COLUMNS)}) VALUES ({_qmarks(COLUMNS)})"
        with self._transaction() as conn:
            for chunk in _chunks(list(ids)):
                conn.execute(f"DELETE FROM {JOBS} WHERE native_id IS NULL AND id IN ({_qmarks(chunk)})", chunk)
            conn.executemany(sql, [[to_sql(c, getattr(row, c)) for c in COLUMNS] for row in rows])

    def update(self, job_id: str, **values: Any) -> None:
        values.setdefault("updated_at", utcnow())
        self._update([(job_id, None, values)])

    def update_many(self, changes: Sequence[tuple[str, str, dict[str, Any]]]) -> set[str]:
        """Apply ``(job_id, expected_state, values)`` in one transaction; return the ids changed.

        A row whose state another process changed meanwhile is left alone (compare-and-set), so
        two refreshers never both record the same transition; one transaction keeps a refresh
        of a thousand jobs to one write.
        """
        if not changes:
            return set()
        now = utcnow()
        return self._update([(job_id, expected, {"updated_at": now, **values}) for job_id, expected, values in changes])

    def mark_registered(self, job_id: str, at: datetime) -> None:
        """Record when a download was registered in Blackfish's ``model`` table (``updated_at``
        is the job's own: registering changes nothing about the job)."""
        self._update([(job_id, None, {"registered_at": at})])

    def _update(self, changes: Iterable[tuple[str, str | None, dict[str, Any]]]) -> set[str]:
        """``(job_id, expected state or None, values)`` in one transaction; the ids changed."""
        done: set[str] = set()
        with self._transaction() as conn:
            for job_id, expected, values in changes:
                unknown = set(values) - set(COLUMNS)
                if unknown:
                    raise ValueError(f"not columns of {JOBS}: {sorted(unknown)}")
                sql = f"UPDATE {JOBS} SET {', '.join(f'{c} = ?' for c in values)} WHERE id = ?"
                params = [to_sql(c, v) for c, v in values.items()] + [job_id]
                if expected is not None:
                    sql += " AND state = ?"
                    params.append(expected)
                if conn.execute(sql, params).rowcount:
                    done.add(job_id)
        return done

    # ------------------------------------------------------------------ reads

    def get(self, job_id: str) -> JobRow | None:
        rows = self.get_many([job_id])
        return rows[0] if rows else None

    def get_many(self, ids: Sequence[str]) -> list[JobRow]:
        """Rows by bfjobs id with one query per 500 ids (in no particular order; unknown ids are absent)."""
        unique = list(dict.fromkeys(ids))
        return [row for part in _chunks(unique) for row in self._rows(f"{SELECT} WHERE id IN ({_qmarks(part)})", part)]

    def resolve(self, ref: str) -> JobRow:
        """The one job ``ref`` names (see :meth:`resolve_many`); a job array's id names several
        jobs, so it is refused with its elements listed."""
        rows = self.resolve_many(ref)
        if len(rows) > 1:
            raise BadInput(
                f"{show(ref)} is a Slurm job array of {len(rows)} jobs: name one of them: {_candidates(rows)}"
            )
        return rows[0]

    def resolve_many(self, ref: str) -> list[JobRow]:
        """The jobs ``ref`` names, first match wins: a bfjobs id; a Slurm job id (a job array's id
        names all its elements ``<array>_<index>``, in index order); a unique bfjobs id prefix.

        Anything else is one error listing the candidates: a Slurm id recorded for jobs of
        different folders (a controller reset reused it) or a prefix of several ids.
        """
        if not ref or len(ref) > 64 or not ref.replace("_", "").isalnum():
            raise BadInput(f"not a job id: {show(ref)}")
        row = self.get(ref)
        if row is not None:
            return [row]
        # Slurm id ref, or array elements <ref>_<index> (a range: "_" sorts just before "`")
        named = sorted(BY_NATIVE_ID)
        sql = (
            f"{SELECT} WHERE backend IN ({_qmarks(named)}) AND (native_id = ? OR (native_id > ? AND native_id < ?))"
        )
        candidates = self._rows(sql, (*named, ref, ref + "_", ref + "`"))
        if candidates:
            if len({r.folder for r in candidates}) == 1:  # one job, or the elements of one array
                return sorted(candidates, key=_array_index)
            what = "Slurm job id"
        else:  # a bfjobs id prefix, LIKE-escaped
            pattern = ref.replace("/", "//").replace("%", "/%").replace("_", "/_") + "%"
            candidates = self._rows(f"{SELECT} WHERE id LIKE ? ESCAPE '/' ORDER BY id LIMIT ?", (pattern, _SHOWN + 1))
            if len(candidates) == 1:
                return candidates
            if not candidates:
                raise JobNotFound(f"no bfjobs job {show(ref)} in {self.safe_url()}")
            what = "job id prefix"
        raise JobNotFound(f"{what} {show(ref)} is ambiguous: {_candidates(candidates)}; use the full bfjobs id")

    def unfinished(
        self, ids: Sequence[str] | None = None, *, targets: Sequence[str] | None = None, newest_first: bool = False
    ) -> list[JobRow]:
        """Jobs not finished yet, oldest first: all (no ``ids``), or only these ids, or these targets.
        ``newest_first`` (all of them only): in ``list``'s order instead, which ``status`` shows
        (SQLite sorts 10,000 rows for less than Python's two sorts would cost)."""
        column, values = ("target", targets) if targets is not None else ("id", ids)
        if not values:
            if targets is not None:
                return []
            order = "submitted_at DESC, id" if newest_first else "submitted_at"
            return self._rows(f"{SELECT} WHERE {UNFINISHED} ORDER BY {order}")
        rows: list[JobRow] = []
        for part in _chunks(list(dict.fromkeys(values))):
            rows += self._rows(f"{SELECT} WHERE {UNFINISHED} AND {column} IN ({_qmarks(part)})", part)
        return sorted(rows, key=lambda r: r.submitted_at)

    def live_native_ids(self, backend: str, profile: str | None = None) -> tuple[list[str], datetime | None]:
        """See :func:`live_native_ids`."""
        return live_native_ids(self.conn, backend, profile)

    def pending_registration(self, kinds: Sequence[str]) -> list[JobRow]:
        """Completed jobs of ``kinds`` (those that register) not yet registered in Blackfish's
        ``model`` table, oldest first."""
        if not kinds:
            return []
        where = f"kind IN ({_qmarks(kinds)}) AND state = 'COMPLETED' AND registered_at IS NULL"
        return self._rows(f"{SELECT} WHERE {where} ORDER BY submitted_at", list(kinds))

    def listing(
        self,
        *,
        states: Iterable[str] = (),
        kind: str | None = None,
        profile: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> list[JobRow]:
        """Newest first, filtered as ``bfjobs list`` asks."""
        states = list(states)
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
        sql = SELECT + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY submitted_at DESC, id"
        if limit:
            sql += " LIMIT ?"
            params.append(limit)
        return self._rows(sql, params)


def _array_index(row: JobRow) -> int:
    """An array element's index (``3269_7`` -> 7); -1 for a job that is not an element."""
    _, sep, index = (row.native_id or "").rpartition("_")
    return int(index) if sep and index.isdigit() else -1


def _candidates(rows: Sequence[JobRow]) -> str:
    """Jobs named in one line: id, Slurm id or pid, submit time; the first :data:`_SHOWN`."""
    shown = []
    for row in rows[:_SHOWN]:
        shown.append(f"{row.id} ({_describe(row)}, submitted {row.submitted_at:%Y-%m-%d %H:%M})")
    return ", ".join(shown) + (" and more" if len(rows) > _SHOWN else "")
