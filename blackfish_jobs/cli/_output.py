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
from operator import attrgetter, ne
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
_ID, _KIND, _STATE, _NODE, _SUBMITTED, _PROFILE, _WHERE, _TARGET, _REASON, _UPDATED = map(
    attrgetter, ("id", "kind", "state", "node", "submitted_at", "profile", "location", "target", "reason", "updated_at")
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
    """
    return JobTable(short_target=short_target, colour=colour).lines(rows, progress)


class JobTable:
    """:func:`plain_lines` in two steps, so that most of the work can be done while ``status``
    waits for Slurm: :meth:`prepare` lays out the rows as stored (``Client.status`` calls it
    before the answer is awaited), :meth:`lines` lays out again only the rows the refresh changed.

    A row counts as unchanged when it is the same object with the same ``updated_at`` object:
    a refresh stamps ``updated_at`` on every row it changes and replaces a row another process
    changed (see :func:`blackfish_jobs.tracking.refresh_report`). A RUNNING row with a progress
    record is always laid out again (its progress is read after the refresh).

    Cells are built a column at a time and padded with ``str.ljust`` over a column (not at all
    when every cell already has the column's width): ``status`` prints every live job, 10,000 at
    scale, and a call per cell was most of its time after ``sacct`` had answered
    (benchmarks/README.md).
    """

    def __init__(self, *, short_target: bool = False, colour: bool = False) -> None:
        self.short_target = short_target
        self.colour = colour
        self._prepared = False
        self._rows: list[JobRow] = []
        self._stamps: list[datetime] = []
        self._columns: list[list[str]] = []
        self._widths: list[int] = []
        self._lines: list[str] = []

    def prepare(self, rows: Sequence[JobRow]) -> None:
        """Lay out ``rows`` as they are now (their progress unknown yet). Only a head start: a row
        that cannot be laid out (say, a stored result that is not JSON) fails :meth:`lines`
        instead, after ``status`` has stored its refresh."""
        try:
            self._rows = list(rows)
            self._stamps = list(map(_UPDATED, self._rows))
            self._columns = self._cells(self._rows, {})
            self._widths, self._lines = _layout(self._columns)
        except Exception:  # laid out from scratch by lines(), which reports it
            self._prepared = False
            return
        self._prepared = True

    def lines(self, rows: Sequence[JobRow], progress: Mapping[str, dict[str, Any]] | None = None) -> list[str]:
        """The header and a line per row of ``rows``, reusing the prepared lines of unchanged rows
        (the prepared layout is left as it is: each call compares with it)."""
        records = progress or {}
        if not self._prepared or len(rows) != len(self._rows) or any(map(ne, map(_ID, rows), map(_ID, self._rows))):
            columns = self._cells(rows, records)  # other rows (or none prepared): all laid out now
            widths, lines = _layout(columns)
            return self._coloured(rows, widths, lines)
        changed = [
            i
            for i, (row, old, stamp) in enumerate(zip(rows, self._rows, self._stamps, strict=True))
            if row is not old or row.updated_at is not stamp or (row.id in records and row.state == "RUNNING")
        ]
        widths, lines = self._widths, self._lines
        if changed:
            columns = [list(column) for column in self._columns]  # the prepared layout stays as it was
            subset = [rows[i] for i in changed]
            fresh = self._cells(subset, records)
            widths = []
            for head, column, new, width in zip(COLUMNS[:-1], columns[:-1], fresh[:-1], self._widths, strict=True):
                shrinks = any(len(column[i]) == width for i in changed)  # a widest cell replaced
                for i, cell in zip(changed, new, strict=True):
                    column[i] = cell
                widths.append(max(len(head), *map(len, column)) if shrinks else max(width, *map(len, new)))
            for i, cell in zip(changed, fresh[-1], strict=True):  # the reason: not padded
                columns[-1][i] = cell
            if widths == self._widths:
                lines = list(lines)
                fmt = _row_format(widths)
                for i in changed:
                    lines[i + 1] = fmt.format(*(column[i] for column in columns)).rstrip()
            else:
                widths, lines = _layout(columns)
        return self._coloured(rows, widths, lines)

    def _cells(self, rows: Sequence[JobRow], records: Mapping[str, dict[str, Any]]) -> list[list[str]]:
        """The columns' unpadded cells for ``rows``, the reason (one line) last."""
        states = list(map(_STATE, rows))
        if records:
            for i, row in enumerate(rows):
                record = records.get(row.id)
                if record is not None and row.state == "RUNNING":
                    states[i] = f"RUNNING ({describe_progress(record)})"
        targets = list(map(_TARGET, rows))
        if self.short_target:
            targets = [t.rsplit("/", 1)[-1] if r.location else t for t, r in zip(targets, rows, strict=True)]
        reasons: dict[str | None, str] = {None: ""}
        for reason in set(map(_REASON, rows)):
            if reason is not None:
                reasons[reason] = " ".join(reason.split())
        local_times = {moment: local_time(moment) for moment in set(map(_SUBMITTED, rows))}  # each time once
        return [
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
            list(map(reasons.__getitem__, map(_REASON, rows))),
        ]

    def _coloured(self, rows: Sequence[JobRow], widths: list[int], lines: list[str]) -> list[str]:
        if not self.colour:
            return lines
        at = widths[0] + widths[1] + 4  # where the STATE column starts
        coloured = [f"\x1b[1m{lines[0]}\x1b[0m"]
        for line, row in zip(lines[1:], rows, strict=True):
            end = at + len(row.state)
            coloured.append(f"{line[:at]}\x1b[{_COLOUR.get(row.state, '31')}m{line[at:end]}\x1b[0m{line[end:]}")
        return coloured


def _row_format(widths: Sequence[int]) -> str:
    return "  ".join(f"{{:<{w}}}" for w in widths) + "  {}"


def _layout(columns: list[list[str]]) -> tuple[list[int], list[str]]:
    """The padded columns' widths and the header and lines they make (the reason, last, unpadded)."""
    widths: list[int] = []
    padded: list[list[str]] = []
    for head, column in zip(COLUMNS[:-1], columns[:-1], strict=True):
        lengths = set(map(len, column))
        width = max(len(head), *lengths) if lengths else len(head)
        widths.append(width)
        padded.append(column if lengths == {width} else list(map(str.ljust, column, repeat(width))))
    lines = [_row_format(widths).format(*COLUMNS).rstrip()]
    lines += map(str.rstrip, map("  ".join, zip(*padded, columns[-1], strict=True)))
    return widths, lines


def job_table(stream: TextIO | None = None) -> JobTable:
    """The table for ``stream`` (stdout): on a terminal, file names for targets and states in colour."""
    tty = (stream or sys.stdout).isatty()
    return JobTable(short_target=tty, colour=tty and colour_wanted())


def print_jobs(
    rows: Sequence[JobRow],
    stream: TextIO | None = None,
    progress: Mapping[str, dict[str, Any]] | None = None,
    table: JobTable | None = None,
) -> None:
    """Aligned columns (``table``: one made by :func:`job_table` and prepared with the rows as stored)."""
    stream = stream or sys.stdout
    lines = (table or job_table(stream)).lines(rows, progress)
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


def show_jobs(
    rows: Sequence[JobRow],
    empty: str,
    progress: Mapping[str, dict[str, Any]] | None = None,
    table: JobTable | None = None,
) -> None:
    if not rows:
        click.echo(empty)
        return
    print_jobs(rows, progress=progress, table=table)


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
