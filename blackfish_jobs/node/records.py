"""Records of published artefacts, kept in the cache beside them: ``<base>/.bfjobs/…``.

bfjobs' database is one user's job history; a record in the cache itself is found by path and by
every user. It says where an artefact came from (so a file whose name collides with another
image's is never taken for it) and what it held (so ``verify PATH`` has something to compare
against). Records live under ``<base>/.bfjobs``, a folder neither Blackfish nor huggingface_hub
reads, are world-readable, and hold no secret (no token; an endpoint's credentials are dropped).

Node-side code: no Click, no database.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .. import layout
from ..errors import show

#: The hidden folder of a cache base (``cache_dir`` or ``home_dir``) that holds the records.
RECORDS_DIR = ".bfjobs"
FORMAT = "bfjobs-record/1"
RECORD_MODE = 0o644
#: An OCI content digest as bfjobs accepts one (a reference's, a registry's, a record's).
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_URI_DIGEST = re.compile(rf"@({DIGEST.pattern})$")


def image_record_path(image: Path) -> Path:
    """``<base>/images/<file>.sif`` → ``<base>/.bfjobs/images/<file>.sif.json``."""
    return image.parent.parent / RECORDS_DIR / layout.IMAGES / f"{image.name}.json"


def snapshot_record_path(snapshot: Path) -> Path:
    """``<base>/models/models--X/snapshots/<commit>`` → ``<base>/.bfjobs/models/models--X/<commit>.json``."""
    repo = snapshot.parent.parent
    return repo.parent.parent / RECORDS_DIR / layout.MODELS / repo.name / f"{snapshot.name}.json"


def digest_of(uri: str) -> str | None:
    """The ``sha256:…`` digest a reference pins (``…@sha256:<64 hex>``), if any."""
    match = _URI_DIGEST.search(uri)
    return match.group(1) if match else None


def public_endpoint(endpoint: str) -> str:
    """An endpoint URL without user info, query or fragment: nothing secret lands in a record."""
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _who_and_when(job: str) -> dict[str, Any]:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return {"user": user, "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "job": job}


def image_record(
    uri: str, sha256: str, size: int, job: str, pin: dict[str, Any] | None = None, mtime: int | None = None
) -> dict[str, Any]:
    """What a pull published: the URI as asked, the file's sha256, size and ``mtime`` (whole
    seconds), and what it was pinned to (``pin``: ``tag``, ``digest`` the tag named, ``manifest``
    pulled, ``pulled`` reference; without one, the URI's own digest if it names one)."""
    return {
        "format": FORMAT,
        "kind": "image",
        "source": uri,
        "digest": digest_of(uri),
        **(pin or {}),
        "sha256": sha256,
        "size": size,
        **({"mtime": mtime} if mtime is not None else {}),
        **_who_and_when(job),
    }


def describes(record: dict[str, Any], st: os.stat_result) -> bool:
    """Whether an image record is of the file ``st`` is the stat of: its size, and its
    modification time in whole seconds when the record has one (a copy that kept times still
    matches). A ``--force`` pull writes its record just before the rename: a job killed between
    the two leaves the old file under a record that does not describe it, even of the same size."""
    mtime = record.get("mtime")
    return record.get("size") == st.st_size and (mtime is None or mtime == int(st.st_mtime))


def snapshot_record(endpoint: str, result: dict[str, Any], files: dict[str, int], job: str) -> dict[str, Any]:
    """What a download published: endpoint, repo, revision asked, commit, and the files with sizes."""
    return {
        "format": FORMAT,
        "kind": "snapshot",
        "source": public_endpoint(endpoint),
        "repo_id": result["repo_id"],
        "revision": result["revision"],
        "commit": result["commit"],
        "files": files,
        "size": sum(files.values()),
        **_who_and_when(job),
    }


def snapshot_files(snapshot: Path) -> dict[str, int]:
    """Each file of a snapshot (relative path) with its size, following the links to the blobs."""
    return {f.relative_to(snapshot).as_posix(): f.stat().st_size for f in sorted(snapshot.rglob("*")) if f.is_file()}


def write(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically (a temporary file, then rename), mode 644.

    The parent directory must exist (the caller creates it 755: see ``publish.ensure_public_dir``).
    """
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tmp.open("x", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
            fh.write("\n")
        os.chmod(tmp, RECORD_MODE)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read(path: Path, kind: str) -> dict[str, Any] | None:
    """The record at ``path`` if it is a readable record of ``kind``; None otherwise."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("kind") != kind:
        return None
    return data


def image_conflict(image: Path, uri: str) -> str | None:
    """Why the existing ``image`` cannot be taken for ``uri`` (None: its record says it is ``uri``).

    Blackfish names files ``<last component>_<tag>.sif``, so ``docker://myfork/x:1`` and
    ``docker://vllm/x:1`` share a name: only the record tells them apart. A file with no record
    (or one its record does not describe) has an unknown source and is never called present.
    """
    hint = "use --name NAME.sif to pull it under a name of its own, or --force to replace the file"
    record = read(image_record_path(image), "image")
    try:
        st: os.stat_result | None = image.stat()
    except OSError:
        st = None
    if record is None or st is None or not describes(record, st):
        why = "no bfjobs record of its pull" if record is None else "its bfjobs record describes another file"
        return f"{image} exists with an unknown source ({why}): it cannot be confirmed to be {uri}; {hint}"
    source, digest = record.get("source"), record.get("digest")
    wanted = digest_of(uri)
    if source == uri and (wanted is None or digest == wanted):
        return None
    note = ""
    if wanted is not None or digest is not None:
        note = f" (digest {digest or 'not recorded'}, asked {wanted or 'none'})"
    return f"name collision: {image} was pulled from {show(source, 300)}, not {uri}{note}; {hint}"


def image_moved(image: Path, uri: str, digest: str, *, pinned: bool = False) -> str | None:
    """Why ``image`` (whose record says it is ``uri``: :func:`image_conflict`) is not what ``uri``
    names now, ``digest`` (None: its record names that digest; ``pinned``: the digest a job was
    pinned to at submit). The seed's rule for images: a tag that moved never silently replaces a
    published image."""
    record = read(image_record_path(image), "image") or {}
    have = record.get("digest")
    if have == digest:
        return None
    if not isinstance(have, str) or not DIGEST.fullmatch(have):
        have = None  # a record from another hand: its digest is not one
    was = f"at {short(have)}" if have else "with no digest recorded (pulled before bfjobs pinned images)"
    if pinned:  # a job pinned at submit, finding another digest published meanwhile
        return (
            f"{image} holds {uri} {was}, not {short(digest)}, the digest this job was pinned to at "
            f"submit: nothing replaced; submit again to compare with what the tag names now"
        )
    return (
        f"{image} holds {uri} {was}, but the tag now points at {short(digest)}: nothing replaced; "
        f"--force pulls {short(digest)} and replaces the file"
    )


def short(digest: str | None) -> str:
    """``sha256:`` and 12 hex digits, as people compare digests by eye."""
    return digest[:19] if digest else "none"


def tag_of(uri: str) -> str | None:
    """The tag a reference asks for (``latest`` when it names neither tag nor digest); None for
    a digest-only reference or an ``https://`` file."""
    scheme, _, rest = uri.partition("://")
    if scheme == "https":
        return None
    rest, _, digest = rest.partition("@")
    last = rest.rsplit("/", 1)[-1]
    return last.partition(":")[2] or (None if digest else "latest")
