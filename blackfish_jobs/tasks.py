"""What runs on the compute node. No Click, no database: plain functions submitit pickles.

Each task publishes atomically: it writes under a hidden temporary name inside the destination
directory (same filesystem) and renames into place only once the artefact is complete, so a
job that fails, times out or is cancelled leaves nothing half-published in a shared cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
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

from . import constants, hub, layout, progress, records
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
    meter = _PullMeter(req.target)
    with progress.reporting(meter):
        result = _pull_image(req, meter)
        meter.done = True  # the final record: the image in place, its size the total
        return result


class _PullMeter:
    """A pull's progress: the size of its partial output so far (the total is not known before
    the image is built), then, once the job succeeded, of the image in place."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self.partial: Path | None = None
        self.done = False

    def __call__(self) -> progress.Sample:
        if self.done:
            size = self.target.stat().st_size
            return progress.Sample(size, size, 1, 1)
        try:
            size = self.partial.stat().st_size if self.partial is not None else 0
        except FileNotFoundError:
            size = 0
        return progress.Sample(size, None, 0, 1)


def _pull_image(req: PullImage, meter: _PullMeter) -> dict[str, Any]:
    """:func:`pull_image`'s work; ``meter`` learns the partial file's name once it is chosen."""
    started = time.monotonic()
    target = req.target
    node = socket.gethostname()
    if target.exists() and not req.force:
        return _present_image(req, target, started, node)
    ensure_public_dir(req.dest_dir)
    token = _job_tag()
    partial = req.dest_dir / layout.partial_name(req.filename, token)
    meter.partial = partial
    stale = re.compile(re.escape(layout.PARTIAL_PREFIX) + _JOB_TAG_RE + "-" + re.escape(req.filename))
    with stop_on_signals(), publish_lock(req.dest_dir, req.filename):
        if target.exists() and not req.force:  # another job published it while we waited
            return _present_image(req, target, started, node)
        remove_stale(req.dest_dir, stale)
        try:
            with node_scratch(f"bfjobs-pull-{token}-") as scratch:
                _pull_into(req, partial, scratch)
            sha256 = _publish_image(req, partial, token)
        finally:
            partial.unlink(missing_ok=True)  # already gone after a successful publish
    if sha256 is None:  # a file appeared without the lock (not a bfjobs job): judge it as present
        return _present_image(req, target, started, node)
    return _image_result(req, target, started, node, already_present=False, sha256=sha256)


def _present_image(req: PullImage, target: Path, started: float, node: str) -> dict[str, Any]:
    """The result for an image already in place, only if its record says it is ``req.uri``."""
    problem = records.image_conflict(target, req.uri)
    if problem is not None:
        raise TaskError(problem)
    return _image_result(req, target, started, node, already_present=True)


def _publish_image(req: PullImage, partial: Path, token: str) -> str | None:
    """Publish ``partial`` with its record (under the publish lock); its sha256, or None if not published.

    The record goes in first, so a reader who sees the file also finds its record; if the file is
    not published after all, the record is removed (a file without a record has an unknown source,
    which is never mistaken for the request).
    """
    sha256 = sha256_file(partial)
    record = records.image_record_path(req.target)
    previous = records.read(record, "image")  # the file in place keeps it if we do not publish
    try:
        ensure_public_dir(record.parent)
        records.write(record, records.image_record(req.uri, sha256, partial.stat().st_size, token))
    except OSError as exc:  # nothing published: an image without its record would be of unknown source
        raise TaskError(f"cannot write the record of {req.target} at {record}: {exc.strerror or exc}") from None
    published = False
    try:
        published = publish_file(partial, req.target, req.force)
    finally:
        if not published:
            if previous is not None:
                with contextlib.suppress(OSError):
                    records.write(record, previous)
            else:
                record.unlink(missing_ok=True)
    return sha256 if published else None


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


def _image_result(
    req: PullImage, target: Path, started: float, node: str, *, already_present: bool, sha256: str | None = None
) -> dict:
    st = target.stat()
    return {
        "path": str(target),
        "uri": req.uri,
        "size": st.st_size,
        "sha256": sha256 or sha256_file(target),
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
    """Move a complete staged repo folder's blobs, then its snapshot's files, into ``repo``.

    Blobs are content-addressed (same name, same bytes), so existing ones are kept (``force``
    replaces them, one ``rename`` each). A new snapshot folder appears in one ``rename`` once
    every blob it links to is in place; into an existing one each file's link is renamed in on
    its own (filters are additive, as with ``hf download``): a reader sees each file whole or
    not at all, never a dangling link, and files the staged download did not select are never
    removed. Returns whether anything was published (False when another job had done it all).
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
            if entry.is_symlink():
                continue  # a blob the repo already had, linked in by _link_known_blobs
            if force or not dest.exists():
                os.replace(entry, dest)
    final = repo / "snapshots" / commit
    new = staged / "snapshots" / commit
    if not new.is_dir():
        return False  # the selection matched no file: nothing staged
    if not final.exists():
        try:
            os.rename(new, final)
            return True
        except OSError:  # ENOTEMPTY/EEXIST: a concurrent job published this commit a moment ago
            if not final.is_dir():
                raise
    return _merge_snapshot(new, final, force=force)


def _merge_snapshot(new: Path, final: Path, *, force: bool) -> bool:
    """Rename each staged file (a relative link to ``../../blobs/…``) into an existing snapshot.

    The staged tree has the same depth, so each link's text resolves from its new place too.
    Files already there (resolving) are kept unless ``force``; a dangling one is replaced.
    """
    published = False
    for dirpath, _dirs, names in os.walk(new):
        rel = Path(dirpath).relative_to(new)
        if names:
            ensure_public_dir(final / rel)
        for name in names:
            dest = final / rel / name
            if not force and dest.exists():
                continue
            os.replace(Path(dirpath) / name, dest)
            published = True
    return published


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
        # snapshot_download hides some hub answers (a bare 404 from a mirror lacking an endpoint, a
        # 5xx) behind "not in the local cache" (LocalEntryNotFoundError): name the answer itself.
        answer = exc.__cause__ if isinstance(exc, errors.LocalEntryNotFoundError) else None
        if isinstance(answer, errors.HfHubHTTPError):
            raise TaskError(hub.describe_refusal(answer, req.repo_id, req.commit or req.revision, endpoint)) from None
        raise TaskError(hub.scrub(f"download of {what} from {endpoint} failed: {type(exc).__name__}: {exc}")) from None
    except Exception as exc:
        if hub.is_network_error(exc):
            raise TaskError(
                hub.scrub(f"download of {what} from {endpoint} interrupted: {type(exc).__name__}: {exc}")
            ) from None
        raise


class _DownloadMeter:
    """A download's progress, measured on disk, never guessed.

    The total is the size of the files the request selects, from the commit's tree listing
    (huggingface_hub writes it into the staging folder before fetching any file; an earlier job
    may have left it in the repo). A selected file counts as done once it is in the snapshot, in
    the staging snapshot, or its blob is there (already present, shared with another commit, or
    just fetched): files the job does not fetch count as done from the start, and with ``--force``
    only what this job fetched counts. Bytes in flight are the staging area's ``*.incomplete``
    files. Done files stay done, so a tick costs one ``stat`` per file still missing.
    """

    def __init__(self, req: DownloadModel) -> None:
        self.req = req
        self.commit: str | None = None
        self.staged: Path | None = None  # the staging folder's repo folder, once it exists
        self._selected: dict[str, tuple[int, str | None]] | None = None  # name: (size, blob)
        self._done: set[str] = set()

    def __call__(self) -> progress.Sample:
        selected = self._selection()
        in_flight = self._in_flight()
        if selected is None:
            return progress.Sample(in_flight, None, 0, None)
        for name, (_size, blob) in selected.items():
            if name not in self._done and self._present(name, blob):
                self._done.add(name)
        done = sum(selected[name][0] for name in self._done)
        total = sum(size for size, _blob in selected.values())
        return progress.Sample(min(total, done + in_flight), total, len(self._done), len(selected))

    def _places(self) -> list[Path]:
        places = [] if self.req.force else [self.req.target]
        return places if self.staged is None else [*places, self.staged]

    def _selection(self) -> dict[str, tuple[int, str | None]] | None:
        if self._selected is None and self.commit is not None:
            for repo in (self.req.target, self.staged):
                listing = layout.read_listing(repo, self.commit) if repo is not None else None
                if listing is not None:
                    names = layout.select_files(listing, self.req.allow_patterns, self.req.ignore_patterns)
                    self._selected = {name: (layout.listed_size(listing[name]), _blob(listing[name])) for name in names}
                    break
        return self._selected

    def _present(self, name: str, blob: str | None) -> bool:
        for repo in self._places():
            if os.path.isfile(repo / "snapshots" / str(self.commit) / name):
                return True
            if blob and os.path.exists(repo / "blobs" / blob):
                return True
        return False

    def _in_flight(self) -> int:
        if self.staged is None:
            return 0
        total = 0
        try:
            with os.scandir(self.staged / "blobs") as entries:
                for entry in entries:
                    if entry.name.endswith(".incomplete"):
                        with contextlib.suppress(FileNotFoundError):  # renamed into place meanwhile
                            total += entry.stat(follow_symlinks=False).st_size
        except (FileNotFoundError, NotADirectoryError):
            return 0
        return total


def _blob(meta: dict[str, Any]) -> str | None:
    """The name huggingface_hub gives a listed file's blob: its LFS sha256, else its git blob id."""
    name = meta.get("lfs_sha256") or meta.get("blob_id")
    return name if isinstance(name, str) and name else None


def _link_known_blobs(repo: Path, staged: Path) -> None:
    """Link each blob ``repo`` already holds into the staging folder, so huggingface_hub finds it
    there and fetches only blobs the cache lacks (a new commit sharing weights with an old one).

    The links are absolute (the staging folder is removed whatever happens) and never published:
    :func:`publish_snapshot` skips links among the staged blobs.
    """
    try:
        with os.scandir(repo / "blobs") as entries:
            blobs = [e.name for e in entries if not e.name.endswith(".incomplete") and e.is_file()]
    except (FileNotFoundError, NotADirectoryError):
        return
    if not blobs:
        return
    (staged / "blobs").mkdir(parents=True, exist_ok=True)
    for name in blobs:
        os.symlink(repo / "blobs" / name, staged / "blobs" / name)


def _download_locked(req: DownloadModel, commit: str, meter: _DownloadMeter | None = None) -> bool:
    """Download ``commit`` through a private staging folder and publish it, under its lock.

    A second job for the same commit waits for the lock, then finds the files in the snapshot
    and reuses them. Staging folders of killed jobs for this commit are removed first (safe: we
    hold the lock).
    """
    from huggingface_hub import snapshot_download

    repo = req.target
    key = f"{repo.name}@{commit}"
    stale = re.compile(re.escape(f".bfjobs-staging-{key}-") + _JOB_TAG_RE)
    with publish_lock(req.models_dir, key):
        if not req.force and layout.snapshot_covers(repo, commit, req.allow_patterns, req.ignore_patterns):
            return False
        remove_stale(req.models_dir, stale)
        staging = req.models_dir / f".bfjobs-staging-{key}-{_job_tag()}"
        allow, ignore = _fetch_patterns(req, repo, commit)
        if meter is not None:
            meter.staged = staging / repo.name
        try:
            if not req.force:
                _link_known_blobs(repo, staging / repo.name)
            snapshot_download(
                req.repo_id,
                revision=commit,
                cache_dir=staging,
                endpoint=req.endpoint,
                allow_patterns=allow,
                ignore_patterns=ignore,
                max_workers=req.max_workers,
            )
            listing = layout.read_listing(staging / repo.name, commit)
            if listing and not layout.select_files(listing, req.allow_patterns, req.ignore_patterns):
                raise TaskError(f"no file of {req.repo_id} at commit {commit} matches --include/--exclude")
            return publish_snapshot(staging / repo.name, repo, commit, force=req.force)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _fetch_patterns(req: DownloadModel, repo: Path, commit: str) -> tuple[list[str] | None, list[str] | None]:
    """The patterns ``snapshot_download`` gets: the request's, or (without ``--force``, when the
    snapshot and the commit's listing are there) exactly the selected files still absent, so
    files already published are not fetched again (each name escaped: matched literally)."""
    allow = list(req.allow_patterns) if req.allow_patterns else None
    ignore = list(req.ignore_patterns) if req.ignore_patterns else None
    snapshot = repo / "snapshots" / commit
    listing = layout.read_listing(repo, commit)
    if req.force or listing is None or not snapshot.is_dir():
        return allow, ignore
    absent = layout.absent_files(snapshot, layout.select_files(listing, allow, ignore))
    return [glob.escape(name) for name in absent], None


def _completeness(repo: Path, commit: str) -> dict[str, Any]:
    """What the complete snapshot holds per the commit's listing, and whether this one lacks any of it.

    ``listed_files``/``listed_bytes`` are None (and ``partial`` False) without a listing.
    """
    listing = layout.read_listing(repo, commit)
    if listing is None:
        return {"listed_files": None, "listed_bytes": None, "partial": False}
    absent = layout.absent_files(repo / "snapshots" / commit, listing)
    return {
        "listed_files": len(listing),
        "listed_bytes": sum(layout.listed_size(meta) for meta in listing.values()),
        "partial": bool(absent),
    }


def download_model(req: DownloadModel) -> dict[str, Any]:
    """Download a revision-pinned snapshot through a private staging folder, then publish it.

    The staging folder sits next to the destination (same filesystem, so publishing is a rename)
    and is removed whatever happens: no ``*.incomplete`` file or half snapshot is ever visible,
    and no huggingface_hub lock file is left in a shared cache. Filters are additive: files the
    request selects that the snapshot lacks are added to it; nothing is ever removed from it.

    Result: ``files``/``bytes`` count what the snapshot holds on disk after the job;
    ``listed_files``/``listed_bytes`` what it holds when complete (the commit's listing, None
    without one); ``partial`` whether listed files are absent; ``already_present`` that the job
    fetched nothing (every selected file was there already).
    """
    meter = _DownloadMeter(req)
    with progress.reporting(meter):
        return _download_model(req, meter)


def _download_model(req: DownloadModel, meter: _DownloadMeter) -> dict[str, Any]:
    """:func:`download_model`'s work; ``meter`` learns the commit and the staging folder."""
    started = time.monotonic()
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_UPDATE_CHECK", "1")
    from huggingface_hub import HfApi

    # The token (if any) is read here, on the node, by huggingface_hub itself from HF_TOKEN or
    # the user's token file: it never passes through bfjobs' scripts, pickles or database.
    api = HfApi(endpoint=req.endpoint)
    with stop_on_signals(), _hub_errors(req):
        info = api.model_info(req.repo_id, revision=req.commit or req.revision or "main")  # pinned at submit
        commit = info.sha
        if not commit or not is_commit(commit):
            raise TaskError(f"the hub returned no commit for {req.repo_id}@{req.revision or 'main'}")
        pipeline = info.pipeline_tag or "unknown"
        meter.commit = commit
        repo = req.target
        ref = None if req.revision is not None and is_commit(req.revision) else (req.revision or "main")
        snapshot = repo / "snapshots" / commit
        published = False
        if req.force or not layout.snapshot_covers(repo, commit, req.allow_patterns, req.ignore_patterns):
            ensure_public_dir(req.models_dir)
            published = _download_locked(req, commit, meter)
        if ref is not None:
            write_ref(repo, ref, commit)
        chmod_public(repo)
    files, size = _snapshot_stats(snapshot)
    result = {
        "repo_id": req.repo_id,
        "revision": req.revision,
        "commit": commit,
        "model_dir": str(repo),
        "snapshot": str(snapshot),
        "files": files,
        "bytes": size,
        **_completeness(repo, commit),
        "pipeline_tag": pipeline,
        "duration_s": round(time.monotonic() - started, 3),
        "node": socket.gethostname(),
        "already_present": not published,
    }
    _record_snapshot(req, result)
    return result


def _record_snapshot(req: DownloadModel, result: dict[str, Any]) -> None:
    """Record the snapshot's source and files (as they are now) beside it, under its publish lock.

    Written when there is no record yet, when the snapshot's files differ from the record's (this
    job added some), or with ``--force``; otherwise the publisher's record (who, when) stays.
    """
    from huggingface_hub import constants as hub_constants

    snapshot = Path(result["snapshot"])
    path = records.snapshot_record_path(snapshot)
    try:
        with publish_lock(req.models_dir, f"{Path(result['model_dir']).name}@{result['commit']}"):
            files = records.snapshot_files(snapshot)
            old = records.read(path, "snapshot")
            if old is not None and old.get("files") == files and not req.force:
                return
            if old is None and result["already_present"]:
                return  # not published by this job: its source is not ours to vouch for
            endpoint = req.endpoint or hub_constants.ENDPOINT
            ensure_public_dir(path.parent)
            records.write(path, records.snapshot_record(endpoint, result, files, _job_tag()))
    except OSError as exc:  # the snapshot is published and complete: say so, do not fail the job
        print(f"bfjobs: warning: cannot write the record {path}: {exc.strerror or exc}", file=sys.stderr)
