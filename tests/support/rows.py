"""The one job-row builder: every test (and benchmark) that makes a stored job goes through here,
so a change to the row's columns or to the store's API is made once."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from blackfish_jobs.store import Database, JobRow, utcnow


def job_row(i: int = 0, **columns: Any) -> JobRow:
    """Job number ``i``: a PENDING Slurm pull of ``docker://img:<i>`` on profile ``slurm`` submitted
    now, with any column given by keyword (the id is ``i`` in 12 hex digits unless given)."""
    now = utcnow()
    values: dict[str, Any] = {
        "id": f"{i:012x}", "kind": "pull-image", "profile": "slurm", "backend": "slurm", "native_id": str(1000 + i),
        "state": "PENDING", "reason": None, "folder": f"/nowhere/{i}", "target": f"/cache/images/img{i}.sif",
        "request": {"uri": f"docker://img:{i}"}, "result": None, "node": None, "user": "root",
        "submitted_at": now, "ended_at": None, "updated_at": now,
    }
    values.update(columns)
    return JobRow(**values)


def insert_rows(where: Database | Path | str | None, rows: Iterable[JobRow]) -> list[JobRow]:
    """Store ``rows`` in one transaction; ``where`` is a database, its file, its URL, or None for the
    environment's own (``BLACKFISH_HOME_DIR``). Returns the rows, for the test to compare against."""
    rows = list(rows)
    if isinstance(where, Path):
        where = f"sqlite:///{where}"
    db = where if isinstance(where, Database) else Database(where)
    db.insert_many(rows)
    return rows
