"""submitit's job-folder layout, read without importing submitit, and what a job's files say.

One folder per bfjobs job (an array's elements share one): ``<native id>_0_result.pkl`` (what
the task returned or raised), ``<native id>_0_log.out``/``.err`` and bfjobs' own
``<native id>_0_progress.json``. The same names for Slurm (the template's ``--output``/``--error``)
and local jobs (submitit's local controller). Importing submitit just to name a file
would put it on the path of every ``status`` that meets a finished job.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..node import progress
from ..states import CANCELLED, COMPLETED, ENDED, FAILED, RUNNING, TIMEOUT, State
from .base import Observation

if TYPE_CHECKING:
    from ..store import JobRow


def submit_argv(folder: Path) -> list[str]:
    """The command submitit's SlurmExecutor runs in the job (see its ``_submitit_command_str``):
    the templates print it (quoted by render), the executor checks submitit still builds it."""
    return [sys.executable, "-u", "-m", "submitit.core._submit", str(folder)]


def result_path(row: JobRow) -> Path:
    """submitit's result file, ``<folder>/<native id>_0_result.pkl`` (``JobPaths.result_pickle``)."""
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


def log_path(row: JobRow, stream: str = "out") -> Path | None:
    """The job's stdout (``out``) or stderr (``err``) log: ``<folder>/<native id>_0_log.<stream>``."""
    if not row.native_id:
        return None
    return Path(row.folder) / f"{row.native_id}_0_log.{stream}"


def progress_path(row: JobRow) -> Path | None:
    """The job's progress record, ``<folder>/<native id>_0_progress.json`` (see :mod:`progress`)."""
    return progress.record_path(row.folder, row.native_id) if row.native_id else None


#: The states whose jobs may have a progress record (PENDING ones never do).
WITH_PROGRESS = frozenset({RUNNING, *ENDED})


def read_progress(rows: Sequence[JobRow]) -> dict[str, dict[str, Any]]:
    """Progress records by job id: of the RUNNING jobs, and the final figures of ended ones.

    One small file read per such job and no scheduler call; PENDING jobs (most of a long queue)
    have no record and are not looked at, so ``status`` over thousands of jobs costs what it did.
    """
    found = {}
    for row in rows:
        if row.state in WITH_PROGRESS:
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


def one_line(text: str, limit: int = 400) -> str:
    """``text`` on one line, at most ``limit`` characters (a reason as stored)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


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


def settle(
    row: JobRow,
    backend_state: State,
    outcome: tuple[str, Any] | None,
    node: str | None = None,
    detail: str | None = None,
) -> Observation:
    """Combine the scheduler's final state with the job's result file, as the caller just read it.

    ``detail`` is what the scheduler adds about how the job ended ("exit code 137").
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
        return Observation(state, node, one_line(reason))
    tail = log_tail(row)
    said = f" ({detail})" if detail else ""
    if backend_state == COMPLETED:
        reason = f"job ended without writing a result{said}: " + (tail or "no log")
        return Observation(FAILED, node, one_line(reason))
    if backend_state == CANCELLED and node is None and tail is None:
        return Observation(CANCELLED, node, one_line(f"cancelled before it started{said}"))
    if backend_state == CANCELLED:
        return Observation(CANCELLED, node, one_line(f"cancelled{said} without a result; log: {tail or 'empty'}"))
    reason = f"job ended {backend_state} without writing a result{said}; log: {tail or 'empty'}"
    return Observation(backend_state, node, one_line(reason))
