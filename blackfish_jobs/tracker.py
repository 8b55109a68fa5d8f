"""Job states and results: one refresh asks the backend once for all jobs, then stores results.

State vocabulary (Slurm, local and DB alike): PENDING, RUNNING, COMPLETED, FAILED, CANCELLED,
TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, PREEMPTED, and UNKNOWN only when nothing can be known.
A job whose scheduler state is COMPLETED but whose result says the work failed is FAILED.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from . import constants
from .db import Database, JobRow, utcnow

PENDING, RUNNING, COMPLETED, FAILED = "PENDING", "RUNNING", "COMPLETED", "FAILED"
CANCELLED, TIMEOUT, OUT_OF_MEMORY = "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY"
NODE_FAIL, PREEMPTED, UNKNOWN = "NODE_FAIL", "PREEMPTED", "UNKNOWN"
STATES = constants.STATES
FINISHED = constants.FINISHED_STATES

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


def from_slurm(raw: str) -> str:
    """``CANCELLED by 0`` → CANCELLED, ``OUT_OF_ME+`` → OUT_OF_MEMORY, unknown → UNKNOWN."""
    word = raw.strip().split(" ")[0].rstrip("+").upper()
    if word.startswith("OUT_OF_ME"):
        return OUT_OF_MEMORY
    return _SLURM.get(word, UNKNOWN)


@dataclass
class Observation:
    """What a refresh learned about one job."""

    state: str
    node: str | None = None
    reason: str | None = None
    result: dict[str, Any] | None = None


# ------------------------------------------------------------------------ result files


def result_path(row: JobRow) -> Path:
    from submitit.core.utils import JobPaths

    return JobPaths(row.folder, job_id=row.native_id, task_id=0).result_pickle


def read_result(row: JobRow) -> tuple[str, Any] | None:
    """submitit's ``(outcome, value)`` from the job folder, or None if not written (yet)."""
    from submitit.core.utils import pickle_load

    path = result_path(row)
    if not path.exists():
        return None
    try:
        outcome, value = pickle_load(path)
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


def log_tail(row: JobRow, lines: int = 1) -> str | None:
    """The last non-empty line of the job's stderr (for a reason when there is no result)."""
    from submitit.core.utils import JobPaths

    if not row.native_id:
        return None
    path = JobPaths(row.folder, job_id=row.native_id, task_id=0).stderr
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 4096))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return None
    found = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(found[-lines:]) if found else None


def settle(row: JobRow, backend_state: str, node: str | None = None) -> Observation:
    """Combine the scheduler's state with the job's own result file."""
    if backend_state not in FINISHED:
        return Observation(backend_state, node)
    outcome = read_result(row)
    if outcome is not None and outcome[0] == "success":
        result = outcome[1] if isinstance(outcome[1], dict) else {"value": outcome[1]}
        if backend_state == COMPLETED:
            return Observation(COMPLETED, node, None, result)
        return Observation(backend_state, node, f"scheduler says {backend_state} after the work finished", result)
    if outcome is not None:
        reason = _last_error_line(outcome[1])
        state = FAILED if backend_state == COMPLETED else backend_state
        if "timed-out" in reason or "time limit" in reason:
            state = TIMEOUT
        return Observation(state, node, reason)
    if backend_state == COMPLETED:
        return Observation(FAILED, node, "job ended without writing a result: " + (log_tail(row) or "no log"))
    return Observation(backend_state, node, log_tail(row) or f"Slurm state {backend_state}")


# ------------------------------------------------------------------------ Slurm


SlurmRunner = Callable[[list[str]], str]


def run_slurm(argv: list[str]) -> str:
    """Run a Slurm client command; raise OSError/CalledProcessError on failure."""
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60).stdout


def sacct_states(rows: Sequence[JobRow], runner: SlurmRunner = run_slurm) -> dict[str, tuple[str, str]]:
    """One ``sacct`` call for all rows, bounded by their earliest submit time.

    The ``-S`` bound keeps a Slurm id reused after a controller reset from matching an old record.
    Returns ``{job_id: (raw_state, nodelist)}`` for the jobs accounting knows about.
    """
    start = min(r.submitted_at for r in rows) - timedelta(minutes=5)
    argv = ["sacct", "-X", "-n", "-P", "-o", "JobIDRaw,State,NodeList", "-S", start.strftime("%Y-%m-%dT%H:%M:%S")]
    argv += ["-j", ",".join(sorted({r.native_id for r in rows if r.native_id}))]
    out = runner(argv)
    found: dict[str, tuple[str, str]] = {}
    for line in out.splitlines():
        parts = line.split("|")
        if len(parts) >= 3:
            found[parts[0]] = (parts[1], parts[2])
    return found


def squeue_states(ids: Iterable[str], runner: SlurmRunner = run_slurm) -> dict[str, tuple[str, str]]:
    """One ``squeue`` call for jobs accounting does not show yet (or at all)."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    out = runner(["squeue", "-h", "-t", "all", "-o", "%i|%T|%N", "-j", ",".join(wanted)])
    found: dict[str, tuple[str, str]] = {}
    for line in out.splitlines():
        parts = line.split("|")
        if len(parts) >= 3:
            found[parts[0]] = (parts[1], parts[2])
    return found


def observe_slurm(rows: Sequence[JobRow], runner: SlurmRunner = run_slurm) -> dict[str, Observation]:
    """States for Slurm jobs: one sacct call, plus one squeue call for any it does not list."""
    if not rows:
        return {}
    try:
        known = sacct_states(rows, runner)
    except (OSError, subprocess.SubprocessError):
        known = {}
    missing = [r.native_id for r in rows if r.native_id and r.native_id not in known]
    if missing:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            known.update(squeue_states(missing, runner))
    out: dict[str, Observation] = {}
    for row in rows:
        raw = known.get(row.native_id or "")
        if raw is None:
            # Neither accounting nor the controller knows it: only the job folder can tell.
            outcome = read_result(row)
            if outcome is not None:
                out[row.id] = settle(row, COMPLETED if outcome[0] == "success" else FAILED)
            else:
                out[row.id] = Observation(row.state, row.node, row.reason)
            continue
        node = raw[1] if raw[1] and raw[1] not in ("None assigned", "(null)") else None
        out[row.id] = settle(row, from_slurm(raw[0]), node)
    return out


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
        return settle(row, COMPLETED)
    pid = int(row.native_id or 0)
    if pid and _local_alive(pid, row.folder):
        return Observation(RUNNING, "localhost")
    if row.state in FINISHED:
        return Observation(row.state, row.node, row.reason, row.result)
    time.sleep(0.2)  # the result may be being renamed into place right now
    if read_result(row) is not None:
        return settle(row, COMPLETED)
    reason = "local job process ended without a result: " + (log_tail(row) or "no log")
    return Observation(FAILED, "localhost", reason)


# ------------------------------------------------------------------------ refresh


def refresh(db: Database, rows: Sequence[JobRow], runner: SlurmRunner = run_slurm) -> list[JobRow]:
    """Refresh unfinished ``rows`` (one Slurm query for all), store changes, return fresh rows."""
    live = [r for r in rows if r.state not in FINISHED]
    observed = observe_slurm([r for r in live if r.backend == "slurm"], runner)
    for row in live:
        if row.backend == "local":
            observed[row.id] = observe_local(row)
    now = utcnow()
    fresh: list[JobRow] = []
    for row in rows:
        obs = observed.get(row.id)
        if obs is not None and (obs.state, obs.node, obs.reason, obs.result) != (
            row.state,
            row.node,
            row.reason,
            row.result,
        ):
            values: dict[str, Any] = {"state": obs.state, "node": obs.node or row.node, "reason": obs.reason}
            if obs.result is not None:
                values["result"] = obs.result
            if obs.state in FINISHED:
                values["ended_at"] = now
            db.update(row.id, updated_at=now, **values)
            for key, value in values.items():
                setattr(row, key, value)
            row.updated_at = now
            if row.state == COMPLETED:
                on_completed(db, row)
        fresh.append(row)
    return fresh


def on_completed(db: Database, row: JobRow) -> None:
    """Work that follows a successful job, once, when its result is first collected."""
    if row.kind == "download-model":
        from . import registry

        registry.register(db, row)


def wait(
    db: Database,
    ids: Sequence[str],
    *,
    timeout: float | None = None,
    on_tick: Callable[[list[JobRow], float], None] | None = None,
    runner: SlurmRunner = run_slurm,
    first_delay: float = 1.0,
    max_delay: float = 30.0,
) -> list[JobRow]:
    """Poll with back-off until every job is finished (or ``timeout`` seconds have passed)."""
    started = time.monotonic()
    delay = first_delay
    while True:
        rows = [db.resolve(i) for i in ids]
        rows = refresh(db, rows, runner)
        elapsed = time.monotonic() - started
        if on_tick:
            on_tick(rows, elapsed)
        if all(r.state in FINISHED for r in rows):
            return rows
        if timeout is not None and elapsed >= timeout:
            return rows
        pause = delay if timeout is None else min(delay, max(0.0, timeout - elapsed))
        time.sleep(pause)
        delay = min(max_delay, delay * 1.5)


def elapsed_since(moment: datetime) -> float:
    return (utcnow() - moment).total_seconds()
