"""What runs on the compute node. No Click, no database: plain functions submitit pickles.

Each task publishes atomically: it writes under a hidden temporary name inside the destination
directory (same filesystem) and renames into place only once the artefact is complete, so a
job that fails, times out or is cancelled leaves nothing half-published in a shared cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from . import layout
from .errors import TaskError
from .specs import PullImage

PUBLIC_DIR_MODE = 0o755
PUBLIC_FILE_MODE = 0o755  # Blackfish's admin guide: chmod -R 755 on shared artefacts
_CHUNK = 8 * 1024 * 1024


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
    base = Path(os.environ.get("BFJOBS_NODE_SCRATCH") or os.environ.get("TMPDIR") or "/tmp")
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def ensure_public_dir(path: Path) -> None:
    """``mkdir -p`` whose new directories are 755 whatever the umask (others must read them)."""
    missing = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir()
            os.chmod(directory, PUBLIC_DIR_MODE)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _run(argv: list[str], env: dict[str, str]) -> None:
    """Run a command with output streamed to the job log; stop it if we are interrupted."""
    print("+", " ".join(argv), flush=True)
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=sys.stdout, stderr=sys.stderr)
    try:
        code = proc.wait()
    except BaseException:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
    if code != 0:
        raise TaskError(f"{Path(argv[0]).name} {argv[1]} exited with code {code} (see the job log)")


def publish_file(partial: Path, target: Path, force: bool) -> bool:
    """Move a complete file into place atomically. Returns False if another job won the race.

    Without ``force`` a hard link gives a no-clobber publish (the first complete file wins and a
    reader never sees a replaced file); with ``force`` ``rename`` replaces the old file at once.
    """
    os.chmod(partial, PUBLIC_FILE_MODE)
    if force:
        os.replace(partial, target)
        return True
    try:
        os.link(partial, target)
    except FileExistsError:
        return False
    except OSError:  # filesystems without hard links: rename, re-checking just before
        if target.exists():
            return False
        os.replace(partial, target)
        return True
    partial.unlink()
    return True


def pull_image(req: PullImage) -> dict[str, Any]:
    """``apptainer pull`` into ``req.dest_dir`` under a temporary name, then publish as 755."""
    started = time.monotonic()
    target = req.target
    node = socket.gethostname()
    if target.exists() and not req.force:
        return _image_result(req, target, started, node, already_present=True)
    ensure_public_dir(req.dest_dir)
    token = f"{os.environ.get('SLURM_JOB_ID', os.getpid())}-{uuid.uuid4().hex[:8]}"
    partial = req.dest_dir / layout.partial_name(req.filename, token)
    with stop_on_signals(), node_scratch(f"bfjobs-pull-{token}-") as scratch:
        env = dict(os.environ)
        for var in ("APPTAINER", "SINGULARITY"):
            env[f"{var}_CACHEDIR"] = str(scratch / "cache")
            env[f"{var}_TMPDIR"] = str(scratch / "tmp")
        (scratch / "cache").mkdir()
        (scratch / "tmp").mkdir()
        try:
            _run([req.apptainer, "pull", str(partial), req.uri], env)
            if not partial.is_file() or partial.stat().st_size == 0:
                raise TaskError(f"apptainer reported success but wrote no image at {partial}")
            published = publish_file(partial, target, req.force)
        finally:
            partial.unlink(missing_ok=True)
    return _image_result(req, target, started, node, already_present=not published)


def _image_result(req: PullImage, target: Path, started: float, node: str, *, already_present: bool) -> dict:
    st = target.stat()
    return {
        "path": str(target),
        "uri": req.uri,
        "size": st.st_size,
        "sha256": sha256_file(target),
        "mode": oct(st.st_mode & 0o777),
        "duration_s": round(time.monotonic() - started, 3),
        "node": node,
        "already_present": already_present,
    }
