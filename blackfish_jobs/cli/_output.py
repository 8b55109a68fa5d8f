"""How results are shown: JSON, aligned columns (coloured states on a terminal), a progress line.

No table library: importing one and laying out 1,000 rows cost more than the whole rest of a
``bfjobs status`` after sacct had answered (figures: benchmarks/README.md). Aligned columns with
the one-line reason last, and on a terminal the state in colour (unless ``NO_COLOR`` or
``TERM=dumb``) and file names instead of full target paths, cost next to nothing.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from itertools import repeat
from operator import attrgetter
from typing import TYPE_CHECKING, Any, TextIO

import click

from ..api import colour_wanted, describe_progress, human_bytes, native_column, native_name, revision_column

if TYPE_CHECKING:
    from ..api import JobRow, Result

COLUMNS = ("ID", "KIND", "STATE", "SLURM ID", "NODE", "SUBMITTED", "PROFILE", "WHERE", "REVISION", "TARGET", "REASON")

# ANSI colours of the STATE column on a terminal; any other state (a failure) is red
_COLOUR = {"PENDING": "34", "RUNNING": "36", "COMPLETED": "32", "CANCELLED": "33", "UNKNOWN": "35"}
_EPOCH = datetime(1970, 1, 1)
_SECOND = timedelta(seconds=1)
_ID, _KIND, _STATE, _NODE, _SUBMITTED, _PROFILE, _WHERE, _TARGET, _REASON = map(
    attrgetter, ("id", "kind", "state", "node", "submitted_at", "profile", "location", "target", "reason")
)


def native(row: JobRow) -> str:
    """The scheduler's id for the SLURM ID column: the Slurm job id, or ``pid N`` for local jobs."""
    return native_column(row)


def local_time(moment: datetime | None) -> str:
    """A naive-UTC DB timestamp in the viewer's local time, to the second."""
    if moment is None:
        return "-"
    # time.localtime of the epoch second: half the cost of astimezone()
    return _local_second((moment - _EPOCH) // _SECOND)


@functools.lru_cache(maxsize=4096)
def _local_second(epoch: int) -> str:
    """Jobs submitted in the same second (an array, a ``--from-file`` batch) share one conversion."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def plain_lines(
    rows: Sequence[JobRow],
    *,
    short_target: bool = False,
    colour: bool = False,
    progress: Mapping[str, dict[str, Any]] | None = None,
) -> list[str]:
    """A header and one aligned line per job; the reason (free text) comes last, unpadded.

    ``colour``: the header bold and each state in its ANSI colour (widths are those of the text).
    ``progress``: records by job id (see :meth:`blackfish_jobs.api.Client.progress`), shown in
    the STATE cell of RUNNING jobs. ``short_target`` (a terminal) shows the target's last component
    only where the WHERE cell says which cache it is in; a row that does not know (an image pull
    recorded before bfjobs kept it) keeps its whole path, so a shared copy is never mistaken for a
    home one.

    Built a column at a time, each padded with ``str.ljust`` over the whole column (not at all
    when every cell already has the column's width): ``status`` prints every live job, 10,000 at
    scale, and a call per cell was most of its time after ``sacct`` had answered
    (benchmarks/README.md).
    """
    records = progress or {}
    states = list(map(_STATE, rows))
    if records:
        for i, row in enumerate(rows):
            record = records.get(row.id)
            if record is not None and row.state == "RUNNING":
                states[i] = f"RUNNING ({describe_progress(record)})"
    targets = list(map(_TARGET, rows))
    if short_target:
        targets = [t.rsplit("/", 1)[-1] if r.location else t for t, r in zip(targets, rows, strict=True)]
    reasons: dict[str | None, str] = {None: ""}
    for reason in set(map(_REASON, rows)):
        if reason is not None:
            reasons[reason] = " ".join(reason.split())
    local_times = {moment: local_time(moment) for moment in set(map(_SUBMITTED, rows))}  # each time once
    columns = [
        list(map(_ID, rows)),
        list(map(_KIND, rows)),
        states,
        list(map(native_column, rows)),
        [node or "-" for node in map(_NODE, rows)],
        list(map(local_times.__getitem__, map(_SUBMITTED, rows))),
        list(map(_PROFILE, rows)),
        [where or "-" for where in map(_WHERE, rows)],
        list(map(revision_column, rows)),
        targets,
    ]
    widths: list[int] = []
    padded: list[list[str]] = []
    for head, column in zip(COLUMNS[:-1], columns, strict=True):  # the reason (last) is not padded
        lengths = set(map(len, column))
        width = max(len(head), *lengths) if lengths else len(head)
        widths.append(width)
        padded.append(column if lengths == {width} else list(map(str.ljust, column, repeat(width))))
    layout = "  ".join(f"{{:<{w}}}" for w in widths) + "  {}"
    lines = [layout.format(*COLUMNS).rstrip()]
    lines += map(str.rstrip, map("  ".join, zip(*padded, map(reasons.__getitem__, map(_REASON, rows)), strict=True)))
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
    stream = stream or sys.stdout
    tty = stream.isatty()
    lines = plain_lines(rows, short_target=tty, colour=tty and colour_wanted(), progress=progress)
    stream.write("\n".join(lines) + "\n")
    stream.flush()


#: ``wait`` shows one line per job up to this many jobs, then one line of counts by state.
MAX_JOB_LINES = 10


def progress_lines(
    rows: Sequence[JobRow], elapsed: float, progress: Mapping[str, dict[str, Any]] | None = None
) -> list[str]:
    """``[mm:ss] id STATE on node: 3.2 GB of 140 GB, 85 MB/s, ETA 27 min``, one line per job —
    one line of counts by state (and the running jobs' bytes) when there are many jobs."""
    clock = f"[{int(elapsed) // 60:02d}:{int(elapsed) % 60:02d}]"
    records = progress or {}
    if len(rows) <= MAX_JOB_LINES:
        lines = []
        for r in rows:
            line = f"{clock} {r.id} {r.state}" + (f" on {r.node}" if r.node else "")
            if r.state == "PENDING" and r.reason:
                line += f" ({r.reason})"
            if r.id in records:
                line += f": {describe_progress(records[r.id])}"
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


def echo_err(message: str) -> None:
    click.echo(message, err=True)


def print_json(result: Result) -> None:
    """A result's one JSON object: its arrays with one item per line (grep-able, and the C
    encoder: ``indent`` would make ``list --json`` of 10,000 jobs take most of half a second)."""
    import json  # only for --json: the tables never load it

    data = result.to_json()
    encode = json.JSONEncoder(sort_keys=True).encode  # one encoder: json.dumps(sort_keys=...) makes one per call
    parts = []
    for key in sorted(data):
        value = data[key]
        if isinstance(value, list) and value:
            items = ",\n".join("    " + encode(item) for item in value)
            parts.append(f"  {encode(key)}: [\n{items}\n  ]")
        else:
            parts.append(f"  {encode(key)}: {encode(value)}")
    click.echo("{\n" + ",\n".join(parts) + "\n}")


def describe(row: JobRow) -> str:
    """One job in a line: id, kind, state, scheduler id, target (and reason)."""
    text = f"{row.id}  {row.kind}  {row.state:<13} {native_name(row)}  {row.target}"
    if row.reason:
        text += f"  ({row.reason})"
    return text


def show_jobs(rows: Sequence[JobRow], empty: str, progress: Mapping[str, dict[str, Any]] | None = None) -> None:
    if not rows:
        click.echo(empty)
        return
    print_jobs(rows, progress=progress)


class ProgressLines:
    """One updating line per job on stderr (state, node, bytes, rate, ETA), only on a terminal:
    elsewhere (a log, a pipe) nothing is drawn, so no control character lands in a file.

    ``read``: the progress records of the rows (the facade's ``Client.progress``)."""

    def __init__(self, read: Any) -> None:
        self.read = read
        self.tty = sys.stderr.isatty()
        self.drawn = 0
        self.blind = False

    def __call__(self, rows: list[JobRow], elapsed: float) -> None:
        if not self.tty:
            return
        import shutil

        width = max(20, shutil.get_terminal_size().columns - 1)  # a wrapped line would break the redraw
        lines = [line[:width] for line in progress_lines(rows, elapsed, self.read(rows))]
        up = f"\x1b[{self.drawn - 1}A" if self.drawn > 1 else ""  # back to the first line drawn
        text = "\n".join(f"\r{line}\x1b[K" for line in lines)
        if len(lines) < self.drawn:
            text += "\x1b[J"  # fewer lines than last time: clear the rest
        click.echo(up + text, err=True, nl=False)
        self.drawn = len(lines)

    def problems(self, problems: list[str]) -> None:
        """Say once when the scheduler (a remote cluster) cannot be asked, once when it answers again."""
        if bool(problems) == self.blind:
            return
        self.finish()
        self.blind = bool(problems)
        click.echo(f"bfjobs: {problems[0]}; still waiting" if problems else "bfjobs: answered again", err=True)

    def finish(self) -> None:
        if self.tty and self.drawn:
            click.echo("", err=True)
        self.drawn = 0
