"""Detect corrupt or truncated artefacts in the caches.

Images are checked against the size and sha256 their pull job recorded. Model snapshots are
checked against the tree listing huggingface_hub stores beside them (``trees/<commit>.json``):
every listed file must resolve, have the listed size, and hash to the listed git blob id (or
LFS sha256). Reading every byte is the point here, so this is an explicit command, never part of
an interactive path.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from . import layout
from .layout import is_commit, read_listing
from .node import records
from .node.hashing import hash_file, sha256_file

#: Verdicts. OK: every byte matches a record. CORRUPT: something does not match. MISSING: the
#: artefact is not there. PARTIAL: some files of the snapshot are absent (a filtered download).
#: UNVERIFIED: there is nothing to compare against (no record, no tree listing).
OK = "OK"
CORRUPT = "CORRUPT"
MISSING = "MISSING"
PARTIAL = "PARTIAL"
UNVERIFIED = "UNVERIFIED"
STATUSES = (OK, CORRUPT, MISSING, PARTIAL, UNVERIFIED)


@dataclass(frozen=True)
class Finding:
    """The verdict on one artefact."""

    path: str
    kind: str  # "image" or "snapshot"
    status: str  # one of STATUSES
    problem: str | None = None
    job_id: str | None = None
    checked_files: int = 0

    @property
    def ok(self) -> bool:
        return self.status == OK

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "ok": self.ok}


def verify_image(path: Path, sha256: str | None, size: int | None, job_id: str | None = None) -> Finding:
    """A SIF file against what its pull recorded; without a recorded sha256 it is UNVERIFIED."""
    if not path.is_file():
        return Finding(str(path), "image", MISSING, "missing", job_id)
    if sha256 is None:
        return Finding(str(path), "image", UNVERIFIED, "no bfjobs record of its pull", job_id)
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        return Finding(str(path), "image", CORRUPT, f"size {actual_size} != recorded {size} (truncated?)", job_id, 1)
    digest = sha256_file(path)
    if digest != sha256:
        return Finding(str(path), "image", CORRUPT, f"sha256 {digest[:12]}… != recorded {sha256[:12]}…", job_id, 1)
    return Finding(str(path), "image", OK, None, job_id, 1)


def _git_blob_sha1(path: Path, size: int) -> str:
    return hash_file(path, hashlib.sha1(f"blob {size}\0".encode(), usedforsecurity=False))


def verify_snapshot(snapshot: Path, job_id: str | None = None) -> Finding:
    """Every file of a snapshot against ``trees/<commit>.json``.

    CORRUPT beats PARTIAL: a file present but wrong, or a link whose blob is gone, is corrupt;
    listed files simply absent (a filtered download) make the snapshot PARTIAL. Without a listing
    there is nothing to compare with: UNVERIFIED (still CORRUPT if a link dangles).
    """
    commit = snapshot.name
    repo = snapshot.parent.parent
    if not snapshot.is_dir():
        return Finding(str(snapshot), "snapshot", MISSING, "missing", job_id)
    files = read_listing(repo, commit)
    if files is None:
        broken = [p for p in snapshot.rglob("*") if p.is_symlink() and not p.exists()]
        if broken:
            dangling = f"dangling link {broken[0].relative_to(snapshot)}"
            return Finding(str(snapshot), "snapshot", CORRUPT, dangling, job_id)
        problem = f"no tree listing (trees/{commit}.json): nothing to check the files against"
        return Finding(str(snapshot), "snapshot", UNVERIFIED, problem, job_id)
    checked = 0
    absent = 0
    for name, meta in sorted(files.items()):
        path = snapshot / name
        if not path.exists():
            if path.is_symlink():  # a link whose blob is gone is corrupt, not a filtered-out file
                return Finding(str(snapshot), "snapshot", CORRUPT, f"{name}: blob missing", job_id, checked)
            absent += 1
            continue
        actual = os.stat(path).st_size
        expected = meta.get("lfs_size", meta.get("size"))
        if expected is not None and actual != expected:
            return Finding(str(snapshot), "snapshot", CORRUPT, f"{name}: size {actual} != {expected}", job_id, checked)
        if "lfs_sha256" in meta:
            ok = sha256_file(path) == meta["lfs_sha256"]
        else:
            ok = _git_blob_sha1(path, actual) == meta.get("blob_id")
        if not ok:
            return Finding(
                str(snapshot), "snapshot", CORRUPT, f"{name}: content does not match the hub's hash", job_id, checked
            )
        checked += 1
    if absent:
        problem = f"{checked} of {len(files)} listed files present ({absent} absent: a filtered download?)"
        return Finding(str(snapshot), "snapshot", PARTIAL, problem, job_id, checked)
    return Finding(str(snapshot), "snapshot", OK, None, job_id, checked)


def cache_path(text: str, images_dirs: list[Path], models_dirs: list[Path]) -> Path:
    """A path given by hand, accepted only if it is in the profile's caches.

    An image (``<images>/<name>.sif``), a snapshot (``<models>/models--NS--NAME/snapshots/<commit>``),
    or a folder holding them: an images or models folder, one repo folder, or a cache base (the
    parent of an images or models folder). Resolved first, so ``..`` or a symlink cannot point
    elsewhere: verify reads every byte, and must never be aimed at ``/`` or ``/proc/kcore``.
    """
    from .errors import BadInput, show

    try:
        path = Path(text).resolve(strict=True)
    except (OSError, RuntimeError, ValueError):
        raise BadInput(f"verify: no such artefact: {show(text)}") from None
    bases = {d.parent for d in images_dirs} | {d.parent for d in models_dirs}
    if path.is_file() and path.suffix == ".sif" and path.parent in images_dirs:
        return path
    if path.is_dir() and (
        path in bases
        or path in images_dirs
        or path in models_dirs
        or _is_repo(path, models_dirs)
        or _is_snapshot(path, models_dirs)
    ):
        return path
    raise BadInput(
        f"verify: {show(text)} is not an image (<images>/NAME.sif), a snapshot "
        "(<models>/models--NS--NAME/snapshots/COMMIT) or a folder of them in this profile's caches"
    )


def _is_repo(path: Path, models_dirs: list[Path]) -> bool:
    return path.name.startswith("models--") and path.parent in models_dirs


def _is_snapshot(path: Path, models_dirs: list[Path]) -> bool:
    return path.parent.name == "snapshots" and is_commit(path.name) and _is_repo(path.parent.parent, models_dirs)


def _subdirs(path: Path) -> list[Path]:
    """Sub-folders (not links: a link could lead outside the caches), sorted."""
    try:
        return sorted(Path(e.path) for e in os.scandir(path) if e.is_dir(follow_symlinks=False))
    except OSError:
        return []


def artefacts(path: Path, images_dirs: list[Path], models_dirs: list[Path]) -> list[Path]:
    """The images and snapshots at or under a path :func:`cache_path` accepted (one folder's entries
    at each level, no deeper walk; hidden in-flight files and links are not artefacts)."""
    if path.is_file() or _is_snapshot(path, models_dirs):
        return [path]
    if path in images_dirs:
        try:
            entries = sorted(os.scandir(path), key=lambda e: e.name)
        except OSError:
            return []
        return [
            Path(e.path)
            for e in entries
            if e.name.endswith(".sif") and not e.name.startswith(".") and e.is_file(follow_symlinks=False)
        ]
    if _is_repo(path, models_dirs):
        return [d for d in _subdirs(path / "snapshots") if is_commit(d.name)]
    found: list[Path] = []
    if path in models_dirs:
        for repo in _subdirs(path):
            if _is_repo(repo, models_dirs):
                found += artefacts(repo, images_dirs, models_dirs)
        return found
    for sub in (path / layout.IMAGES, path / layout.MODELS):  # a cache base
        if sub in images_dirs or sub in models_dirs:
            found += artefacts(sub, images_dirs, models_dirs)
    return found


def verify_path(path: Path) -> Finding:
    """One artefact from :func:`artefacts`: an image against its record in the cache
    (``<base>/.bfjobs/images/<file>.json``: UNVERIFIED without one), or a snapshot."""
    if path.is_dir():
        return verify_snapshot(path)
    record = records.read(records.image_record_path(path), "image") or {}
    return verify_image(path, record.get("sha256"), record.get("size"))
