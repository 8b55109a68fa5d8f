"""Slurm client command lines and the processes that run them: ``run``, ``prestart``, ``sacct_argv``.

Why a module of its own, importing only ``os``, ``signal``, ``time`` and ``datetime`` (not even
``typing`` or ``contextlib``):
``bfjobs status`` builds and starts its one ``sacct`` call here before the CLI is loaded
(:mod:`blackfish_jobs.entry`), and every millisecond before that start is a millisecond the user
waits on top of ``sacct`` itself. ``subprocess`` (~2 ms to import) and :mod:`slurm`'s parsers are
loaded afterwards, while ``sacct`` runs. A prestarted call is a plain ``os.posix_spawnp`` with two
pipes; :func:`run` collects it exactly as ``subprocess.run`` would have answered.
"""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime, timedelta

from .constants import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

#: Seconds before a Slurm client call is given up (slurmctld/slurmdbd under load can be slow).
CALL_TIMEOUT_S = 60

#: Clock skew allowed between this node and the controller (the ``sacct -S`` bound, record matching).
CLOCK_SKEW = timedelta(minutes=10)

SACCT_FIELDS = "JobID,JobIDRaw,State,NodeList,Submit,End,ExitCode,Reason"

# What subprocess' restore_signals resets in the child: Python ignores SIGPIPE and SIGXFSZ.
_RESTORE_SIGNALS = tuple(getattr(signal, name) for name in ("SIGPIPE", "SIGXFZ", "SIGXFSZ") if hasattr(signal, name))


def env() -> dict[str, str]:
    """The environment of every Slurm client call: epoch timestamps (``SLURM_TIME_FORMAT=%s``)."""
    return dict(os.environ, SLURM_TIME_FORMAT="%s")


def local_time(moment: datetime) -> str:
    """A naive-UTC moment as the local wall-clock time Slurm's clients parse (``-S``)."""
    return moment.replace(tzinfo=UTC).astimezone().strftime("%Y-%m-%dT%H:%M:%S")


def job_ids(ids: Iterable[str]) -> list[str]:
    """Distinct non-empty ids in a stable order (numeric ids sort as numbers)."""
    return sorted({i for i in ids if i}, key=lambda i: (len(i), i))


def sacct_since(submitted: Iterable[datetime]) -> datetime:
    """The ``sacct -S`` bound for jobs submitted at these (naive UTC) times: the oldest, less skew."""
    return min(submitted) - CLOCK_SKEW


def sacct_argv(ids: Iterable[str], since: datetime) -> list[str] | None:
    """The one ``sacct`` command line for ``ids`` active since ``since``; None without ids."""
    wanted = job_ids(ids)
    if not wanted:
        return None
    return ["sacct", "-X", "-n", "-P", "-o", SACCT_FIELDS, "-S", local_time(since), "-j", ",".join(wanted)]


def _text(data: bytes) -> str:
    # Slurm prints user-chosen names and reasons: undecodable bytes must not crash a refresh
    return data.decode(errors="replace")


def run(argv: list[str]) -> str:
    """Run a Slurm client command with epoch timestamps; return its stdout, raise on failure.

    Raises what ``subprocess.run(check=True, timeout=CALL_TIMEOUT_S)`` raises (OSError,
    CalledProcessError with text stderr, TimeoutExpired). A call :func:`prestart` already
    started with the same argv is collected instead of run again.
    """
    import subprocess

    started = _STARTED.pop(tuple(argv), None)
    if started is None:
        done = subprocess.run(argv, check=False, capture_output=True, timeout=CALL_TIMEOUT_S, env=env())
        code, out, err = done.returncode, done.stdout, done.stderr
    else:
        code, out, err = started.collect(CALL_TIMEOUT_S)
    if code:
        raise subprocess.CalledProcessError(code, argv, _text(out), _text(err))
    return _text(out)


class _Started:
    """A client process started by :func:`prestart`, its stdout and stderr on pipes."""

    def __init__(self, argv: list[str], pid: int, out: int, err: int) -> None:
        self.argv, self.pid, self.fds = argv, pid, {out: bytearray(), err: bytearray()}
        self.out, self.err = out, err
        self.returncode: int | None = None

    def collect(self, timeout: float) -> tuple[int, bytes, bytes]:
        """Read both pipes to the end and reap the process (kill it after ``timeout`` seconds)."""
        import selectors
        import subprocess

        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            for fd in self.fds:
                selector.register(fd, selectors.EVENT_READ)
            while selector.get_map():
                left = deadline - time.monotonic()
                if left <= 0:
                    self.kill()
                    raise subprocess.TimeoutExpired(self.argv, timeout, bytes(self.fds[self.out]), None)
                for key, _events in selector.select(left):
                    data = os.read(key.fd, 1 << 16)
                    if data:
                        self.fds[key.fd] += data
                    else:
                        selector.unregister(key.fd)
        return self._wait(), bytes(self.fds[self.out]), bytes(self.fds[self.err])

    def kill(self) -> None:
        """Kill the process if it still runs, and reap it (no zombie, no stray ``sacct``)."""
        if self.returncode is None:
            try:  # noqa: SIM105 - contextlib.suppress would import contextlib before sacct starts
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._wait()

    def _wait(self) -> int:
        if self.returncode is None:
            for fd in self.fds:  # closed once only: a closed fd number is soon someone else's
                os.close(fd)
            self.returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
        return self.returncode


# Calls started ahead of time by ``prestart`` and not collected yet, by argv.
_STARTED: dict[tuple[str, ...], _Started] = {}


def prestart(argv: list[str]) -> None:
    """Start ``argv`` now, for the first :func:`run` of the same argv to collect.

    If the CLI ends up asking something else (the jobs changed meanwhile), its own call runs
    as usual and this one is killed at exit. A command that cannot start is left to ``run``
    to report.
    """
    if tuple(argv) in _STARTED:
        return
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    actions = [(os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, err_w, 2)]
    actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in _inherited_fds()]  # as subprocess' close_fds
    try:
        pid = os.posix_spawnp(argv[0], argv, env(), file_actions=actions, setsigdef=_RESTORE_SIGNALS)
    except (OSError, ValueError):
        for fd in (out_r, err_r):
            os.close(fd)
        return
    finally:
        for fd in (out_w, err_w):
            os.close(fd)
    if not _STARTED:
        import atexit

        atexit.register(reap)
    _STARTED[tuple(argv)] = _Started(argv, pid, out_r, err_r)


def _inherited_fds() -> list[int]:
    """Descriptors above 2 a child would inherit: ones bfjobs' own caller passed it (Python opens
    none so); a Slurm client holding such a pipe open could delay its reader's end of file."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:  # no /proc: nothing to look at
        return []
    found = []
    for name in names:
        fd = int(name)
        try:
            if fd > 2 and os.get_inheritable(fd):
                found.append(fd)
        except OSError:  # the descriptor listdir itself used, closed by now
            pass
    return found


def reap() -> None:
    """Kill and collect prestarted calls nobody used."""
    while _STARTED:
        _argv, started = _STARTED.popitem()
        started.kill()
