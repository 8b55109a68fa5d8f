"""Job states and results: one refresh asks Slurm once for all jobs, then stores what it learned.

State vocabulary (Slurm, local and DB alike): PENDING, RUNNING, COMPLETED, FAILED, CANCELLED,
TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, PREEMPTED, and UNKNOWN only when nothing can be known any
more. A job whose scheduler state is COMPLETED but whose result says the work failed is FAILED.

How a refresh of Slurm jobs decides (one ``sacct`` call for all, at most one ``squeue`` call):

1. ``sacct`` (bounded by the oldest submit time, each record checked against its job's own
   submit time) gives the state of every job accounting knows.
2. Jobs it does not list (too new for accounting, or no accounting at all: ``sacct`` failed or
   says it is disabled) are asked of ``squeue -t all`` in one call; the controller also keeps
   finished jobs for ``MinJobAge`` seconds.
3. A finished job is settled against its own result file (``COMPLETED`` whose result is an
   error is FAILED with the error as reason; no result gives the log tail as reason).
4. A job neither knows: its result file decides; without one it is UNKNOWN, with the reason,
   once it is older than a grace period (it cannot be "too new" any more). If ``squeue`` itself
   failed nothing is concluded and the refresh reports the problem instead.

5. NODE_FAIL and PREEMPTED from accounting are confirmed with the controller in that same
   ``squeue`` call: Slurm requeues such a job when it can, and the controller then already
   calls it PENDING again, while accounting may still show the failed run for a moment.
6. PENDING jobs are asked of the controller in that same call too, for their reason alone:
   accounting keeps the pending reason it recorded at submit ("None") while the controller's is
   current, and a reason that never clears (:mod:`reasons`) is what ends such a job. If the
   controller does not answer, or does not list the job, accounting's word stands.

UNKNOWN ends ``wait`` but is not final in the DB: a later refresh that learns more (accounting
back, a result file that appears late on a shared filesystem) replaces it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from . import constants, reasons, slurm
from .errors import ClusterError
from .node import progress
from .store import Database, JobRow, utcnow

PENDING, RUNNING, COMPLETED, FAILED = "PENDING", "RUNNING", "COMPLETED", "FAILED"
CANCELLED, TIMEOUT, OUT_OF_MEMORY = "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY"
NODE_FAIL, PREEMPTED, UNKNOWN = "NODE_FAIL", "PREEMPTED", "UNKNOWN"
FINISHED = constants.FINISHED_STATES
#: States that end a wait: the finished ones, and UNKNOWN (nothing more can be learned now).
ENDED = FINISHED | {UNKNOWN}

#: A job Slurm does not know yet may be this new before it counts as vanished (sacct lag,
#: a controller restarting); also the clock skew allowed between login node and controller.
GRACE = timedelta(seconds=60)
SKEW = slurm.CLOCK_SKEW
#: A job Slurm calls COMPLETED may be this long without a visible result file (shared
#: filesystems cache directory entries) before it counts as "ended without a result".
RESULT_GRACE = timedelta(seconds=30)

#: Ends after which Slurm requeues a job that allows it (``--requeue``, ``JobRequeue=1``).
_MAY_BE_REQUEUED = frozenset({NODE_FAIL, PREEMPTED})

# Slurm's job states (squeue/sacct long names) onto ours.
_SLURM = {
    "PENDING": PENDING,
    "CONFIGURING": PENDING,
    "REQUEUED": PENDING,
    "REQUEUE_FED": PENDING,
    "REQUEUE_HOLD": PENDING,
    "RESV_DEL_HOLD": PENDING,
    "SUSPENDED": RUNNING,
    "STOPPED": RUNNING,
    "RUNNING": RUNNING,
    "COMPLETING": RUNNING,
    "RESIZING": RUNNING,
    "SIGNALING": RUNNING,
    "STAGE_OUT": RUNNING,
    "COMPLETED": COMPLETED,
    "FAILED": FAILED,
    "BOOT_FAIL": FAILED,
    "SPECIAL_EXIT": FAILED,
    "CANCELLED": CANCELLED,
    "REVOKED": CANCELLED,
    "DEADLINE": TIMEOUT,
    "TIMEOUT": TIMEOUT,
    "OUT_OF_MEMORY": OUT_OF_MEMORY,
    "NODE_FAIL": NODE_FAIL,
    "PREEMPTED": PREEMPTED,
}


@functools.lru_cache(maxsize=512)  # a refresh maps 1,000 records onto a handful of distinct words
def from_slurm(raw: str) -> str:
    """``CANCELLED by 0`` → CANCELLED, ``OUT_OF_ME+`` → OUT_OF_MEMORY, unknown → UNKNOWN."""
    word = raw.strip().split(" ")[0].rstrip("+").upper()
    if word.startswith("OUT_OF_ME"):
        return OUT_OF_MEMORY
    return _SLURM.get(word, UNKNOWN)


class Observation(NamedTuple):
    """What a refresh learned about one job (``known=False``: nothing; leave the row alone).

    ``gone``: the controller (asked successfully) no longer knows the job, nor does accounting,
    and it wrote no result — ``cancel`` takes that as its scancel having removed a pending job.
    """

    state: str
    node: str | None = None
    reason: str | None = None
    result: dict[str, Any] | None = None
    known: bool = True
    gone: bool = False


# ------------------------------------------------------------------------ result files


def result_path(row: JobRow) -> Path:
    """submitit's result file, ``<folder>/<native id>_0_result.pkl`` (``JobPaths.result_pickle``).

    Computed here, as :func:`log_path`: importing submitit (~45 ms) just to name a file put it on
    the path of every ``status`` that meets a finished job.
    """
    return Path(row.folder) / f"{row.native_id}_0_result.pkl"


def read_result(row: JobRow) -> tuple[str, Any] | None:
    """submitit's ``(outcome, value)`` from the job folder, or None if not written (yet)."""
    import pickle

    if not row.native_id:
        return None
    path = result_path(row)
    if not path.exists():
        # Listing the folder makes NFS-like filesystems revalidate their cached entries.
        try:
            os.listdir(row.folder)
        except OSError:
            return None
        if not path.exists():
            return None
    try:
        with path.open("rb") as fh:  # what submitit.core.utils.pickle_load does
            outcome, value = pickle.load(fh)  # noqa: S301 - the user's own job folder, as submitit reads it
    except Exception as exc:  # a truncated pickle: the job died while writing it
        return "error", f"unreadable result file {path.name}: {exc}"
    return outcome, value


def _last_error_line(traceback_text: str) -> str:
    lines = [line.strip() for line in str(traceback_text).strip().splitlines() if line.strip()]
    if not lines:
        return "the task failed without a message"
    last = lines[-1]
    # "blackfish_jobs.errors.TaskError: apptainer pull exited..." -> drop the module path
    head, sep, tail = last.partition(": ")
    if sep and "." in head and " " not in head:
        head = head.rsplit(".", 1)[-1]
        if head in ("TaskError", "Interrupted"):
            return tail
        return f"{head}: {tail}"
    return last


def log_path(row: JobRow, stream: str = "out") -> Path | None:
    """The job's stdout (``out``) or stderr (``err``) log: ``<folder>/<native id>_0_log.<stream>``.

    The same name for Slurm (the template's ``--output``/``--error``) and local jobs (submitit's
    local controller); computed here so ``bfjobs logs`` does not import submitit.
    """
    if not row.native_id:
        return None
    return Path(row.folder) / f"{row.native_id}_0_log.{stream}"


def progress_path(row: JobRow) -> Path | None:
    """The job's progress record, ``<folder>/<native id>_0_progress.json`` (see :mod:`progress`)."""
    return progress.record_path(row.folder, row.native_id) if row.native_id else None


def read_progress(rows: Sequence[JobRow]) -> dict[str, dict[str, Any]]:
    """Progress records by job id: of the RUNNING jobs, and the final figures of ended ones.

    One small file read per such job and no Slurm call; PENDING jobs (most of a long queue) have
    no record and are not looked at, so ``status`` over thousands of jobs costs what it did.
    """
    found = {}
    for row in rows:
        if row.state == RUNNING or row.state in ENDED:
            path = progress_path(row)
            record = progress.read(path) if path is not None else None
            if record is not None:
                found[row.id] = record
    return found


def log_tail(row: JobRow, lines: int = 1) -> str | None:
    """The last non-empty line(s) of the job's stderr (a reason when there is no result)."""
    path = log_path(row, "err")
    if path is None:
        return None
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 4096))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return None
    found = [" ".join(line.split()) for line in text.splitlines() if line.strip()]
    tail = " | ".join(found[-lines:]) if found else None
    return tail[-300:] if tail else None


def _one_line(text: str, limit: int = 400) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def settle(
    row: JobRow, backend_state: str, outcome: tuple[str, Any] | None, node: str | None = None, detail: str | None = None
) -> Observation:
    """Combine the scheduler's final state with the job's result file, as the caller just read it.

    ``detail`` is what Slurm adds about how the job ended ("exit code 137").
    """
    if outcome is not None and outcome[0] == "success":
        result = outcome[1] if isinstance(outcome[1], dict) else {"value": outcome[1]}
        if backend_state == COMPLETED:
            return Observation(COMPLETED, node, None, result)
        return Observation(backend_state, node, f"Slurm says {backend_state} after the work finished", result)
    if outcome is not None:
        reason = _last_error_line(outcome[1])
        state = FAILED if backend_state == COMPLETED else backend_state
        if "timed-out" in reason or "time limit" in reason:
            state = TIMEOUT
        if backend_state == CANCELLED and detail:
            reason = f"cancelled {detail} ({reason})"
        return Observation(state, node, _one_line(reason))
    tail = log_tail(row)
    said = f" ({detail})" if detail else ""
    if backend_state == COMPLETED:
        reason = f"job ended without writing a result{said}: " + (tail or "no log")
        return Observation(FAILED, node, _one_line(reason))
    if backend_state == CANCELLED and node is None and tail is None:
        return Observation(CANCELLED, node, _one_line(f"cancelled before it started{said}"))
    if backend_state == CANCELLED:
        return Observation(CANCELLED, node, _one_line(f"cancelled{said} without a result; log: {tail or 'empty'}"))
    reason = f"job ended {backend_state} without writing a result{said}; log: {tail or 'empty'}"
    return Observation(backend_state, node, _one_line(reason))


# ------------------------------------------------------------------------ Slurm

SlurmRunner = slurm.Runner
run_slurm = slurm.run

# Accounting a site does not have is not asked again in the same process for a while (a wait
# loop would otherwise start a failing sacct on every poll); keyed by runner and PATH.
_NO_ACCOUNTING: dict[tuple[int, str], tuple[float, str]] = {}
_NO_ACCOUNTING_TTL_S = 600.0


def _accounting_key(runner: SlurmRunner) -> tuple[int, str]:
    return id(runner), os.environ.get("PATH", "")


def _no_accounting(runner: SlurmRunner) -> str | None:
    hit = _NO_ACCOUNTING.get(_accounting_key(runner))
    if hit and time.monotonic() - hit[0] < _NO_ACCOUNTING_TTL_S:
        return hit[1]
    return None


def _end_detail(record: slurm.Record) -> str | None:
    """How Slurm says a job ended, in words: "by uid 0", "exit code 137 (SIGKILL?)"."""
    parts: list[str] = []
    words = record.raw_state.split()
    if len(words) >= 3 and words[1] == "by":
        parts.append(f"by uid {words[2]}")
    if record.exit_code and ":" in record.exit_code:
        code, _, sig = record.exit_code.partition(":")
        if sig.isdigit() and int(sig):
            parts.append(f"killed by signal {sig}{_signame(int(sig))}")
        elif code.isdigit() and int(code):
            text = f"exit code {code}"
            if 128 < int(code) < 160:
                text += f" (128+{int(code) - 128}{_signame(int(code) - 128)}?)"
            parts.append(text)
    if record.reason and words and words[0] not in ("COMPLETED", "CANCELLED"):
        parts.append(f"Slurm reason {record.reason}")
    return ", ".join(parts) or None


def _signame(number: int) -> str:
    try:
        return f" = {signal.Signals(number).name}"
    except ValueError:
        return ""


def _match(row: JobRow, records: Sequence[slurm.Record]) -> slurm.Record | None:
    """The record that is this job's: submitted no earlier than the job (less clock skew).

    A requeued job gets a new submit time, so there is no upper bound — except for a job we
    already call UNKNOWN: a much newer record under its id is another job reusing the id.
    Records come oldest first: the newest that fits wins.
    """
    floor = row.submitted_at - SKEW
    ceiling = row.submitted_at + SKEW if row.state == UNKNOWN else None
    for r in reversed(records):
        if r.submit is None:
            if ceiling is None:
                return r
        elif r.submit >= floor and (ceiling is None or r.submit <= ceiling):
            return r
    return None


@dataclass
class _Asked:
    """What the Slurm calls of one refresh said overall."""

    accounting_error: slurm.AccountingUnavailable | None = None
    queue_asked: set[str] = field(default_factory=set)
    stale: set[str] = field(default_factory=set)  # accounting says live, the controller does not know it


def survey_slurm(
    rows: Sequence[JobRow], runner: SlurmRunner = run_slurm, *, verify: bool = False
) -> tuple[dict[str, Observation], list[str]]:
    """Observations for Slurm jobs with one ``sacct`` and at most one ``squeue`` call.

    ``verify`` also asks ``squeue`` about the jobs accounting calls live, so a record that
    slurmdbd never closed (a "runaway" job) cannot keep a wait going forever; ``wait`` does
    this every few minutes, not on every poll. Returns the observations and the problems that
    kept some jobs unobserved (Slurm unreachable), one line each.
    """
    if not rows:
        return {}, []
    asked = _Asked()
    problems: list[str] = []
    accounting: dict[str, list[slurm.Record]] | None = None
    memo = _no_accounting(runner)
    if memo:
        asked.accounting_error = slurm.AccountingUnavailable(memo, disabled=True)
    else:
        since = slurm.sacct_since(r.submitted_at for r in rows)
        try:
            accounting = slurm.sacct([r.native_id or "" for r in rows], since, runner)
        except slurm.AccountingUnavailable as exc:
            asked.accounting_error = exc
            if exc.disabled:
                _NO_ACCOUNTING[_accounting_key(runner)] = (time.monotonic(), str(exc))
    found: dict[str, slurm.Record] = {}
    ask_queue: list[JobRow] = []
    reason_only: set[str] = set()  # pending in accounting: the controller is asked for the reason alone
    for row in rows:
        record = _match(row, accounting.get(row.native_id or "", ())) if accounting is not None else None
        if record is not None:
            found[row.id] = record
        if row.native_id and (record is None or _ask_controller(record, verify)):
            ask_queue.append(row)
        elif row.native_id and record is not None and from_slurm(record.raw_state) == PENDING:
            ask_queue.append(row)
            reason_only.add(row.id)
    if ask_queue:
        try:
            queue = slurm.squeue([r.native_id or "" for r in ask_queue], runner)
        except slurm.SlurmUnavailable as exc:
            needed = sum(r.id not in reason_only for r in ask_queue)  # accounting answered for the rest
            if needed:
                problems.append(f"cannot ask Slurm about {needed} job(s): {exc}")
        else:
            for row in ask_queue:
                asked.queue_asked.add(row.id)
                record = _match(row, [queue[row.native_id]] if row.native_id in queue else [])
                if record is not None:
                    found[row.id] = record  # the controller's view is the freshest
                elif row.id in reason_only:
                    pass  # accounting's word stands (only ``verify`` judges such a record stale)
                elif row.id in found and from_slurm(found[row.id].raw_state) not in FINISHED:
                    asked.stale.add(row.id)  # accounting calls it live; the controller does not know it
                    del found[row.id]
    now = utcnow()
    observed: dict[str, Observation] = {}
    for row in rows:
        record = found.get(row.id)
        observed[row.id] = _from_record(row, record, now) if record else _vanished(row, asked, now)
    return observed, problems


def _ask_controller(record: slurm.Record, verify: bool) -> bool:
    """Does this accounting record need the controller's word too (see the module docstring)?"""
    state = from_slurm(record.raw_state)
    return state in _MAY_BE_REQUEUED or (verify and state not in FINISHED)


def _from_record(row: JobRow, record: slurm.Record, now: datetime) -> Observation:
    state = from_slurm(record.raw_state)
    node = record.node or row.node
    if state == UNKNOWN:  # a Slurm state we have no word for: keep polling, say what Slurm said
        keep = row.state if row.state in (PENDING, RUNNING) else RUNNING
        return Observation(keep, node, _one_line(f"Slurm state {record.raw_state}"))
    if state == PENDING and record.source == "sacct" and (record.node or row.state == RUNNING):
        # accounting lags the controller: it records the allocation before the state, and a job
        # the controller already called RUNNING does not go back to PENDING on sacct's word
        state = RUNNING
    if state == PENDING:
        return Observation(PENDING, record.node, _pending_reason(record.reason))
    if state not in FINISHED:
        return Observation(state, node)
    outcome = read_result(row)
    if state == COMPLETED and outcome is None and record.end and now - record.end < RESULT_GRACE:
        return Observation(row.state, row.node, row.reason, known=False)  # the result may still be in flight
    return settle(row, state, outcome, record.node if state == CANCELLED else node, _end_detail(record))


def _pending_reason(reason: str | None) -> str | None:
    """Slurm's reason, marked ``cannot start: <reason>`` when it never clears by itself."""
    return f"{reasons.PREFIX}{reasons.word(reason)}" if reasons.never_clears(reason) else reason


def _vanished(row: JobRow, asked: _Asked, now: datetime) -> Observation:
    """Neither accounting nor the controller knows the job: its folder, else UNKNOWN."""
    outcome = read_result(row)
    if outcome is not None:
        return settle(row, COMPLETED if outcome[0] == "success" else FAILED, outcome, row.node)
    keep = Observation(row.state, row.node, row.reason, known=False)
    if not row.native_id:
        return Observation(UNKNOWN, row.node, "no Slurm job id was recorded for this job")
    sid = row.native_id
    if row.id not in asked.queue_asked:  # squeue failed: nothing can be concluded now
        return keep
    if now - row.submitted_at < GRACE:  # too new to be missing (accounting lag, a controller coming back)
        return Observation(row.state, row.node, row.reason, known=False, gone=True)
    if row.id in asked.stale:
        reason = (
            f"accounting still calls Slurm job {sid} live but the controller no longer knows it "
            "(an unclosed accounting record), and it wrote no result"
        )
    elif asked.accounting_error is None:
        reason = f"Slurm job {sid} is known neither to accounting nor to the controller, and wrote no result"
    else:
        reason = (
            f"no accounting ({asked.accounting_error}); the controller no longer knows Slurm job {sid} "
            "(ended more than MinJobAge ago, or lost), and it wrote no result"
        )
    return Observation(UNKNOWN, row.node, _one_line(reason), gone=True)


# ------------------------------------------------------------------------ local


def _local_alive(pid: int, folder: str) -> bool:
    """Is ``pid`` still submitit's local controller for this job folder (not a reused pid)?"""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmdline = fh.read().split(b"\0")
    except (OSError, IndexError):
        return False
    return b"submitit.local._local" in cmdline and folder.encode() in cmdline


def observe_local(row: JobRow) -> Observation:
    """A local job from any process: a result file, else a live controller, else it died.

    submitit's LocalJob re-attached from another process reports "done" while the job still
    runs; the controller's pid and command line (from /proc) tell the truth instead.
    """
    outcome = read_result(row)
    if outcome is not None:
        return settle(row, COMPLETED, outcome)
    pid = int(row.native_id or 0)
    if pid and _local_alive(pid, row.folder):
        return Observation(RUNNING, "localhost")
    if row.state in FINISHED:
        return Observation(row.state, row.node, row.reason, row.result)
    time.sleep(0.2)  # the result may be being renamed into place right now
    outcome = read_result(row)
    if outcome is not None:
        return settle(row, COMPLETED, outcome)
    reason = "local job process ended without a result: " + (log_tail(row) or "no log")
    return Observation(FAILED, "localhost", _one_line(reason))


# ------------------------------------------------------------------------ refresh


@dataclass
class Refreshed:
    """The fresh rows of a refresh, why some could not be observed (one line each), and the ids
    of the jobs Slurm no longer knows at all (see ``Observation.gone``)."""

    rows: list[JobRow]
    problems: list[str]
    gone: set[str] = field(default_factory=set)


def reload(db: Database, ids: Sequence[str]) -> list[JobRow]:
    """Rows by bfjobs id, in the given order, with one query (another process may have moved them)."""
    unique = list(dict.fromkeys(ids))
    by_id = {r.id: r for r in db.get_many(unique)}
    return [by_id[i] for i in unique if i in by_id]


def refresh_report(
    db: Database, rows: Sequence[JobRow], runner: SlurmRunner = run_slurm, *, verify: bool = False
) -> Refreshed:
    """Refresh the rows not finished yet (one Slurm query for all), store changes, report problems.

    Each change is written only if the row still has the state it was read with, so two
    processes refreshing at once never both record (and post-process) the same transition.
    """
    live = [r for r in rows if r.state not in FINISHED]
    observed, problems = survey_slurm([r for r in live if r.backend == "slurm"], runner, verify=verify)
    for row in live:
        if row.backend == "local":
            observed[row.id] = observe_local(row)
    now = utcnow()
    changes: list[tuple[JobRow, dict[str, Any]]] = []
    for row in rows:
        obs = observed.get(row.id)
        if obs is None or not obs.known:
            continue
        node = obs.node or row.node
        result = obs.result if obs.result is not None else row.result
        if (obs.state, node, obs.reason, result) == (row.state, row.node, row.reason, row.result):
            continue
        values: dict[str, Any] = {"state": obs.state, "node": node, "reason": obs.reason, "updated_at": now}
        if obs.result is not None:
            values["result"] = obs.result
        if obs.state in ENDED and (row.state not in ENDED or row.ended_at is None):
            values["ended_at"] = now
        changes.append((row, values))
    applied = db.update_many([(row.id, row.state, values) for row, values in changes])
    moved = [row.id for row, _ in changes if row.id not in applied]
    others = {r.id: r for r in reload(db, moved)}  # changed by another process meanwhile
    for row, values in changes:
        if row.id not in applied:
            continue
        for key, value in values.items():
            setattr(row, key, value)
        if row.state == COMPLETED:
            on_completed(db, row)
    gone = {job_id for job_id, obs in observed.items() if obs.gone}
    return Refreshed([others.get(r.id, r) for r in rows], problems, gone)


def refresh(
    db: Database, rows: Sequence[JobRow], runner: SlurmRunner = run_slurm, *, verify: bool = False
) -> list[JobRow]:
    """Refresh unfinished ``rows`` (one Slurm query for all), store changes, return fresh rows."""
    return refresh_report(db, rows, runner, verify=verify).rows


def _store(db: Database, row: JobRow, values: dict[str, Any]) -> JobRow:
    """One job's change, written only if the row still has the state it was read with (as
    :func:`refresh_report` does for many): the updated row, or the row as another process left it."""
    if not db.update_many([(row.id, row.state, values)]):
        return reload(db, [row.id])[0]
    for key, value in values.items():
        setattr(row, key, value)
    if row.state == COMPLETED:
        on_completed(db, row)
    return row


def on_completed(db: Database, row: JobRow) -> None:
    """Work that follows a successful job, once, when its result is first collected."""
    if row.kind == "download-model":
        from .store import blackfish as registry

        registry.register(db, row)


class Unstartable:
    """Ends the jobs that two refreshes in a row find pending for a reason that never clears.

    Such a job would stay queued behind the user's back and keep ``wait`` going for ever; the
    second sighting guards against a reason seen only for a moment. ``wait`` and
    ``logs --follow`` pass each refresh's rows through :meth:`end`.
    """

    def __init__(self, db: Database, runner: SlurmRunner = run_slurm) -> None:
        self.db, self.runner = db, runner
        self.seen: set[str] = set()

    def end(self, rows: list[JobRow]) -> list[JobRow]:
        """The rows, with those confirmed unable to start cancelled (see :func:`end_unstartable`)."""
        doomed = [r for r in rows if r.state == PENDING and r.backend == "slurm" and reasons.marked(r.reason)]
        confirmed = [r for r in doomed if r.id in self.seen]
        self.seen = {r.id for r in doomed}
        if not confirmed:
            return rows
        ended = {r.id: r for r in end_unstartable(self.db, confirmed, self.runner)}
        return [ended.get(r.id, r) for r in rows]


def end_unstartable(db: Database, rows: Sequence[JobRow], runner: SlurmRunner = run_slurm) -> list[JobRow]:
    """Cancel pending jobs that can never start and record them CANCELLED with the reason
    ``cannot start: <Slurm's reason>: <what to change>`` (:func:`reasons.explain`).

    One ``scancel --state=PENDING`` (a job that started meanwhile is left running) and one
    ``squeue`` to see which are really gone or cancelled; only those are stored CANCELLED, the
    others stay as they are for the next refresh. Refused ids are named in one error at the end.
    """
    why = {r.id: reasons.marked(r.reason) or "" for r in rows}
    ids = [r.native_id or "" for r in rows]
    advice = reasons.explain([(sid, why[r.id]) for sid, r in zip(ids, rows, strict=True)], runner)
    try:
        refused = slurm.scancel(ids, runner, pending_only=True)
    except slurm.SlurmUnavailable as exc:
        raise ClusterError(f"could not cancel jobs that cannot start ({', '.join(ids)}): {exc}") from None
    try:
        live = slurm.squeue(ids, runner)
    except slurm.SlurmUnavailable:
        live = {sid: None for sid in ids}  # unknown: store nothing now, the next refresh decides
    ended: list[JobRow] = []
    failed: list[str] = []
    for row, sid in zip(rows, ids, strict=True):
        reason = f"{reasons.PREFIX}{why[row.id]}: {advice.get(sid, 'change the request')}"
        if sid in refused:
            failed.append(f"job {row.id} (Slurm job {sid}) {reason}; scancel failed: {refused[sid]}")
            continue
        record = live.get(sid)
        if sid in live and (record is None or not record.raw_state.startswith(CANCELLED)):
            continue  # still pending, started meanwhile, or unknown: not ours to call cancelled
        ended.append(_store(db, row, {"state": CANCELLED, "reason": _one_line(reason), "ended_at": utcnow()}))
    if failed:
        raise ClusterError(failed[0] + (f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""))
    return ended


#: ``wait`` for local jobs only: a 1 s pull is noticed within ~0.3 s, a long one within 2 s.
LOCAL_FIRST_DELAY = 0.2
LOCAL_MAX_DELAY = 2.0


def wait(
    db: Database,
    ids: Sequence[str],
    *,
    timeout: float | None = None,
    on_tick: Callable[[list[JobRow], float], None] | None = None,
    runner: SlurmRunner = run_slurm,
    first_delay: float = 1.0,
    max_delay: float = 30.0,
    verify_every: float = 300.0,
    give_up_after: float = 900.0,
) -> list[JobRow]:
    """Poll with back-off until every job has ended (or ``timeout`` seconds have passed).

    It always ends: jobs Slurm forgot become UNKNOWN (see the module docstring), accounting
    that calls a job live is checked against the controller every ``verify_every`` seconds, and
    when Slurm cannot be asked at all for ``give_up_after`` seconds it raises ClusterError.
    Only local jobs (no scheduler to spare, a look at /proc and a folder): polled from
    ``LOCAL_FIRST_DELAY`` up to ``LOCAL_MAX_DELAY`` seconds apart.
    """
    started = time.monotonic()
    job_ids = list(dict.fromkeys(row.id for ref in ids for row in db.resolve_many(ref)))
    delay = first_delay
    last_verify = started
    blind_since: float | None = None
    first = True
    unstartable = Unstartable(db, runner)
    while True:
        now = time.monotonic()
        verify = now - last_verify >= verify_every
        if verify:
            last_verify = now
        report = refresh_report(db, reload(db, job_ids), runner, verify=verify)
        rows = unstartable.end(report.rows)
        elapsed = time.monotonic() - started
        if on_tick:
            on_tick(rows, elapsed)
        if all(r.state in ENDED for r in rows):
            return rows
        if first and all(r.backend == "local" for r in rows):
            delay, max_delay = min(delay, LOCAL_FIRST_DELAY), min(max_delay, LOCAL_MAX_DELAY)
        first = False
        if report.problems:
            blind_since = now if blind_since is None else blind_since
            if now - blind_since >= give_up_after:
                raise ClusterError(f"gave up after {give_up_after:g} s without an answer: {report.problems[0]}")
        else:
            blind_since = None
        if timeout is not None and elapsed >= timeout:
            return rows
        pause = delay if timeout is None else min(delay, max(0.0, timeout - elapsed))
        time.sleep(pause)
        delay = min(max_delay, delay * 1.5)


# ------------------------------------------------------------------------ cancel


@dataclass
class CancelOutcome:
    """What ``cancel`` did for one job: ``row`` is its state afterwards."""

    row: JobRow
    action: str  # "cancelled", "requested" (Slurm not done yet), "already ended", "refused"
    message: str | None = None


def cancel(
    db: Database,
    rows: Sequence[JobRow],
    runner: SlurmRunner = run_slurm,
    *,
    confirm_s: float = 15.0,
    local_grace_s: float = 20.0,
) -> list[CancelOutcome]:
    """Cancel jobs: one ``scancel`` for all Slurm jobs, SIGTERM to local controllers.

    Jobs are refreshed first (one query), so a job already over — or a Slurm id that is no
    longer ours — is never signalled. The task removes its partial file on SIGTERM; the DB
    says CANCELLED once Slurm does (polled for up to ``confirm_s`` seconds, controller first).
    """
    unique = list({r.id: r for r in rows}.values())
    fresh = refresh(db, unique, runner)
    outcomes: dict[str, CancelOutcome] = {}
    to_scancel: list[JobRow] = []
    for row in fresh:
        if row.state in FINISHED:
            outcomes[row.id] = CancelOutcome(row, "already ended")
        elif row.state == UNKNOWN:
            outcomes[row.id] = CancelOutcome(row, "refused", "Slurm no longer knows this job; nothing to cancel")
        elif row.backend == "local":
            outcomes[row.id] = _cancel_local(db, row, local_grace_s)
        else:
            to_scancel.append(row)
    if to_scancel:
        try:
            refused = slurm.scancel([r.native_id or "" for r in to_scancel], runner)
        except slurm.SlurmUnavailable as exc:
            raise ClusterError(f"scancel failed: {exc}") from None
        asked = [r for r in to_scancel if r.native_id not in refused]
        for row in to_scancel:
            if row.native_id in refused:
                outcomes[row.id] = CancelOutcome(row, "refused", refused[row.native_id or ""])
        deadline = time.monotonic() + confirm_s
        delay = 0.3
        pending = asked
        while pending:
            time.sleep(delay)
            report = refresh_report(db, reload(db, [r.id for r in pending]), runner, verify=True)
            done = [_dropped(db, r) if r.id in report.gone and r.state not in FINISHED else r for r in report.rows]
            for row in done:
                if row.state in ENDED:
                    outcomes[row.id] = CancelOutcome(row, "cancelled" if row.state == CANCELLED else "already ended")
            pending = [r for r in done if r.state not in ENDED]
            if time.monotonic() + delay > deadline:
                break
            delay = min(2.0, delay * 1.5)
        for row in pending:
            outcomes[row.id] = CancelOutcome(row, "requested", f"Slurm still says {row.state}")
    return [outcomes[r.id] for r in fresh]


def _dropped(db: Database, row: JobRow) -> JobRow:
    """A job our scancel removed that Slurm then forgot at once: CANCELLED, not "missing".

    Slurm keeps no trace of a pending job array element cancelled before it was split off
    (neither ``squeue -t all`` nor ``sacct`` lists it), so the refresh alone would say PENDING
    until the grace period ends, then UNKNOWN (at once for an element pending longer).
    """
    if row.node is None:
        reason = "cancelled before it started (Slurm dropped the pending job)"
    else:
        reason = "cancelled; Slurm no longer knows the job and it wrote no result"
    return _store(db, row, {"state": CANCELLED, "reason": reason, "ended_at": utcnow()})


def _cancel_local(db: Database, row: JobRow, grace_s: float) -> CancelOutcome:
    """SIGTERM to the local controller (it forwards it to the task), SIGKILL to its session after ``grace_s``."""
    pid = int(row.native_id or 0)
    if pid and _local_alive(pid, row.folder):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while _local_alive(pid, row.folder) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _local_alive(pid, row.folder):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)  # its own session: the controller leads the group
    outcome = read_result(row)
    if outcome is not None and outcome[0] == "success":
        obs = settle(row, COMPLETED, outcome)  # it finished before the signal arrived
        action = "already ended"
    else:
        obs = Observation(CANCELLED, "localhost", "cancelled with bfjobs cancel")
        action = "cancelled"
    values: dict[str, Any] = {"state": obs.state, "node": obs.node, "reason": obs.reason, "ended_at": utcnow()}
    if obs.result is not None:
        values["result"] = obs.result
    return CancelOutcome(_store(db, row, values), action)
