"""``bfjobs logs``: a job's output from its job folder, optionally followed until the job ends.

Following reads the file every half second (a local read, cheap) but asks Slurm about the job
with the same back-off as ``wait`` (one query per check, starting at 1 s, at most every 30 s),
so a long download followed for an hour costs about 120 Slurm calls, not 7,200.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import BinaryIO

from .. import tracking
from ..backends import Backends
from ..errors import BfjobsError
from ..states import ENDED
from ..store import Database, JobRow

_CHUNK = 1024 * 1024


def copy_new(path: Path, out: BinaryIO, offset: int) -> int:
    """Write what ``path`` holds past ``offset``; return the new offset (0 if it does not exist)."""
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            while chunk := fh.read(_CHUNK):
                out.write(chunk)
                offset += len(chunk)
    except FileNotFoundError:
        return offset
    out.flush()
    return offset


def show(
    db: Database,
    row: JobRow,
    stream: str,
    out: BinaryIO,
    *,
    follow: bool = False,
    poll: float = 0.5,
    max_delay: float = 30.0,
    backends: Backends | None = None,
) -> JobRow:
    """Print the job's ``out``/``err`` log; with ``follow`` keep going until the job has ended.

    Returns the job's row as last seen. Without ``follow`` a job that has not started yet has
    no log: that is not an error (the row, refreshed with one Slurm query, says its state).
    """
    backends = backends or Backends()
    path = backends.of(row).log_path(row, stream)
    if path is None:
        raise BfjobsError(f"job {row.id} has no scheduler id, so no log")
    offset = copy_new(path, out, 0)
    if not follow:
        if not path.exists():
            row = tracking.refresh(db, [row], backends)[0]  # PENDING, or did it end without a log?
            copy_new(path, out, 0)  # it may have started meanwhile
            if row.state in ENDED and not path.exists():
                raise BfjobsError(f"job {row.id} ({row.state}) left no log at {path}")
        return row
    delay = 1.0
    next_check = time.monotonic()
    unstartable = tracking.Unstartable(db, backends)
    while True:
        if time.monotonic() >= next_check:
            report = tracking.refresh_report(db, tracking.reload(db, [row.id]), backends, reasons=True)
            row = unstartable.end(report)[0]
            if row.state in ENDED:
                time.sleep(poll)  # the last lines may still be on their way to the file
                copy_new(path, out, offset)
                return row
            next_check = time.monotonic() + delay
            delay = min(max_delay, delay * 1.5)
        offset = copy_new(path, out, offset)
        time.sleep(poll)
