"""The reads ``bfjobs status`` makes before its ``sacct`` call starts: the live jobs' ids.

Apart from :mod:`.jobs` so that the entry point reaches them with ``sqlite3`` and this package's
:mod:`.schema` loaded, and nothing else: every millisecond before ``sacct`` starts is added to
``status``, while what is imported after it overlaps the call (figures: benchmarks/README.md).

:data:`UNFINISHED` is the very term of the partial index migration 0003 creates: SQLite uses a
partial index only for a query carrying the same term.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..constants import JOBS_TABLE as JOBS
from ..states import FINISHED

UNFINISHED = f"state NOT IN ({', '.join(repr(s) for s in sorted(s.value for s in FINISHED))})"


def live_native_ids(conn: Any, backend: str, profile: str | None = None) -> tuple[list[str], datetime | None]:
    """The native ids (those known) of ``backend``'s unfinished jobs and their oldest submit time:
    all ``status`` needs for its sacct call, read from the partial index alone (the stored text
    sorts as the times do: fixed width, zero-padded). ``conn`` is a :func:`.schema.connect`
    connection.

    SQLite joins the ids into one text (a comma never occurs in a scheduler's id; sacct's ``-j``
    list is comma-separated anyway): 10,000 ids in ~2 ms, where fetching them as rows took ~8.
    """
    sql = (
        f"SELECT group_concat(native_id, ','), min(submitted_at) FROM {JOBS} "
        f"WHERE {UNFINISHED} AND backend = ?"
    )
    params: tuple[str, ...] = (backend,)
    if profile:
        sql, params = sql + " AND profile = ?", (backend, profile)
    ids, oldest = conn.execute(sql, params).fetchone()
    if oldest is None:
        return [], None
    return [i for i in ids.split(",") if i] if ids else [], datetime.fromisoformat(oldest)


def live_profiles(conn: Any, backend: str, profile: str | None = None) -> list[str]:
    """The profiles of ``backend``'s unfinished jobs (a remote profile's cluster is asked once per
    profile): for ``status`` to start those requests early, like its sacct call."""
    sql = f"SELECT DISTINCT profile FROM {JOBS} WHERE {UNFINISHED} AND backend = ?"
    params: tuple[str, ...] = (backend,)
    if profile:
        sql, params = sql + " AND profile = ?", (backend, profile)
    return sorted(name for (name,) in conn.execute(sql, params).fetchall())
