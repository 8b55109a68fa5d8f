"""submitit's executors as bfjobs submits with them: Slurm with our Jinja script, or a detached local process.

Imported only when something is submitted (submitit is slow to import).

:class:`TemplatedSlurmExecutor` keeps everything submitit does (pickling the task, reading the
job id, result files, re-attaching from any process) and only replaces the sbatch text with the
rendered template. :class:`DetachedLocalExecutor` runs the same task without Slurm for the
``local`` profile, in its own session so it outlives the command that started it.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import submitit
from submitit.core import utils as submitit_utils
from submitit.local import local as submitit_local

from ..errors import ClusterError
from . import folder as folder_layout

if TYPE_CHECKING:
    from ..specs import JobSpec

def minutes(slurm_time: str | None, default: float = 120.0) -> float:
    """Convert a Slurm time string to minutes (for submitit's timeout and the local runner)."""
    if not slurm_time:
        return default
    days = 0
    rest = slurm_time
    if "-" in rest:
        d, rest = rest.split("-", 1)
        days = int(d)
        parts = [int(p) for p in rest.split(":")]
        hours, mins, secs = [*parts, 0, 0][:3]
    else:
        parts = [int(p) for p in rest.split(":")]
        if len(parts) == 1:
            return float(parts[0])  # "MM"
        if len(parts) == 2:
            mins, secs = parts
            hours = 0
        else:
            hours, mins, secs = parts
    return days * 1440 + hours * 60 + mins + secs / 60


class TemplatedSlurmExecutor(submitit.SlurmExecutor):
    """A SlurmExecutor whose sbatch script is the rendered bfjobs template (``script``, rendered
    once by the caller before the job folder was created).

    With ``elements`` it submits one Slurm job array through the same template: submitit's own
    array path builds a plain ``SlurmExecutor`` internally and would bypass the template, so
    :meth:`_internal_process_submissions` is overridden to keep submitit's file layout (one
    ``<array>_<index>_submitted.pkl`` per element, results written per element by submitit).
    """

    def __init__(self, folder: Path, spec: JobSpec, script: str, elements: Sequence[JobSpec] | None = None) -> None:
        super().__init__(folder=folder, max_num_timeout=0)
        self._script = script
        self._elements = list(elements) if elements else None
        # submitit uses "time" to count timeouts; the real limit is in the template's header.
        self.parameters["time"] = int(minutes(spec.settings.time))

    def _make_submission_file_text(self, command: str, uid: str) -> str:
        expected = folder_layout.submit_argv(Path(self.folder))
        if shlex.split(command) != expected:  # submitit changed how it builds the command: fail loudly
            raise ClusterError(f"unexpected submitit command {command!r}; expected {expected!r}")
        return self._script

    def _internal_process_submissions(
        self, delayed_submissions: list[submitit_utils.DelayedSubmission]
    ) -> list[submitit.core.core.Job[Any]]:
        if self._elements is None:
            return super()._internal_process_submissions(delayed_submissions)
        if len(delayed_submissions) != len(self._elements):
            raise ClusterError("job array: one submission per element is required")
        folder = submitit_utils.JobPaths.get_first_id_independent_folder(self.folder)
        folder.mkdir(parents=True, exist_ok=True)
        pickles = []
        for delayed in delayed_submissions:
            path = folder / f"{uuid.uuid4().hex}.pkl"
            delayed.set_timeout(self.parameters.get("time", 5), self.max_num_timeout)
            delayed.dump(path)
            pickles.append(path)
        first = self._submit_command(self._submitit_command_str)
        jobs = [
            submitit.SlurmJob(folder=self.folder, job_id=f"{first.job_id}_{i}", tasks=[0])
            for i in range(len(delayed_submissions))
        ]
        for job, path in zip(jobs, pickles, strict=True):
            job.paths.move_temporary_file(path, "submitted_pickle")
        return jobs


class DetachedLocalExecutor(submitit.LocalExecutor):
    """LocalExecutor whose controller starts in a new session with no terminal attached.

    submitit's own controller inherits the caller's terminal and dies with it (SIGHUP); a pull
    started with ``bfjobs submit`` on a laptop must keep running after the command returns.
    """

    def _submit_command(self, command: str) -> submitit_local.LocalJob[Any]:
        env = dict(os.environ)
        env.update(
            SUBMITIT_LOCAL_NTASKS="1",
            SUBMITIT_LOCAL_COMMAND=command,
            SUBMITIT_LOCAL_TIMEOUT_S=str(int(60 * self.parameters.get("timeout_min", 120))),
            SUBMITIT_LOCAL_SIGNAL_DELAY_S="30",
            SUBMITIT_LOCAL_NODEID="0",
            SUBMITIT_LOCAL_JOB_NUM_NODES="1",
            SUBMITIT_STDERR_TO_STDOUT="",
            SUBMITIT_EXECUTOR="local",
            CUDA_VISIBLE_DEVICES="",
            SUBMITIT_LOCAL_WITH_SHELL="",
        )
        log = Path(self.folder) / "local-controller.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "submitit.local._local", str(self.folder)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return submitit_local.LocalJob(folder=self.folder, job_id=str(process.pid), process=process)


_SBATCH_ERROR = re.compile(r"sbatch: error: (.*)")


@contextlib.contextmanager
def submission_errors(what: str) -> Iterator[None]:
    """sbatch's refusal (or a failure to run it) as one ClusterError line; submitit prints
    sbatch's stderr itself on failure, so its stderr is held back and reported once."""
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    except submitit_utils.FailedJobError as exc:
        text = str(exc)
        called = exc.__cause__
        if not text.strip() and isinstance(called, subprocess.CalledProcessError):  # sbatch said nothing
            text = f"sbatch exited with status {called.returncode} and printed nothing"
        raise ClusterError(_refusal(what, text)) from None
    except (OSError, subprocess.SubprocessError) as exc:
        raise ClusterError(f"could not submit {what}: {exc}") from None


_UNREACHABLE = re.compile(r"unable to contact slurm controller", re.IGNORECASE)
_BAD_PARTITION = re.compile(r"invalid partition", re.IGNORECASE)


def _refusal(what: str, text: str) -> str:
    """A failed sbatch call in one line: an unreachable controller is not a refusal, and a
    wrong partition names the valid ones (one ``sinfo`` call, on this path only)."""
    message = _scheduler_message(text)
    if _UNREACHABLE.search(text):
        return f"could not submit {what}: the Slurm controller is unreachable (sbatch: {message}); nothing submitted"
    if _BAD_PARTITION.search(text):
        from . import slurmcli

        valid = slurmcli.partitions()
        if valid:
            message += f" (partitions here: {', '.join(valid)})"
    return f"sbatch refused {what}: {message}"


def _scheduler_message(text: str) -> str:
    """The scheduler's own words from a failed sbatch call (its ``sbatch: error:`` lines)."""
    found = _SBATCH_ERROR.findall(text)
    if found:
        return "; ".join(dict.fromkeys(m.strip() for m in found))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"
