"""Slurm client command lines and the processes that run them: :func:`run`, :class:`Prestarted`.

A module of its own, light to import (``os``, ``subprocess``, ``datetime``): ``bfjobs status``
builds and starts its one ``sacct`` call here before the CLI is loaded
(:mod:`blackfish_jobs.entry`), and hands the running process to the Slurm backend, whose first
call with the same command line collects it instead of running it again.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

#: ``(argv) -> stdout``; raises OSError or subprocess.SubprocessError when the call fails.
Runner = Callable[[list[str]], str]

#: The Slurm backend's name (profiles' ``schema``, jobs' ``backend`` column); here so that
#: ``status``' early start names it without importing the backend.
BACKEND = "slurm"

#: Seconds before a Slurm client call is given up (slurmctld/slurmdbd under load can be slow).
CALL_TIMEOUT_S = 60

#: Clock skew allowed between this node and the controller (the ``sacct -S`` bound, record matching).
CLOCK_SKEW = timedelta(minutes=10)

SACCT_FIELDS = "JobID,JobIDRaw,State,NodeList,Submit,End,ExitCode,Reason"


def env() -> dict[str, str]:
    """The environment of every Slurm client call: epoch timestamps (``SLURM_TIME_FORMAT=%s``)."""
    return dict(os.environ, SLURM_TIME_FORMAT="%s")


def local_time(moment: datetime) -> str:
    """A naive-UTC moment as the local wall-clock time Slurm's clients parse (``-S``)."""
    return moment.replace(tzinfo=UTC).astimezone().strftime("%Y-%m-%dT%H:%M:%S")


def job_ids(ids: Iterable[str]) -> list[str]:
    """Distinct non-empty ids in a stable order (numeric ids sort as numbers: by length, then as
    text; two sorts with C keys, a quarter of one with a tuple key at 10,000 ids)."""
    distinct = set(ids)
    distinct.discard("")
    return sorted(sorted(distinct), key=len)


def sacct_since(submitted: Iterable[datetime]) -> datetime:
    """The ``sacct -S`` bound for jobs submitted at these (naive UTC) times: the oldest, less skew."""
    return min(submitted) - CLOCK_SKEW


#: Longest single argument Linux passes to a program (MAX_ARG_STRLEN, 128 KiB with its NUL).
MAX_ARG_CHARS = 128 * 1024 - 1


def id_lists(ids: Iterable[str], limit: int = MAX_ARG_CHARS) -> list[str]:
    """``ids`` as the fewest comma-separated ``-j`` arguments that each fit in one argument
    (one for up to ~16,000 Slurm ids of 7 digits; packed in order, each list as full as it goes)."""
    ordered = job_ids(ids)
    if sum(map(len, ordered)) + len(ordered) - 1 <= limit:
        return [",".join(ordered)] if ordered else []
    lists: list[str] = []
    current: list[str] = []
    size = -1  # no comma before the first id
    for job_id in ordered:
        if current and size + 1 + len(job_id) > limit:
            lists.append(",".join(current))
            current, size = [], -1
        current.append(job_id)
        size += 1 + len(job_id)
    if current:
        lists.append(",".join(current))
    return lists


def squeue_lists(head: list[str], ids: Iterable[str], runner: Runner) -> str:
    """``squeue`` (``head`` + ``-j LIST``) for ``ids``: one call unless they outgrow one argument,
    the answers joined. "Invalid job id" (squeue's answer when no id of a list is known any more)
    is an empty answer; any other failure is raised as the runner raised it."""
    outs = []
    for ids_text in id_lists(ids):
        try:
            outs.append(runner([*head, "-j", ids_text]))
        except subprocess.CalledProcessError as exc:
            if "invalid job id" not in str(exc.stderr or exc.output or "").lower():
                raise
    return "\n".join(outs)


def sacct_argvs(ids: Iterable[str], since: datetime) -> list[list[str]]:
    """The ``sacct`` command lines for ``ids`` active since ``since``: one unless the ``-j``
    list outgrows one argument (:func:`id_lists`); none without ids."""
    head = ["sacct", "-X", "-n", "-P", "-o", SACCT_FIELDS, "-S", local_time(since), "-j"]
    return [[*head, ids_text] for ids_text in id_lists(ids)]


def _text(data: bytes | None) -> str:
    # Slurm prints user-chosen names and reasons: undecodable bytes must not crash a refresh
    return (data or b"").decode(errors="replace")


def run(argv: list[str]) -> str:
    """Run a Slurm client command with epoch timestamps; return its stdout, raise on failure.

    Raises what ``subprocess.run(check=True, timeout=CALL_TIMEOUT_S)`` raises (OSError,
    CalledProcessError with text stderr, TimeoutExpired).
    """
    done = subprocess.run(argv, check=False, capture_output=True, timeout=CALL_TIMEOUT_S, env=env())
    return _answer(argv, done.returncode, done.stdout, done.stderr)


def _answer(argv: list[str], code: int, out: bytes, err: bytes) -> str:
    if code:
        raise subprocess.CalledProcessError(code, argv, _text(out), _text(err))
    return _text(out)


class Prestarted:
    """A client call started ahead of time (:func:`prestart`), for the first identical call to collect.

    Whoever started it ends it with :meth:`discard` once the command is over: a call nobody
    used (the jobs changed meanwhile) is killed then, never left running.
    """

    def __init__(self, argv: list[str], process: subprocess.Popen[bytes]) -> None:
        self.argv, self.process = argv, process
        self.used = False

    def collect(self, timeout: float = CALL_TIMEOUT_S) -> str:
        """Its stdout, as :func:`run` would have answered (killed and raised after ``timeout`` s)."""
        self.used = True
        try:
            out, err = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as late:
            self.process.kill()
            out, _err = self.process.communicate()
            raise subprocess.TimeoutExpired(self.argv, timeout, out) from late
        return _answer(self.argv, self.process.returncode, out, err)

    def discard(self) -> None:
        """Kill the call if nobody collected it, and reap it (no zombie, no stray ``sacct``)."""
        if self.process.returncode is None:
            self.process.kill()
            self.process.communicate()


def prestart(argv: list[str]) -> Prestarted | None:
    """Start ``argv`` now with ``subprocess.Popen``; None if it cannot start (left to the
    ordinary call to report)."""
    try:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env()
        )
    except (OSError, ValueError):
        return None
    return Prestarted(argv, process)


def prestart_sacct(ids: Iterable[str], since: datetime) -> Prestarted | None:
    """Start the first ``sacct`` call a survey of ``ids`` active since ``since`` will make (the
    only one unless the ids outgrow one argument: the backend makes the others); None without ids.
    ``status``' entry point and a remote cluster's agent start their head start here."""
    argvs = sacct_argvs(ids, since)
    return prestart(argvs[0]) if argvs else None
