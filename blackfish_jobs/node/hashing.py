"""File hashing, shared by the node (a pull's sha256) and ``verify`` (re-hashing what is cached).

One implementation, so the digest a job records and the one ``verify`` compares it with are
computed the same way.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

_CHUNK = 8 * 1024 * 1024


def hash_file(path: Path, digest: Any) -> str:
    """``digest`` (a hashlib object, possibly already fed a header) over the file, in chunks."""
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return str(digest.hexdigest())


def sha256_file(path: Path) -> str:
    return hash_file(path, hashlib.sha256())
