"""Slurm client calls, each made once for many jobs: ``sacct``, ``squeue``, ``scancel``.

Slurm's documentation asks tools not to run its clients in loops, so every function here takes
all the jobs of one refresh at once and makes a single call. Times are read as epoch seconds
(``SLURM_TIME_FORMAT=%s``) and the ``sacct -S`` bound is written in the local time zone that
``sacct`` itself uses: a UTC string there would point hours into the future west of Greenwich.

The command lines and the processes themselves are :mod:`.slurmcmd`'s (``bfjobs status`` starts
its ``sacct`` call there before this module is imported).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import NamedTuple

from .slurmcmd import Runner, run, sacct_argvs, squeue_lists
from .slurmcmd import job_ids as _job_ids

_SQUEUE_FORMAT = "%i|%T|%N|%V|%e|%r"
# "123", an array element "123_4", or pending elements still folded together "123_[5-9%2]"
_ARRAY_RANGE = re.compile(r"^(\d+)_\[([0-9,\-]+)(?:%\d+)?\]$")
_JOB_ID = re.compile(r"^\d+(?:_\d+)?$")
_LIVE = ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING", "SIGNALING")
_DISABLED = re.compile(r"accounting storage is disabled", re.IGNORECASE)
_KILL_ERROR = re.compile(r"error on job id (\S+?): (.*)", re.IGNORECASE)
# scancel errors that only mean "that job is already over" (a refresh will tell how it ended)
_BENIGN_SCANCEL = ("invalid job id", "already completing or completed", "already completed")


class SlurmUnavailable(Exception):
    """A Slurm client command could not be run or failed (the message is one line)."""


class AccountingUnavailable(SlurmUnavailable):
    """``sacct`` cannot answer; ``disabled`` when the site has no accounting at all."""

    def __init__(self, message: str, disabled: bool) -> None:
        super().__init__(message)
        self.disabled = disabled


class Record(NamedTuple):
    """One job as ``sacct`` or ``squeue`` reports it."""

    job_id: str
    raw_state: str  # Slurm's words, e.g. "CANCELLED by 0"
    node: str | None
    submit: datetime | None  # naive UTC, as the DB stores times
    end: datetime | None  # when it ended (naive UTC); None while it runs
    reason: str | None  # Slurm's reason (why pending; why it ended)
    exit_code: str | None  # "137:0" (sacct only)
    source: str  # "sacct" or "squeue"


def describe_failure(argv: list[str], exc: BaseException) -> str:
    """One line saying why a client call failed (its own stderr when it has one)."""
    name = argv[0] if argv else "slurm"
    if isinstance(exc, FileNotFoundError):
        return f"{name} not found on PATH"
    if isinstance(exc, subprocess.TimeoutExpired):
        return f"{name} did not answer within {exc.timeout:g} s"
    if isinstance(exc, subprocess.CalledProcessError):
        text = " ".join(_stderr(exc).split())
        return f"{name} exited with code {exc.returncode}" + (f": {text[:300]}" if text else "")
    return f"{name} failed: {' '.join(str(exc).split())[:300]}"


def partitions(runner: Runner = run) -> list[str] | None:
    """The partitions this user may submit to (one ``sinfo`` call); None if sinfo cannot say."""
    try:
        out = runner(["sinfo", "-h", "-o", "%R"])
    except (OSError, subprocess.SubprocessError):
        return None
    return list(dict.fromkeys(line.strip() for line in out.splitlines() if line.strip())) or None


def user_qos(user: str, runner: Runner = run) -> list[str] | None:
    """The QOS ``user`` may submit with: those their associations allow, every one of them (one
    ``sacctmgr`` call). An association with an empty QOS list allows Slurm's default, ``normal``.
    ``[]``: accounting knows no association of theirs; None if sacctmgr cannot say."""
    try:
        out = runner(["sacctmgr", "-n", "-P", "show", "assoc", "where", f"user={user}", "format=qos"])
    except (OSError, subprocess.SubprocessError):
        return None
    allowed: set[str] = set()
    for line in out.splitlines():  # one line per association: "normal,xfer", or "" for the default
        allowed.update(name.strip() for name in line.split(",") if name.strip())
        if not line.strip():
            allowed.add("normal")
    return sorted(allowed)


def _stderr(exc: BaseException) -> str:
    if isinstance(exc, subprocess.CalledProcessError):
        return str(exc.stderr or exc.output or "")
    return ""


_EPOCH = datetime(1970, 1, 1)


def _epoch(text: str) -> datetime | None:
    """Epoch seconds as naive UTC; None for ``Unknown``/``None`` (a per-line hot path: no raise)."""
    if not text.isdigit():
        return None
    try:
        return _EPOCH + timedelta(seconds=int(text))
    except (ValueError, OverflowError):
        return None


_NO_NODE = frozenset({"", "None assigned", "(null)", "None"})
_NO_REASON = frozenset({"", "None", "(null)"})


def _node(text: str) -> str | None:
    text = text.strip()
    return None if text in _NO_NODE else text


def _reason(text: str) -> str | None:
    text = text.strip()
    return None if text in _NO_REASON else text


def expand_job_id(job_id: str) -> list[str]:
    """``123`` and ``123_4`` as they are; ``123_[5-7,9%2]`` (pending array elements) expanded."""
    match = _ARRAY_RANGE.match(job_id)
    if not match:
        return [job_id] if _JOB_ID.match(job_id) else []
    base, spec = match.groups()
    out: list[str] = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        if lo.isdigit() and (not hi or hi.isdigit()):
            out.extend(f"{base}_{i}" for i in range(int(lo), int(hi or lo) + 1))
    return out


def sacct(ids: Iterable[str], since: datetime, runner: Runner = run) -> dict[str, list[Record]]:
    """One ``sacct`` call for ``ids``, limited to jobs active since ``since`` (naive UTC).

    The bound keeps a Slurm id reused after a controller reset from matching a record older
    than every job asked about; callers still check each record's submit time. Several records
    for one id (a reused id within the window) are all returned, newest last.
    """
    outs = []
    for argv in sacct_argvs(ids, since):  # one call, unless the ids outgrow one argument
        try:
            outs.append(runner(argv))
        except (OSError, subprocess.SubprocessError) as exc:
            disabled = isinstance(exc, FileNotFoundError) or bool(_DISABLED.search(_stderr(exc)))
            raise AccountingUnavailable(describe_failure(argv, exc), disabled) from None
    out = "\n".join(outs)
    found: dict[str, list[Record]] = {}
    # A refresh of 10,000 jobs parses 10,000 lines: converted times are shared (jobs submitted in
    # the same second, every "Unknown" end), and -P output has no padding to strip per field.
    times: dict[str, datetime | None] = {}

    def converted(text: str) -> datetime | None:
        value = times[text] = _epoch(text)
        return value

    new = tuple.__new__
    for line in out.splitlines():
        parts = line.strip().split("|", 7)
        if len(parts) < 8 or not parts[0]:
            continue
        shown, raw, state, node, submit, end, exit_code, reason = parts
        record = new(
            Record,
            (
                raw,
                state,
                None if node in _NO_NODE else node,
                times[submit] if submit in times else converted(submit),
                times[end] if end in times else converted(end),
                None if reason in _NO_REASON else reason,
                exit_code or None,
                "sacct",
            ),
        )
        if "_" not in shown:
            if raw in found:
                found[raw].append(record)
            else:
                found[raw] = [record]
            continue
        # array elements are known by "<array id>_<index>" (their raw ids are unrelated numbers)
        for job_id in expand_job_id(shown):
            found.setdefault(job_id, []).append(record._replace(job_id=job_id))
    for records in found.values():
        if len(records) > 1:
            records.sort(key=lambda r: r.submit or datetime.min)
    return found


def squeue(ids: Iterable[str], runner: Runner = run) -> dict[str, Record]:
    """One ``squeue -t all`` call: live jobs, and finished ones the controller still holds.

    The controller keeps a finished job for ``MinJobAge`` seconds, so this also answers for
    recently ended jobs when there is no accounting. A job it no longer knows is simply absent.
    """
    head = ["squeue", "-h", "-r", "-t", "all", "-o", _SQUEUE_FORMAT]
    try:
        out = squeue_lists(head, ids, runner)  # one call, unless the ids outgrow one argument
    except (OSError, subprocess.SubprocessError) as exc:
        raise SlurmUnavailable(describe_failure(head, exc)) from None
    found: dict[str, Record] = {}
    for line in out.splitlines():
        parts = line.split("|", 5)
        if len(parts) < 6 or not _JOB_ID.match(parts[0].strip()):
            continue
        job_id, state, node, submit, end, reason = (p.strip() for p in parts)
        ended = _epoch(end) if state not in _LIVE else None  # a live job's %e is its time limit
        found[job_id] = Record(job_id, state, _node(node), _epoch(submit), ended, _reason(reason), None, "squeue")
    return found


def scancel(ids: Iterable[str], runner: Runner = run, *, pending_only: bool = False) -> dict[str, str]:
    """One ``scancel`` call for ``ids``; returns ``{id: message}`` for jobs it would not cancel.

    ``pending_only`` (``--state=PENDING``) leaves a job alone that started meanwhile.

    Jobs that are already over ("Invalid job id", "already completing") are not errors: the
    next refresh says how they ended. Anything else (permission denied, controller down) is.
    """
    wanted = _job_ids(ids)
    if not wanted:
        return {}
    argv = ["scancel", *(["--state=PENDING"] if pending_only else []), *wanted]
    try:
        runner(argv)
        return {}
    except subprocess.CalledProcessError as exc:
        refused: dict[str, str] = {}
        other: list[str] = []
        for line in _stderr(exc).splitlines():
            match = _KILL_ERROR.search(line)
            if match and match.group(1) in wanted:
                message = match.group(2).strip()
                if not any(b in message.lower() for b in _BENIGN_SCANCEL):
                    refused[match.group(1)] = message
            elif line.strip():
                other.append(line.strip())
        if other or (not refused and exc.returncode != 0 and not _stderr(exc).strip()):
            raise SlurmUnavailable(describe_failure(argv, exc)) from None
        return refused
    except (OSError, subprocess.SubprocessError) as exc:
        raise SlurmUnavailable(describe_failure(argv, exc)) from None
