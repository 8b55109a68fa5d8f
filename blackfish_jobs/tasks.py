"""What runs on the compute node. No Click, no database: plain functions submitit pickles.

Each task publishes atomically: it writes under a hidden temporary name inside the destination
directory (same filesystem) and renames into place only once the artefact is complete, so a
job that fails, times out or is cancelled leaves nothing half-published in a shared cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
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

from . import constants, hub, layout
from .errors import TaskError
from .layout import is_commit
from .specs import DownloadModel, PullImage

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
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=constants.node_scratch_base()))
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


def hash_file(path: Path, digest: Any) -> str:
    """``digest`` (a hashlib object, possibly already fed a header) over the file, in chunks."""
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return str(digest.hexdigest())


def sha256_file(path: Path) -> str:
    return hash_file(path, hashlib.sha256())


def _run(argv: list[str], env: dict[str, str]) -> None:
    """Run a command with output streamed to the job log; stop it if we are interrupted.

    Its stderr is copied line by line to the job's stderr, and the last line becomes part of
    the error (Apptainer's ``FATAL: ...`` is the reason a user needs to see).
    """
    print("+", " ".join(argv), flush=True)
    proc = subprocess.Popen(
        argv, env=env, stdin=subprocess.DEVNULL, stdout=sys.stdout, stderr=subprocess.PIPE, text=True, errors="replace"
    )
    last = ""
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            sys.stderr.write(line)
            if line.strip():
                last = line.strip()
        sys.stderr.flush()
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
        detail = f": {last[:300]}" if last else " (see the job log)"
        raise TaskError(f"{Path(argv[0]).name} {argv[1]} exited with code {code}{detail}")


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


@contextlib.contextmanager
def publish_lock(directory: Path, name: str, poll: float = 1.0) -> Iterator[None]:
    """Hold an exclusive POSIX ``fcntl`` lock on ``<directory>/.bfjobs-lock-<name>``.

    ``fcntl`` record locks work across nodes on NFS, GPFS and Lustre, where ``flock`` can be a
    no-op (huggingface_hub #4228). The lock file exists only while held: the holder unlinks it
    before unlocking, and a waiter that wins a lock on an already-unlinked file retries, so no
    stale lock file is ever left to block another user (huggingface_hub #2580).
    """
    path = directory / f".bfjobs-lock-{name}"
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except PermissionError:  # held right now by another user (their file): wait for its release
            time.sleep(poll)
            continue
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX)
            held = os.fstat(fd)
            try:
                current = os.stat(path)
            except FileNotFoundError:
                current = None
            if current is not None and (current.st_ino, current.st_dev) == (held.st_ino, held.st_dev):
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the previous holder removed this file after we opened it: start again
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


def remove_stale(directory: Path, pattern: re.Pattern[str]) -> list[str]:
    """Remove leftovers of killed jobs (only called with the artefact's publish lock held)."""
    removed = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if pattern.fullmatch(entry.name):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
            removed.append(entry.name)
    if removed:
        print(f"bfjobs: removed leftovers of interrupted jobs: {', '.join(removed)}", flush=True)
    return removed


def _job_tag() -> str:
    """``<slurm job id or pid>-<8 hex>``: unique, and recognisable in leftovers' names."""
    return f"{constants.slurm_job_id_env() or os.getpid()}-{uuid.uuid4().hex[:8]}"


_JOB_TAG_RE = r"[0-9_]+-[0-9a-f]{8}"


def pull_image(req: PullImage) -> dict[str, Any]:
    """``apptainer pull`` into ``req.dest_dir`` under a temporary name, then publish as 755.

    Jobs pulling the same file serialise on a publish lock: the second finds the image in place
    and reuses it instead of pulling again.
    """
    started = time.monotonic()
    target = req.target
    node = socket.gethostname()
    if target.exists() and not req.force:
        return _image_result(req, target, started, node, already_present=True)
    ensure_public_dir(req.dest_dir)
    token = _job_tag()
    partial = req.dest_dir / layout.partial_name(req.filename, token)
    stale = re.compile(re.escape(layout.PARTIAL_PREFIX) + _JOB_TAG_RE + "-" + re.escape(req.filename))
    with stop_on_signals(), publish_lock(req.dest_dir, req.filename):
        if target.exists() and not req.force:  # another job published it while we waited
            return _image_result(req, target, started, node, already_present=True)
        remove_stale(req.dest_dir, stale)
        try:
            with node_scratch(f"bfjobs-pull-{token}-") as scratch:
                _pull_into(req, partial, scratch)
            published = publish_file(partial, target, req.force)
        finally:
            partial.unlink(missing_ok=True)  # already gone after a successful publish
    return _image_result(req, target, started, node, already_present=not published)


def _pull_into(req: PullImage, partial: Path, scratch: Path) -> None:
    """Run ``apptainer pull`` to ``partial`` with private cache and temp dirs in ``scratch``."""
    env = dict(os.environ)
    for var in ("APPTAINER", "SINGULARITY"):
        env[f"{var}_CACHEDIR"] = str(scratch / "cache")
        env[f"{var}_TMPDIR"] = str(scratch / "tmp")
    (scratch / "cache").mkdir()
    (scratch / "tmp").mkdir()
    _run([req.apptainer, "pull", str(partial), req.uri], env)
    if not partial.is_file() or partial.stat().st_size == 0:
        raise TaskError(f"apptainer reported success but wrote no image at {partial}")


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


# --------------------------------------------------------------------------- models


def chmod_public(root: Path) -> None:
    """``chmod -R 755`` on one repo folder (Blackfish's admin guide); symlinks left alone.

    huggingface_hub writes some files 0600 whatever the umask (its issue #1141); other users of
    a shared cache must read them.
    """
    for dirpath, _dirnames, filenames in os.walk(root):
        os.chmod(dirpath, PUBLIC_DIR_MODE)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, PUBLIC_FILE_MODE)


def write_ref(repo: Path, ref: str, commit: str) -> None:
    """Record ``refs/<ref>`` atomically (write a temporary file, then rename)."""
    path = repo / "refs" / ref
    ensure_public_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(commit)
    os.chmod(tmp, PUBLIC_FILE_MODE)
    os.replace(tmp, path)


def publish_snapshot(staged: Path, repo: Path, commit: str, *, force: bool) -> bool:
    """Move a complete staged repo folder's blobs, then its snapshot, into ``repo``.

    Blobs are content-addressed (same name, same bytes), so existing ones are kept. The snapshot
    folder appears in one ``rename`` once every blob it links to is in place. Returns False when
    another job published the same commit first (its snapshot is then used as it is).
    """
    for sub in ("blobs", "snapshots", "refs"):
        ensure_public_dir(repo / sub)
    chmod_public(staged)
    for kind in ("blobs", "trees"):
        source = staged / kind
        if not source.is_dir():
            continue
        ensure_public_dir(repo / kind)
        for entry in source.iterdir():
            dest = repo / kind / entry.name
            if force or not dest.exists():
                os.replace(entry, dest)
    final = repo / "snapshots" / commit
    new = staged / "snapshots" / commit
    if final.exists():
        if not force:
            return False
        old = repo / "snapshots" / f".bfjobs-old-{uuid.uuid4().hex[:8]}"
        os.rename(final, old)
        os.rename(new, final)
        shutil.rmtree(old, ignore_errors=True)
        return True
    try:
        os.rename(new, final)
    except OSError:  # ENOTEMPTY/EEXIST: a concurrent job published this commit a moment ago
        if final.is_dir():
            return False
        raise
    return True


def _snapshot_stats(snapshot: Path) -> tuple[int, int]:
    files = 0
    size = 0
    for dirpath, _dirs, filenames in os.walk(snapshot):
        for name in filenames:
            files += 1
            size += os.stat(os.path.join(dirpath, name)).st_size  # follows the blob symlink
    return files, size


@contextlib.contextmanager
def _hub_errors(req: DownloadModel) -> Iterator[None]:
    """Turn huggingface_hub's and the network's errors into one clear line for the job's reason,
    naming the endpoint the job used (a mirror that fails is told apart from the Hub)."""
    from huggingface_hub import errors

    endpoint = hub.endpoint_url(req.endpoint)
    what = f"{req.repo_id}@{req.revision or 'main'}"
    try:
        yield
    except errors.HfHubHTTPError as exc:
        raise TaskError(hub.describe_refusal(exc, req.repo_id, req.commit or req.revision, endpoint)) from None
    except OSError as exc:
        raise TaskError(f"download of {what} from {endpoint} failed: {type(exc).__name__}: {exc}") from None
    except Exception as exc:
        if hub.is_network_error(exc):
            raise TaskError(f"download of {what} from {endpoint} interrupted: {type(exc).__name__}: {exc}") from None
        raise


def _download_locked(req: DownloadModel, commit: str) -> bool:
    """Download ``commit`` through a private staging folder and publish it, under its lock.

    A second job for the same commit waits for the lock, then finds the snapshot and reuses it.
    Staging folders of killed jobs for this commit are removed first (safe: we hold the lock).
    """
    from huggingface_hub import snapshot_download

    repo = req.target
    key = f"{repo.name}@{commit}"
    stale = re.compile(re.escape(f".bfjobs-staging-{key}-") + _JOB_TAG_RE)
    with publish_lock(req.models_dir, key):
        if not req.force and (repo / "snapshots" / commit).is_dir():
            return False
        remove_stale(req.models_dir, stale)
        staging = req.models_dir / f".bfjobs-staging-{key}-{_job_tag()}"
        try:
            snapshot_download(
                req.repo_id,
                revision=commit,
                cache_dir=staging,
                endpoint=req.endpoint,
                allow_patterns=list(req.allow_patterns) if req.allow_patterns else None,
                ignore_patterns=list(req.ignore_patterns) if req.ignore_patterns else None,
                max_workers=req.max_workers,
            )
            return publish_snapshot(staging / repo.name, repo, commit, force=req.force)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def download_model(req: DownloadModel) -> dict[str, Any]:
    """Download a revision-pinned snapshot through a private staging folder, then publish it.

    The staging folder sits next to the destination (same filesystem, so publishing is a rename)
    and is removed whatever happens: no ``*.incomplete`` file or half snapshot is ever visible,
    and no huggingface_hub lock file is left in a shared cache.
    """
    started = time.monotonic()
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_UPDATE_CHECK", "1")
    from huggingface_hub import HfApi

    # The token (if any) is read here, on the node, by huggingface_hub itself from HF_TOKEN or
    # the user's token file: it never passes through bfjobs' scripts, pickles or database.
    api = HfApi(endpoint=req.endpoint)
    with stop_on_signals(), _hub_errors(req):
        info = api.model_info(req.repo_id, revision=req.commit or req.revision)  # the commit pinned at submit
        commit = info.sha
        if not commit or not is_commit(commit):
            raise TaskError(f"the hub returned no commit for {req.repo_id}@{req.revision or 'main'}")
        pipeline = info.pipeline_tag or "unknown"
        repo = req.target
        ref = None if req.revision is not None and is_commit(req.revision) else (req.revision or "main")
        snapshot = repo / "snapshots" / commit
        published = False
        if req.force or not snapshot.is_dir():
            ensure_public_dir(req.models_dir)
            published = _download_locked(req, commit)
        if ref is not None:
            write_ref(repo, ref, commit)
        chmod_public(repo)
    files, size = _snapshot_stats(snapshot)
    return {
        "repo_id": req.repo_id,
        "revision": req.revision,
        "commit": commit,
        "model_dir": str(repo),
        "snapshot": str(snapshot),
        "files": files,
        "bytes": size,
        "pipeline_tag": pipeline,
        "duration_s": round(time.monotonic() - started, 3),
        "node": socket.gethostname(),
        "already_present": not published,
    }
