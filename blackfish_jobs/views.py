"""How jobs are shown: aligned columns (coloured states on a terminal), a progress line.

No table library: rich's Table cost ~25 ms to import and ~0.5 ms a row to lay out, so a
``bfjobs status`` of 1,000 jobs on a terminal spent 0.7 s drawing after sacct had answered.
Aligned columns with the one-line reason last, and on a terminal the state in colour (unless
``NO_COLOR`` or ``TERM=dumb``) and file names instead of full target paths, take ~1 ms.
"""

from __future__ import annotations

import functools
import re
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TextIO

from . import backends

if TYPE_CHECKING:
    from .db import JobRow

COLUMNS = ("ID", "KIND", "STATE", "SLURM ID", "NODE", "SUBMITTED", "TARGET", "REASON")

# ANSI colours of the STATE column on a terminal; any other state (a failure) is red
_COLOUR = {"PENDING": "34", "RUNNING": "36", "COMPLETED": "32", "CANCELLED": "33", "UNKNOWN": "35"}
_RELATIVE = re.compile(r"^(\d{1,6})([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_EPOCH = datetime(1970, 1, 1)
_SECOND = timedelta(seconds=1)


def native(row: JobRow) -> str:
    """The scheduler's id for the SLURM ID column: the Slurm job id, or ``pid N`` for local jobs."""
    return backends.column(row)


@functools.lru_cache(maxsize=4096)  # the 1,000 rows of a status share a few submit times (arrays, --from-file)
def local_time(moment: datetime | None) -> str:
    """A naive-UTC DB timestamp in the viewer's local time, to the second."""
    if moment is None:
        return "-"
    # time.localtime of the epoch second: half the cost of astimezone()
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime((moment - _EPOCH) // _SECOND))


def cells(row: JobRow, *, short_target: bool = False, record: dict[str, Any] | None = None) -> tuple[str, ...]:
    """One job's cells; a RUNNING job with a progress ``record`` shows it in the STATE cell."""
    target = row.target.rsplit("/", 1)[-1] if short_target else row.target
    reason = " ".join(row.reason.split()) if row.reason else ""
    scheduler_id = backends.column(row)
    state = row.state
    if record is not None and state == "RUNNING":
        from .progress import describe

        state = f"{state} ({describe(record)})"
    return (row.id, row.kind, state, scheduler_id, row.node or "-", local_time(row.submitted_at), target, reason)


def plain_lines(
    rows: Sequence[JobRow],
    *,
    short_target: bool = False,
    colour: bool = False,
    progress: Mapping[str, dict[str, Any]] | None = None,
) -> list[str]:
    """A header and one aligned line per job; the reason (free text) comes last, unpadded.

    ``colour``: the header bold and each state in its ANSI colour (widths are those of the text).
    ``progress``: records by job id (see :func:`backends.folder.read_progress`), shown for RUNNING jobs.
    """
    records = progress or {}
    table = [COLUMNS, *(cells(r, short_target=short_target, record=records.get(r.id)) for r in rows)]
    widths = [max(map(len, column)) for column in list(zip(*table, strict=True))[:-1]]
    layout = "  ".join(f"{{:<{w}}}" for w in widths) + "  {}"
    lines = [layout.format(*line).rstrip() for line in table]
    if not colour:
        return lines
    at = widths[0] + widths[1] + 4  # where the STATE column starts
    coloured = [f"\x1b[1m{lines[0]}\x1b[0m"]
    for line, row in zip(lines[1:], rows, strict=True):
        end = at + len(row.state)
        coloured.append(f"{line[:at]}\x1b[{_COLOUR.get(row.state, '31')}m{line[at:end]}\x1b[0m{line[end:]}")
    return coloured


def print_jobs(
    rows: Sequence[JobRow], stream: TextIO | None = None, progress: Mapping[str, dict[str, Any]] | None = None
) -> None:
    """Aligned columns; on a terminal with file names for targets and the states in colour."""
    from . import constants

    stream = stream or sys.stdout
    tty = stream.isatty()
    lines = plain_lines(rows, short_target=tty, colour=tty and constants.colour_wanted(), progress=progress)
    stream.write("\n".join(lines) + "\n")
    stream.flush()


#: ``wait`` shows one line per job up to this many jobs, then one line of counts by state.
MAX_JOB_LINES = 10


def progress_lines(
    rows: Sequence[JobRow], elapsed: float, progress: Mapping[str, dict[str, Any]] | None = None
) -> list[str]:
    """``[mm:ss] id STATE on node: 3.2 GB of 140 GB, 85 MB/s, ETA 27 min``, one line per job —
    one line of counts by state (and the running jobs' bytes) when there are many jobs."""
    from .progress import describe, human_bytes

    clock = f"[{int(elapsed) // 60:02d}:{int(elapsed) % 60:02d}]"
    records = progress or {}
    if len(rows) <= MAX_JOB_LINES:
        lines = []
        for r in rows:
            line = f"{clock} {r.id} {r.state}" + (f" on {r.node}" if r.node else "")
            if r.state == "PENDING" and r.reason:
                line += f" ({r.reason})"
            if r.id in records:
                line += f": {describe(records[r.id])}"
            lines.append(line)
        return lines
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.state] = counts.get(r.state, 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    running = [records[r.id] for r in rows if r.state == "RUNNING" and r.id in records]
    if running:
        summary += f"; running: {human_bytes(sum(rec.get('bytes_done') or 0 for rec in running))} done"
    return [f"{clock} {len(rows)} jobs: {summary}"]


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``--since``: an ISO date/time (local time unless it carries ``Z`` or an offset) or an
    age such as ``90m``, ``12h``, ``7d``; returned as naive UTC, the way the DB stores times."""
    now = now or datetime.now(UTC).replace(tzinfo=None)
    value = text.strip()
    match = _RELATIVE.match(value)
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    iso = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        raise ValueError(f"not a date, time or age: {text!r} (try 2026-11-27, 2026-11-27T08:00, 12h, 7d)") from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # a wall-clock time where the user is
    return moment.astimezone(UTC).replace(tzinfo=None)
