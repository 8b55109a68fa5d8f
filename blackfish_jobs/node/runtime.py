"""The job process itself: stopping cleanly on signals, node-local scratch, the job's tag."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

from .. import constants
from ..errors import TaskError


class Interrupted(TaskError):
    """The job was asked to stop (scancel, time limit) while working."""


#: Clean-ups to run the moment a stop signal arrives (innermost last): see :func:`cleanup_on_stop`.
_on_stop: list[Callable[[], None]] = []
#: How many :func:`stop_deferred` blocks are open, and the stop signal they hold back (if any).
_defer_depth = 0
_deferred_signal: int | None = None
#: Set once a stop has begun: later signals (Slurm may send SIGTERM again) cannot cut the clean-ups.
_stopping = False


def _stop(signum: int) -> None:
    """Run the :func:`cleanup_on_stop` actions (innermost first), then raise :class:`Interrupted`."""
    global _stopping
    _stopping = True
    while _on_stop:
        action = _on_stop.pop()
        try:
            action()
        except Exception as exc:  # the next clean-up and the exception still matter more
            with contextlib.suppress(Exception):  # stderr itself may be gone
                print(f"bfjobs: warning: clean-up on stop failed: {exc}", file=sys.stderr)
    raise Interrupted(f"received {signal.Signals(signum).name}: job cancelled or out of time")


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGTERM/SIGINT into an exception so ``finally`` blocks clean up, after running the
    :func:`cleanup_on_stop` actions at once.

    submitit ignores SIGTERM in the job process (it only logs it); a job must instead stop and
    remove what it staged before Slurm's SIGKILL arrives (``KillWait`` seconds later). Only the
    first signal stops the job: a second one during the clean-ups is ignored.
    """
    global _stopping, _deferred_signal

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        global _deferred_signal
        if _stopping:
            return
        if _defer_depth:
            _deferred_signal = _deferred_signal or signum
            return
        _stop(signum)

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _stopping, _deferred_signal = False, None


@contextlib.contextmanager
def stop_deferred() -> Iterator[None]:
    """Hold a stop signal back until the block ends, for steps that must not be cut in half
    (taking a lock and noting that it is held; unlinking a lock file and closing it).

    A Python-level deferral, not ``pthread_sigmask``: the kernel may deliver the signal to any
    thread (huggingface_hub's workers), and Python runs the handler in the main thread anyway.
    """
    global _defer_depth, _deferred_signal
    _defer_depth += 1
    try:
        yield
    finally:
        _defer_depth -= 1
        if _defer_depth == 0 and _deferred_signal is not None and not _stopping:
            signum, _deferred_signal = _deferred_signal, None
            _stop(signum)


@contextlib.contextmanager
def cleanup_on_stop(action: Callable[[], None]) -> Iterator[None]:
    """Run ``action`` the moment a stop signal arrives inside this block (``action`` must be
    safe to run again: the block's own ``finally`` usually does the same later).

    Why not leave it to ``finally``: the exception a signal raises reaches ``finally`` only when
    the main thread gets there, and a thread pool on the way first waits for every task already
    running (a large shard's download: minutes, longer than Slurm's ``KillWait``, whose SIGKILL
    would then leave the staging folder and the lock file behind). The handler runs in the main
    thread between two bytecodes, so ``action`` never races the main thread's own work; work
    that other threads or processes do must be stopped by an earlier action (:func:`run_child`).
    """
    _on_stop.append(action)
    try:
        yield
    finally:
        if action in _on_stop:  # not run by a signal
            _on_stop.remove(action)


def run_child(argv: list[str], payload: bytes) -> tuple[int, bytes]:
    """Run ``argv`` with ``payload`` on its stdin; its exit status (negative: killed by that
    signal) and its stdout. A stop kills it (SIGKILL) and reaps it before the outer clean-ups run.

    For work whose threads cannot be stopped (huggingface_hub's file downloads): in the job's own
    process they go on writing after a stop, recreating what the clean-ups just removed, and
    Slurm's SIGKILL ``KillWait`` seconds later leaves that behind. A child that is dead before
    the clean-ups start writes nothing more. Its stderr is the job's.
    """
    with contextlib.ExitStack() as stack:
        with stop_deferred():  # started and its kill registered, or neither
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)

            def kill() -> None:
                # os-level, not proc.kill()/proc.wait(): this runs in a signal handler, possibly
                # while the main thread holds Popen's (non-reentrant) wait lock in communicate()
                if proc.returncode is not None:
                    return  # reaped already: its pid may be another process's by now
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(proc.pid, 0)

            stack.enter_context(cleanup_on_stop(kill))
        try:
            out, _ = proc.communicate(payload)
        except BaseException:  # not a stop (its clean-up ran already): KeyboardInterrupt, a broken pipe
            kill()
            raise
    return proc.returncode, out


@contextlib.contextmanager
def removed_whatever_happens(path: Path) -> Iterator[Path]:
    """``path`` (a job-private folder) is removed at the end of the block, or at once on a stop signal."""

    def remove() -> None:
        shutil.rmtree(path, ignore_errors=True)

    with cleanup_on_stop(remove):
        try:
            yield path
        finally:
            remove()


@contextlib.contextmanager
def node_scratch(prefix: str) -> Iterator[Path]:
    """A job-private directory on node-local disk, removed at the end whatever happens."""
    base = constants.node_scratch_base()
    try:
        path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    except OSError as exc:  # a site's BFJOBS_NODE_SCRATCH missing on this node: one line, not a traceback
        raise TaskError(
            f"node-local scratch {base} is not usable on {socket.gethostname()}: {exc.strerror or exc} "
            "(BFJOBS_NODE_SCRATCH, else TMPDIR, else /tmp must be a writable directory there)"
        ) from None
    with removed_whatever_happens(path):
        yield path


def job_tag() -> str:
    """``<slurm job id or pid>-<8 hex>``: unique, and recognisable in leftovers' names."""
    return f"{constants.slurm_job_id_env() or os.getpid()}-{uuid.uuid4().hex[:8]}"


#: What :func:`job_tag` looks like inside a leftover's name (only leftovers of killed jobs match it).
JOB_TAG_RE = r"[0-9_]+-[0-9a-f]{8}"
