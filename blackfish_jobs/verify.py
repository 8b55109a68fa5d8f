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

from .layout import is_commit, read_listing
from .tasks import hash_file, sha256_file

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
    """A SIF file against what its pull recorded (without a record: only that it is readable)."""
    if not path.is_file():
        return Finding(str(path), "image", MISSING, "missing", job_id)
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        return Finding(str(path), "image", CORRUPT, f"size {actual_size} != recorded {size} (truncated?)", job_id, 1)
    digest = sha256_file(path)
    if sha256 is not None and digest != sha256:
        return Finding(str(path), "image", CORRUPT, f"sha256 {digest[:12]}… != recorded {sha256[:12]}…", job_id, 1)
    problem = None if sha256 is not None else "no recorded sha256 (not pulled by bfjobs): only read it"
    return Finding(str(path), "image", OK, problem, job_id, 1)


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
    """A path given by hand, accepted only if it is an artefact of the profile's caches.

    ``<images>/<name>.sif`` or ``<models>/models--<ns>--<name>/snapshots/<40-hex commit>``
    (resolved first, so ``..`` or a symlink cannot point elsewhere): verify reads every byte, and
    must never be aimed at ``/`` or ``/proc/kcore``.
    """
    from .errors import BadInput, show

    try:
        path = Path(text).resolve(strict=True)
    except (OSError, RuntimeError, ValueError):
        raise BadInput(f"verify: no such artefact: {show(text)}") from None
    if path.suffix == ".sif" and path.is_file() and path.parent in images_dirs:
        return path
    parts = path.parts
    if (
        path.is_dir()
        and len(parts) >= 3
        and parts[-2] == "snapshots"
        and is_commit(parts[-1])
        and parts[-3].startswith("models--")
        and path.parent.parent.parent in models_dirs
    ):
        return path
    raise BadInput(
        f"verify: {show(text)} is not an image (<images>/NAME.sif) or a snapshot "
        "(<models>/models--NS--NAME/snapshots/COMMIT) of this profile's caches"
    )


def verify_path(path: Path) -> Finding:
    """A path checked by :func:`cache_path`: a ``.sif`` file or a ``snapshots/<commit>`` folder."""
    if path.is_dir():
        return verify_snapshot(path)
    return verify_image(path, None, None)
