"""The job process itself: stopping cleanly on signals, node-local scratch, the job's tag."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from .. import constants
from ..errors import TaskError


class Interrupted(TaskError):
    """The job was asked to stop (scancel, time limit) while working."""


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGTERM/SIGINT into an exception so ``finally`` blocks clean up.

    submitit ignores SIGTERM in the job process (it only logs it); a pull must instead stop and
    remove its partial file before Slurm's SIGKILL arrives (``KillWait`` seconds later).
    """

    def _raise(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(f"received {signal.Signals(signum).name}: job cancelled or out of time")

    previous = {sig: signal.signal(sig, _raise) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def job_tag() -> str:
    """``<slurm job id or pid>-<8 hex>``: unique, and recognisable in leftovers' names."""
    return f"{constants.slurm_job_id_env() or os.getpid()}-{uuid.uuid4().hex[:8]}"


#: What :func:`job_tag` looks like inside a leftover's name (only leftovers of killed jobs match it).
JOB_TAG_RE = r"[0-9_]+-[0-9a-f]{8}"
