"""bfjobs' job table in Blackfish's app database (SQLite by default), via SQLAlchemy Core.

bfjobs owns only its own tables, created by its own Alembic migrations with its own version
table (``bfjobs_alembic_version``); Blackfish's tables and ``ddl_version`` are never created or
altered here. SQLite is opened the way Blackfish opens it: WAL, a busy timeout, foreign keys.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from . import constants
from .errors import BadInput, show

#: The newest migration; checked against the migrations folder by the tests.
HEAD_REVISION = "0002"

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


def default_url() -> str:
    """``BFJOBS_DB_URL``, else Blackfish's own ``$BLACKFISH_HOME_DIR/app.sqlite``."""
    return constants.db_url_env() or f"sqlite:///{constants.blackfish_home() / 'app.sqlite'}"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    for pragma in ("journal_mode=WAL", "busy_timeout=5000", "foreign_keys=ON", "synchronous=NORMAL"):
        cur.execute(f"PRAGMA {pragma}")
    cur.close()


class Database:
    """A handle on the app database with bfjobs' table migrated to the current head."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or default_url()
        try:
            parsed = sa.engine.make_url(self.url)
        except sa.exc.ArgumentError:
            raise BadInput(f"--db: not a database URL: {show(self.url)}") from None
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        self.engine = sa.create_engine(parsed)
        if parsed.get_backend_name() == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        self._migrated = False

    # ------------------------------------------------------------------ migrations

    def current_revision(self) -> str | None:
        with self.engine.connect() as conn:
            if not sa.inspect(conn).has_table(constants.VERSION_TABLE):
                return None
            table = sa.table(constants.VERSION_TABLE, sa.column("version_num"))
            return conn.execute(sa.select(table.c.version_num)).scalar()

    def migrate(self) -> None:
        """Apply bfjobs' migrations if needed (a cheap version check on the fast path).

        Two processes may race here on a fresh database; the loser's CREATE fails, it re-reads
        the version and carries on once the winner has committed.
        """
        if self._migrated:
            return
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
        with self.begin() as conn:
            conn.execute(jobs.insert(), [{c.name: getattr(row, c.name) for c in jobs.columns} for row in rows])

    def update(self, job_id: str, **values: Any) -> None:
        values.setdefault("updated_at", utcnow())
        with self.begin() as conn:
            conn.execute(jobs.update().where(jobs.c.id == job_id).values(**values))

    def update_many(self, changes: Sequence[tuple[str, str, dict[str, Any]]]) -> set[str]:
        """Apply ``(job_id, expected_state, values)`` in one transaction; return the ids changed.

        A row whose state another process changed meanwhile is left alone (compare-and-set), so
        two refreshers never both record the same transition; one transaction keeps a refresh
        of a thousand jobs to one write.
        """
        done: set[str] = set()
        if not changes:
            return done
        with self.begin() as conn:
            for job_id, expected, values in changes:
                values = {"updated_at": utcnow(), **values}
                stmt = jobs.update().where(jobs.c.id == job_id, jobs.c.state == expected).values(**values)
                if conn.execute(stmt).rowcount:
                    done.add(job_id)
        return done

    def get(self, job_id: str) -> JobRow | None:
        rows = self.query(sa.select(jobs).where(jobs.c.id == job_id))
        return rows[0] if rows else None

    def resolve(self, ref: str) -> JobRow:
        """A job by bfjobs id (or unique id prefix), or by Slurm job id when unambiguous."""
        if not ref or len(ref) > 64 or not ref.replace("_", "").isalnum():
            raise BadInput(f"not a job id: {show(ref)}")
        row = self.get(ref)
        if row is not None:
            return row
        candidates = self.query(
            sa.select(jobs)
            .where(
                sa.or_(
                    jobs.c.id.startswith(ref, autoescape=True),
                    sa.and_(jobs.c.backend == "slurm", jobs.c.native_id == ref),
                )
            )
            .limit(3)
        )
        if len(candidates) == 1:
            return candidates[0]
        from .errors import JobNotFound

        if not candidates:
            raise JobNotFound(f"no bfjobs job {show(ref)} in {self.safe_url()}")
        raise JobNotFound(f"job id {show(ref)} is ambiguous; use the full bfjobs id")

    def query(self, stmt: sa.Select[Any]) -> list[JobRow]:
        with self.begin() as conn:
            return [_row(r) for r in conn.execute(stmt).mappings()]

    def unfinished(self, ids: Sequence[str] | None = None) -> list[JobRow]:
        stmt = sa.select(jobs).where(jobs.c.state.not_in(sorted(constants.FINISHED_STATES)))
        if ids:
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
        stmt = sa.select(jobs)
        if states:
            stmt = stmt.where(jobs.c.state.in_(list(states)))
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
        return self.engine.url.render_as_string(hide_password=True)


def _row(mapping: Any) -> JobRow:
    data = dict(mapping)
    for key in ("request", "result"):
        if isinstance(data.get(key), str):
            data[key] = json.loads(data[key])
    return JobRow(**data)
