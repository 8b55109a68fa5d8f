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
