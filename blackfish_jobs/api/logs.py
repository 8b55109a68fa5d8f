"""``bfjobs logs``: a job's output from its job folder, optionally followed until the job ends.

Following reads the file every half second (a local read, cheap) but asks Slurm about the job
with the same back-off as ``wait`` (one query per check, starting at 1 s, at most every 30 s),
so a long download followed for an hour costs about 120 Slurm calls, not 7,200.
"""

from __future__ import annotations

import time
from typing import BinaryIO

from .. import tracking
from ..backends import Backends
from ..backends.base import Backend
from ..errors import BfjobsError
from ..states import ENDED
from ..store import Database, JobRow

_CHUNK = 4 * 1024 * 1024  # what Backend.read_log returns at most


def copy_new(backend: Backend, row: JobRow, stream: str, out: BinaryIO, offset: int) -> tuple[int, bool]:
    """Write what the log holds past ``offset`` (read where the job ran: :meth:`Backend.read_log`);
    the new offset, and whether the log exists."""
    exists = False
    while (chunk := backend.read_log(row, stream, offset)) is not None:
        exists = True
        out.write(chunk)
        offset += len(chunk)
        if len(chunk) < _CHUNK:
            break
    out.flush()
    return offset, exists


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
    backend = backends.of(row)
    path = backend.log_path(row, stream)
    if path is None:
        raise BfjobsError(f"job {row.id} has no scheduler id, so no log")
    offset, exists = copy_new(backend, row, stream, out, 0)
    if not follow:
        if not exists:
            row = tracking.refresh(db, [row], backends)[0]  # PENDING, or did it end without a log?
            _offset, exists = copy_new(backend, row, stream, out, 0)  # it may have started meanwhile
            if row.state in ENDED and not exists:
                raise BfjobsError(f"job {row.id} ({row.state}) left no log at {path}")
        return row
    if not backend.here:
        poll = max(poll, 2.0)  # each read is a round trip to the cluster (through the ssh master)
    delay = 1.0
    next_check = time.monotonic()
    unstartable = tracking.Unstartable(db, backends)
    while True:
        if time.monotonic() >= next_check:
            report = tracking.refresh_report(db, tracking.reload(db, [row.id]), backends, reasons=True)
            row = unstartable.end(report)[0]
            if row.state in ENDED:
                time.sleep(poll)  # the last lines may still be on their way to the file
                copy_new(backend, row, stream, out, offset)
                return row
            next_check = time.monotonic() + delay
            delay = min(max_delay, delay * 1.5)
        offset, _exists = copy_new(backend, row, stream, out, offset)
        time.sleep(poll)
