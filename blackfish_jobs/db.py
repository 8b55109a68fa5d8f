"""bfjobs' job table in Blackfish's app database (SQLite by default).

bfjobs owns only its own tables, defined here with SQLAlchemy Core and created by its own
Alembic migrations with its own version table (``bfjobs_alembic_version``); Blackfish's tables
and ``ddl_version`` are never created or altered here. SQLite is opened the way Blackfish opens
it: WAL, a busy timeout, foreign keys, ``synchronous=NORMAL``.

Rows of a plain SQLite file at the head schema go through the stdlib (:mod:`sqlite_jobs`):
``import sqlalchemy`` alone costs more than a whole ``bfjobs list`` that way. SQLAlchemy is
imported only when needed: migrations, other databases (``--db postgresql://…``), ``begin``.
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import constants
from .errors import BadInput, JobNotFound, show
from .sqlite_jobs import PRAGMAS, SqliteJobs, sqlite_path
from .states import FINISHED

if TYPE_CHECKING:
    import sqlalchemy as sa

#: The newest migration; checked against the migrations folder by the tests.
HEAD_REVISION = constants.HEAD_REVISION


@functools.cache
def _tables() -> tuple[sa.MetaData, sa.Table]:
    """bfjobs' table, the one definition of its schema (the migrations create it).

    Built on first use, with ``metadata`` and ``jobs`` reached as module attributes: importing
    SQLAlchemy costs more than a whole ``bfjobs list`` on the stdlib path.
    """
    import sqlalchemy as sa

    metadata = sa.MetaData()
    jobs = sa.Table(
        constants.JOBS_TABLE,
        metadata,
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("profile", sa.String(128), nullable=False),
        sa.Column("backend", sa.String(16), nullable=False),
        sa.Column("native_id", sa.String(64)),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("folder", sa.String(1024), nullable=False),
        sa.Column("target", sa.String(1024), nullable=False),
        sa.Column("request", sa.JSON, nullable=False),
        sa.Column("result", sa.JSON),
        sa.Column("node", sa.String(256)),
        sa.Column("user", sa.String(128)),
        sa.Column("submitted_at", sa.DateTime, nullable=False),
        sa.Column("ended_at", sa.DateTime),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("registered_at", sa.DateTime),  # download registered in Blackfish's model table
    )
    return metadata, jobs


def __getattr__(name: str) -> Any:
    """``metadata`` and ``jobs``: SQLAlchemy objects, built when first asked for."""
    if name == "metadata":
        return _tables()[0]
    if name == "jobs":
        return _tables()[1]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def utcnow() -> datetime:
    """Naive UTC, as Blackfish stores its timestamps."""
    from datetime import UTC

    return datetime.now(UTC).replace(tzinfo=None)


@dataclass
class JobRow:
    """One bfjobs job as stored."""

    id: str
    kind: str
    profile: str
    backend: str
    native_id: str | None
    state: str
    reason: str | None
    folder: str
    target: str
    request: dict[str, Any]
    result: dict[str, Any] | None
    node: str | None
    user: str | None
    submitted_at: datetime
    ended_at: datetime | None
    updated_at: datetime
    registered_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        """The stable JSON shape of a job (documented in the README)."""
        return {
            "id": self.id,
            "slurm_job_id": self.native_id if self.backend == "slurm" else None,
            "local_pid": int(self.native_id) if self.backend == "local" and self.native_id else None,
            "kind": self.kind,
            "state": self.state,
            "reason": self.reason,
            "profile": self.profile,
            "backend": self.backend,
            "target": self.target,
            "request": self.request,
            "result": self.result,
            "node": self.node,
            "user": self.user,
            "folder": self.folder,
            "submitted_at": _iso(self.submitted_at),
            "ended_at": _iso(self.ended_at),
            "updated_at": _iso(self.updated_at),
            "registered_at": _iso(self.registered_at),
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") + "Z" if value else None


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    for pragma in PRAGMAS:
        cur.execute(f"PRAGMA {pragma}")
    cur.close()


def check_url(url: str) -> str:
    """Refuse a database URL that would be misread: bfjobs writes where the user said, or nowhere.

    SQLite URLs must name an absolute file with portable characters (no query string, ``%``
    escapes or ``~user`` surprises); other URLs go to SQLAlchemy, whose errors become one line.
    """
    from . import validate

    validate.basic("--db", url, max_len=2048)
    if not re.match(r"^[a-z][a-z0-9+]*://", url):
        raise BadInput(f"--db: not a database URL (e.g. sqlite:////path/app.sqlite): {show(url)}")
    if not url.startswith("sqlite"):
        return url
    if url in ("sqlite://", "sqlite:///:memory:"):
        return url
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


class Database:
    """A handle on the app database with bfjobs' table migrated to the current head.

    A plain SQLite file (the default, Blackfish's ``app.sqlite``) is read and written through
    the stdlib (:mod:`sqlite_jobs`) once its schema is at head, so the everyday commands never
    import SQLAlchemy; Alembic still migrates it, and SQLAlchemy serves every other URL.
    ``stdlib_sqlite=False`` forces SQLAlchemy (the tests compare the two paths).
    """

    def __init__(self, url: str | None = None, *, stdlib_sqlite: bool = True) -> None:
        # A URL the user gave (--db, BFJOBS_DB_URL) must name an existing directory: a typo would
        # otherwise answer "no jobs" from a new empty file. Blackfish's own app dir is created.
        self._named_by = "--db" if url else "BFJOBS_DB_URL" if constants.db_url_env() else None
        self.url = check_url(url or constants.default_db_url())
        self._sqlite_file = sqlite_path(self.url) if stdlib_sqlite else None
        self._store: SqliteJobs | None = None
        self._migrated = False
        if self._sqlite_file is not None:
            self._directory(Path(self._sqlite_file).parent)
        else:
            _ = self.engine  # a bad URL is refused now, before any work

    def _directory(self, folder: Path) -> None:
        """Create the default database's folder; refuse a missing folder of a URL the user gave."""
        if self._named_by is None:
            folder.mkdir(parents=True, exist_ok=True)
        elif not folder.is_dir():
            where = show(str(folder), 300)
            raise BadInput(f"{self._named_by}: directory {where} does not exist (bfjobs does not create it)")

    @functools.cached_property
    def engine(self) -> sa.Engine:
        """SQLAlchemy's engine, created on first use (migrations, other databases, the registry)."""
        import sqlalchemy as sa

        try:
            parsed = sa.engine.make_url(self.url)
        except sa.exc.ArgumentError:
            raise BadInput(f"--db: not a database URL: {show(self.url)}") from None
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            self._directory(Path(parsed.database).expanduser().parent)
        try:
            engine = sa.create_engine(parsed)
        except (sa.exc.NoSuchModuleError, sa.exc.ArgumentError, ImportError) as exc:
            raise BadInput(f"--db: cannot use {show(self.url)}: {type(exc).__name__}: {exc}") from None
        if parsed.get_backend_name() == "sqlite":
            sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine

    def _lite(self) -> SqliteJobs | None:
        """The stdlib path for a plain SQLite file, its schema migrated to head first; else None."""
        if self._store is None and self._sqlite_file is not None:
            store = SqliteJobs.open(self._sqlite_file)
            if store is None:  # a new database, or an older schema: Alembic brings it to head
                self._migrate_with_alembic()
                store = SqliteJobs.open(self._sqlite_file)
            if store is None:
                self._sqlite_file = None  # sqlite3 failed where SQLAlchemy did not: SQLAlchemy carries on
            else:
                self._store = store
                self._migrated = True
        return self._store

    # ------------------------------------------------------------------ migrations

    def current_revision(self) -> str | None:
        import sqlalchemy as sa

        with self.engine.connect() as conn:
            if not sa.inspect(conn).has_table(constants.VERSION_TABLE):
                return None
            table = sa.table(constants.VERSION_TABLE, sa.column("version_num"))
            return conn.execute(sa.select(table.c.version_num)).scalar()

    def migrate(self) -> None:
        """Apply bfjobs' migrations if needed (one SELECT of the version when already at head)."""
        if self._migrated or self._lite() is not None:
            return
        self._migrate_with_alembic()

    def _migrate_with_alembic(self) -> None:
        """Two processes may race here on a fresh database; the loser's CREATE fails, it re-reads
        the version and carries on once the winner has committed."""
        import sqlalchemy as sa

        for attempt in range(20):
            try:
                if self.current_revision() == HEAD_REVISION:
                    break
                self._run_alembic()
                break
            except sa.exc.OperationalError:
                if attempt == 19:
                    raise
                time.sleep(0.1 * (attempt + 1))
        self._migrated = True

    def _run_alembic(self) -> None:
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    @contextmanager
    def begin(self) -> Iterator[sa.Connection]:
        """A SQLAlchemy transaction (Blackfish's own tables, tests); bfjobs' rows use the methods below."""
        self.migrate()
        with self.engine.begin() as conn:
            yield conn

    # ------------------------------------------------------------------ jobs

    def insert(self, row: JobRow) -> None:
        self.insert_many([row])

    def insert_many(self, rows: Sequence[JobRow]) -> None:
        """Insert rows in one transaction (a job array's elements are recorded together)."""
        if not rows:
            return
        lite = self._lite()
        if lite is not None:
            lite.insert_many(rows)
            return
        jobs = _tables()[1]
        with self.begin() as conn:
            conn.execute(jobs.insert(), [{c.name: getattr(row, c.name) for c in jobs.columns} for row in rows])

    def update(self, job_id: str, **values: Any) -> None:
        values.setdefault("updated_at", utcnow())
        lite = self._lite()
        if lite is not None:
            lite.update_many([(job_id, None, values)])
            return
        jobs = _tables()[1]
        with self.begin() as conn:
            conn.execute(jobs.update().where(jobs.c.id == job_id).values(**values))

    def update_many(self, changes: Sequence[tuple[str, str, dict[str, Any]]]) -> set[str]:
        """Apply ``(job_id, expected_state, values)`` in one transaction; return the ids changed.

        A row whose state another process changed meanwhile is left alone (compare-and-set), so
        two refreshers never both record the same transition; one transaction keeps a refresh
        of a thousand jobs to one write.
        """
        if not changes:
            return set()
        now = utcnow()
        stamped = [(job_id, expected, {"updated_at": now, **values}) for job_id, expected, values in changes]
        lite = self._lite()
        if lite is not None:
            return lite.update_many(stamped)
        jobs = _tables()[1]
        done: set[str] = set()
        with self.begin() as conn:
            for job_id, expected, values in stamped:
                stmt = jobs.update().where(jobs.c.id == job_id, jobs.c.state == expected).values(**values)
                if conn.execute(stmt).rowcount:
                    done.add(job_id)
        return done

    def get(self, job_id: str) -> JobRow | None:
        rows = self.get_many([job_id])
        return rows[0] if rows else None

    def get_many(self, ids: Sequence[str]) -> list[JobRow]:
        """Rows by bfjobs id with one query (in no particular order; unknown ids are absent)."""
        if not ids:
            return []
        lite = self._lite()
        if lite is not None:
            return lite.get_many(ids)
        jobs = _tables()[1]
        return self.query(jobs.select().where(jobs.c.id.in_(list(dict.fromkeys(ids)))))

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
        candidates = self._slurm_jobs(ref)
        if candidates:
            if len({r.folder for r in candidates}) == 1:  # one job, or the elements of one array
                return sorted(candidates, key=_array_index)
            what = "Slurm job id"
        else:
            candidates = self._prefixed(ref, _SHOWN + 1)
            if len(candidates) == 1:
                return candidates
            if not candidates:
                raise JobNotFound(f"no bfjobs job {show(ref)} in {self.safe_url()}")
            what = "job id prefix"
        raise JobNotFound(f"{what} {show(ref)} is ambiguous: {_candidates(candidates)}; use the full bfjobs id")

    def _slurm_jobs(self, ref: str) -> list[JobRow]:
        """Slurm jobs with Slurm id ``ref``, or the elements ``<ref>_<index>`` of array ``ref``."""
        lite = self._lite()
        if lite is not None:
            return lite.slurm_jobs(ref)
        import sqlalchemy as sa

        jobs = _tables()[1]
        native = jobs.c.native_id
        element = sa.and_(native > ref + "_", native < ref + "`")  # "_" sorts just before "`"
        return self.query(jobs.select().where(jobs.c.backend == "slurm", sa.or_(native == ref, element)))

    def _prefixed(self, ref: str, limit: int) -> list[JobRow]:
        """Up to ``limit`` jobs whose bfjobs id starts with ``ref``."""
        lite = self._lite()
        if lite is not None:
            return lite.prefixed(ref, limit)
        jobs = _tables()[1]
        stmt = jobs.select().where(jobs.c.id.startswith(ref, autoescape=True))
        return self.query(stmt.order_by(jobs.c.id).limit(limit))

    def query(self, stmt: sa.Select[Any]) -> list[JobRow]:
        """Rows for a SQLAlchemy statement (always the SQLAlchemy path)."""
        with self.begin() as conn:
            return [_row(r) for r in conn.execute(stmt).mappings()]

    def unfinished(self, ids: Sequence[str] | None = None, *, targets: Sequence[str] | None = None) -> list[JobRow]:
        """Jobs not finished yet, oldest first: all (no ``ids``), or only these ids, or these targets."""
        lite = self._lite()
        if lite is not None:
            return lite.unfinished(ids, targets=targets)
        if targets is not None and not targets:
            return []
        jobs = _tables()[1]
        stmt = jobs.select().where(jobs.c.state.not_in(sorted(s.value for s in FINISHED)))
        if targets is not None:
            stmt = stmt.where(jobs.c.target.in_(list(dict.fromkeys(targets))))
        elif ids:
            stmt = stmt.where(jobs.c.id.in_(list(ids)))
        return self.query(stmt.order_by(jobs.c.submitted_at))

    def listing(
        self,
        *,
        states: Iterable[str] = (),
        kind: str | None = None,
        profile: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> list[JobRow]:
        states = list(states)
        lite = self._lite()
        if lite is not None:
            return lite.listing(states=states, kind=kind, profile=profile, since=since, limit=limit)
        jobs = _tables()[1]
        stmt = jobs.select()
        if states:
            stmt = stmt.where(jobs.c.state.in_(states))
        if kind:
            stmt = stmt.where(jobs.c.kind == kind)
        if profile:
            stmt = stmt.where(jobs.c.profile == profile)
        if since:
            stmt = stmt.where(jobs.c.submitted_at >= since)
        stmt = stmt.order_by(jobs.c.submitted_at.desc(), jobs.c.id)
        if limit:
            stmt = stmt.limit(limit)
        return self.query(stmt)

    def safe_url(self) -> str:
        """The URL for messages (a plain SQLite file URL has no password to hide)."""
        if self._sqlite_file is not None:
            return self.url
        return self.engine.url.render_as_string(hide_password=True)


#: Candidates named in an "ambiguous" or "job array" error, at most.
_SHOWN = 10


def _array_index(row: JobRow) -> int:
    """An array element's index (``3269_7`` -> 7); -1 for a job that is not an element."""
    _, sep, index = (row.native_id or "").rpartition("_")
    return int(index) if sep and index.isdigit() else -1


def _candidates(rows: Sequence[JobRow]) -> str:
    """Jobs named in one line: id, Slurm id or pid, submit time; the first :data:`_SHOWN`."""
    shown = []
    for row in rows[:_SHOWN]:
        native = f"Slurm job {row.native_id}" if row.backend == "slurm" else f"pid {row.native_id}"
        shown.append(f"{row.id} ({native}, submitted {row.submitted_at:%Y-%m-%d %H:%M})")
    return ", ".join(shown) + (" and more" if len(rows) > _SHOWN else "")


def _row(mapping: Any) -> JobRow:
    data = dict(mapping)
    for key in ("request", "result"):
        if isinstance(data.get(key), str):
            data[key] = json.loads(data[key])
    return JobRow(**data)
