"""Where artefacts live in Blackfish's caches, and who may write there.

Blackfish reads images from ``<cache_dir>/images/<name>_<tag>.sif`` and models from the
Hugging Face hub-cache layout under ``<cache_dir>/models`` then ``<home_dir>/models``. These
functions only build paths and look at single entries: nothing here walks a cache.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import NotWritable

IMAGES = "images"
MODELS = "models"
#: Prefix of in-flight files inside a destination directory (hidden, never a Blackfish name).
PARTIAL_PREFIX = ".bfjobs-partial-"


def images_dir(base: Path) -> Path:
    return base / IMAGES


def models_dir(base: Path) -> Path:
    return base / MODELS


def partial_name(final_name: str, token: str) -> str:
    """Temporary name used while an artefact is written next to its final place."""
    return f"{PARTIAL_PREFIX}{token}-{final_name}"


def nearest_existing(path: Path) -> Path:
    """The path itself or its closest existing ancestor (what a later ``mkdir -p`` needs)."""
    current = path
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def can_write(path: Path) -> bool:
    """Whether the caller could create ``path`` (a directory) or files in it."""
    existing = nearest_existing(path)
    if not existing.is_dir():
        return False
    return os.access(existing, os.W_OK | os.X_OK)


def require_writable(path: Path, what: str, hint: str = "") -> None:
    """Refuse up front (before anything is submitted) when ``path`` is not writable."""
    if not can_write(path):
        existing = nearest_existing(path)
        extra = f" {hint}" if hint else ""
        raise NotWritable(f"cannot write to {what} {path} ({existing} is not writable by you).{extra}")


# --------------------------------------------------------------------------- models


def repo_folder(repo_id: str) -> str:
    """``namespace/name`` → ``models--namespace--name`` (the hub-cache folder name)."""
    return "models--" + repo_id.replace("/", "--")


def repo_dir(models: Path, repo_id: str) -> Path:
    return models / repo_folder(repo_id)


def read_ref(repo: Path, ref: str) -> str | None:
    """The commit a recorded branch/tag points to, if the ref file exists and looks valid."""
    try:
        text = (repo / "refs" / ref).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text if is_commit(text) else None


def find_snapshot(models: Path, repo_id: str, revision: str | None) -> str | None:
    """The commit of a snapshot of ``repo_id`` present under ``models``, or None.

    Reads only the repo's own folder (its refs and the names in ``snapshots/``), never the whole
    cache. ``revision`` None means "any snapshot": the one ``refs/main`` names, else the newest.
    """
    repo = repo_dir(models, repo_id)
    snapshots = repo / "snapshots"
    if revision is not None:
        commit = revision if is_commit(revision) else read_ref(repo, revision)
        return commit if commit and (snapshots / commit).is_dir() else None
    main = read_ref(repo, "main")
    if main and (snapshots / main).is_dir():
        return main
    try:
        entries = [e for e in os.scandir(snapshots) if is_commit(e.name) and e.is_dir()]
    except OSError:
        return None
    if not entries:
        return None
    return max(entries, key=lambda e: e.stat().st_mtime).name


def is_commit(text: str) -> bool:
    """A full commit sha as the Hub names snapshots: 40 lowercase hex characters, nothing else."""
    return len(text) == 40 and all(c in "0123456789abcdef" for c in text)
