"""``download-model`` on the node: ``snapshot_download`` into a private staging folder, then publish.

huggingface_hub is imported only inside the functions that use it: it is heavy.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import socket
import sys
import time
from pathlib import Path
from typing import Any

from .. import layout
from ..errors import TaskError
from ..layout import is_commit
from . import progress, records
from .fetch import fetch_snapshot
from .hub_errors import translated
from .publish import (
    ensure_public_dir,
    group_mode,
    publish_lock,
    publish_snapshot,
    remove_stale,
    repo_lock_name,
    write_ref,
)
from .requests import DownloadModel
from .runtime import JOB_TAG_RE, job_tag, removed_whatever_happens, stop_deferred, stop_on_signals


def _snapshot_stats(snapshot: Path) -> tuple[int, int]:
    files = 0
    size = 0
    for dirpath, _dirs, filenames in os.walk(snapshot):
        for name in filenames:
            files += 1
            size += os.stat(os.path.join(dirpath, name)).st_size  # follows the blob symlink
    return files, size


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
    repo = req.target
    key = f"{repo.name}@{commit}"
    stale = re.compile(re.escape(f".bfjobs-staging-{key}-") + JOB_TAG_RE)
    with publish_lock(req.models_dir, key, release_on_stop=True):  # at once on a stop, not at the end
        if not req.force and layout.snapshot_covers(repo, commit, req.allow_patterns, req.ignore_patterns):
            return False
        remove_stale(req.models_dir, stale)
        staging = req.models_dir / f".bfjobs-staging-{key}-{job_tag()}"
        allow, ignore = _fetch_patterns(req, repo, commit)
        if meter is not None:
            meter.staged = staging / repo.name
        with removed_whatever_happens(staging):  # after fetch_snapshot's child is dead
            if not req.force:
                _link_known_blobs(repo, staging / repo.name)
            fetch_snapshot(req, commit, staging, allow, ignore)
            listing = layout.read_listing(staging / repo.name, commit)
            if listing and not layout.select_files(listing, req.allow_patterns, req.ignore_patterns):
                raise TaskError(f"no file of {req.repo_id} at commit {commit} matches --include/--exclude")
            with stop_deferred():  # renames, quickly done: a stop waits for them, so a snapshot is never half-merged
                return publish_snapshot(staging / repo.name, repo, commit, force=req.force)


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
    with group_mode(req.group), progress.reporting(meter):
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
    with stop_on_signals(), translated(req):
        info = api.model_info(req.repo_id, revision=req.commit or req.revision or "main")  # pinned at submit
        commit = info.sha
        if not commit or not is_commit(commit):
            raise TaskError(f"the hub returned no commit for {req.repo_id}@{req.revision or 'main'}")
        pipeline = info.pipeline_tag or "unknown"
        meter.commit = commit
        repo = req.target
        ref = None if req.revision is not None and is_commit(req.revision) else (req.revision or "main")
        snapshot = repo / "snapshots" / commit
        # Shared with every download into this repo, exclusive for `bfjobs cache` removing blobs
        # (shared across commits): a blob this job links to is never removed under it.
        ensure_public_dir(req.models_dir)
        with publish_lock(req.models_dir, repo_lock_name(repo), release_on_stop=True, shared=True):
            published = False
            if req.force or not layout.snapshot_covers(repo, commit, req.allow_patterns, req.ignore_patterns):
                published = _download_locked(req, commit, meter)
            if ref is not None:
                write_ref(repo, ref, commit)  # only what this job made is chmodded: another admin's files stay theirs
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
            records.write(path, records.snapshot_record(endpoint, result, files, job_tag()))
    except OSError as exc:  # the snapshot is published and complete: say so, do not fail the job
        print(f"bfjobs: warning: cannot write the record {path}: {exc.strerror or exc}", file=sys.stderr)
