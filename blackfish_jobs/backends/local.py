"""The local backend: the task runs on this machine under submitit's local controller, detached.

There is no scheduler to ask: a job's result file says how it ended, and while there is none
the controller's pid and command line in /proc say whether it still runs (submitit's LocalJob
re-attached from another process reports "done" while the job still runs).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from ..states import CANCELLED, COMPLETED, FAILED, FINISHED, RUNNING
from .base import Backend, CancelRequest, Observation, Submitted, Survey, Task
from .folder import log_tail, one_line, read_result, settle

if TYPE_CHECKING:
    from ..specs import JobSpec
    from ..store import JobRow


class LocalBackend(Backend):
    """Jobs as detached local processes (the ``local`` profile)."""

    name: ClassVar[str] = "local"
    #: ``wait`` for local jobs only: a 1 s pull is noticed within ~0.3 s, a long one within 2 s.
    FIRST_DELAY: ClassVar[float] = 0.2
    MAX_DELAY: ClassVar[float] = 2.0
    poll_delays: ClassVar[tuple[float, float] | None] = (FIRST_DELAY, MAX_DELAY)

    @classmethod
    def builtin_reason(cls) -> str:
        from .. import constants

        if constants.which("sbatch") is None:
            return "no sbatch on PATH: jobs run on this machine"
        return "--profile local: jobs run on this machine, not through Slurm"

    def submit(self, spec: JobSpec, job_folder: Path, script: str | None, task: Task) -> Submitted:
        from . import executors

        executor = executors.DetachedLocalExecutor(folder=job_folder, max_num_timeout=0)
        executor.update_parameters(timeout_min=executors.minutes(spec.settings.time))
        with executors.submission_errors("the job"):
            job = executor.submit(task, spec.task)
        return Submitted(self.name, str(job.job_id), RUNNING, "localhost")

    def survey(self, rows: Sequence[JobRow], *, verify: bool = False, reasons: bool = False) -> Survey:
        return Survey({row.id: observe(row) for row in rows})

    def cancel(self, rows: Sequence[JobRow], *, grace_s: float = 20.0) -> CancelRequest:
        """SIGTERM to each local controller (it forwards it to the task), SIGKILL to its session
        after ``grace_s``; the outcome is known at once."""
        return CancelRequest(settled={row.id: _cancel(row, grace_s) for row in rows})


def alive(pid: int, folder: str) -> bool:
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


def observe(row: JobRow) -> Observation:
    """A local job from any process: a result file, else a live controller, else it died."""
    outcome = read_result(row)
    if outcome is not None:
        return settle(row, COMPLETED, outcome)
    pid = int(row.native_id or 0)
    if pid and alive(pid, row.folder):
        return Observation(RUNNING, "localhost")
    if row.state in FINISHED:
        return Observation(row.state, row.node, row.reason, row.result)
    time.sleep(0.2)  # the result may be being renamed into place right now
    outcome = read_result(row)
    if outcome is not None:
        return settle(row, COMPLETED, outcome)
    reason = "local job process ended without a result: " + (log_tail(row) or "no log")
    return Observation(FAILED, "localhost", one_line(reason))


def _cancel(row: JobRow, grace_s: float) -> Observation:
    pid = int(row.native_id or 0)
    if pid and alive(pid, row.folder):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while alive(pid, row.folder) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive(pid, row.folder):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)  # its own session: the controller leads the group
    outcome = read_result(row)
    if outcome is not None and outcome[0] == "success":
        return settle(row, COMPLETED, outcome)  # it finished before the signal arrived
    return Observation(CANCELLED, "localhost", "cancelled with bfjobs cancel")
