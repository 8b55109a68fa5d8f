"""Where artefacts live in Blackfish's caches, and who may write there.

Blackfish reads images from ``<cache_dir>/images/<name>_<tag>.sif`` and models from the
Hugging Face hub-cache layout under ``<cache_dir>/models`` then ``<home_dir>/models``. These
functions only build paths and look at single entries: nothing here walks a cache.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

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


def group_id(group: str) -> int | None:
    """The id of the Unix group named ``group`` (``shared_group``), None if there is none."""
    import grp

    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        return None


def can_give_to(gid: int) -> bool:
    """Can this user give files to group ``gid`` (chown): a member, or root."""
    return os.geteuid() == 0 or gid == os.getegid() or gid in os.getgroups()


def require_member(group: str) -> None:
    """Refuse up front when ``shared_group`` names a group the caller is not in (a job could not
    give what it publishes to the group, and other admins could not replace it)."""
    gid = group_id(group)
    if gid is None:
        raise NotWritable(f"shared_group {group!r}: no such group here (getent group {group})")
    if not can_give_to(gid):
        raise NotWritable(
            f"shared_group {group!r}: you are not a member (id -nG), and the shared cache is kept by its members: "
            "ask to be added, or publish to your home_dir with --to home"
        )


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


def find_snapshot(models: Path, repo_id: str, revision: str | None, *, any_snapshot: bool = True) -> str | None:
    """The commit of a snapshot of ``repo_id`` present under ``models``, or None.

    Reads only the repo's own folder (its refs and the names in ``snapshots/``), never the whole
    cache. ``revision`` None means the default branch: the snapshot ``refs/main`` names; with
    ``any_snapshot`` (the shared cache's rule) else the newest snapshot of any revision. A home
    copy of another branch must never pass for the default branch (``any_snapshot=False``).
    """
    repo = repo_dir(models, repo_id)
    snapshots = repo / "snapshots"
    if revision is not None:
        commit = revision if is_commit(revision) else read_ref(repo, revision)
        return commit if commit and (snapshots / commit).is_dir() else None
    main = read_ref(repo, "main")
    if main and (snapshots / main).is_dir():
        return main
    if not any_snapshot:
        return None
    try:
        entries = [e for e in os.scandir(snapshots) if is_commit(e.name) and e.is_dir()]
    except OSError:
        return None
    if not entries:
        return None
    return max(entries, key=lambda e: e.stat().st_mtime).name


def refs_to(repo: Path, commit: str) -> list[str]:
    """The branches/tags recorded in ``refs/`` that point to ``commit`` (``main`` first).

    ``refs/`` of one repo holds a few tiny files: reading it is not a walk of the cache.
    """
    return refs_by_commit(repo).get(commit, [])


def refs_by_commit(repo: Path | str) -> dict[str, list[str]]:
    """``{commit: [refs pointing at it]}`` (``main`` first) from the repo's few small ``refs/``
    files (``refs/pr/1`` nested; a linked folder is not followed), each read as :func:`read_ref` does."""
    found: dict[str, list[str]] = {}
    stack = [("", os.path.join(repo, "refs"))]
    while stack:
        prefix, folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                stack.append((f"{prefix}{entry.name}/", entry.path))
                continue
            try:
                with open(entry.path, "rb") as fh:
                    commit = fh.read(128).strip().decode("ascii")
            except (OSError, UnicodeDecodeError):
                continue
            if is_commit(commit):
                found.setdefault(commit, []).append(prefix + entry.name)
    for refs in found.values():
        refs.sort(key=lambda ref: (ref != "main", ref))
    return found


#: The only format of ``trees/<commit>.json`` huggingface_hub 2.4 reads (it ignores others).
TREE_FORMAT_VERSION = 1


def read_listing(repo: Path, commit: str) -> dict[str, dict[str, Any]] | None:
    """The commit's full file listing huggingface_hub keeps in ``<repo>/trees/<commit>.json``.

    huggingface_hub writes the whole commit's listing whatever ``--include``/``--exclude``
    selected, so it says what a complete snapshot holds. None when absent or unreadable.
    """
    try:
        with open(repo / "trees" / f"{commit}.json", encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format_version") != TREE_FORMAT_VERSION:
        return None
    files = data.get("files")
    if not isinstance(files, dict) or not all(isinstance(meta, dict) for meta in files.values()):
        return None
    return files


def listed_size(meta: dict[str, Any]) -> int:
    """The size of one listed file's content (an LFS file's real size, not its pointer's)."""
    size = meta.get("lfs_size", meta.get("size"))
    return size if isinstance(size, int) else 0


def select_files(
    names: Iterable[str], allow: Iterable[str] | None, ignore: Iterable[str] | None
) -> list[str]:
    """The names a request's ``--include``/``--exclude`` select, by huggingface_hub's own rule.

    Its ``filter_repo_objects`` (fnmatchcase, ``*`` crossing ``/``, ``dir/`` meaning ``dir/*``)
    is what ``snapshot_download`` applies: using it keeps presence and download in agreement.
    The import is cheap (three small modules, no HTTP stack) and only made with patterns.
    """
    allow = list(allow) if allow else None
    ignore = list(ignore) if ignore else None
    if allow is None and ignore is None:
        return list(names)
    from huggingface_hub.utils import filter_repo_objects

    return list(filter_repo_objects(names, allow_patterns=allow, ignore_patterns=ignore))


def absent_files(snapshot: Path, names: Iterable[str]) -> list[str]:
    """The names with no readable file in ``snapshot`` (a dangling link counts as absent)."""
    return [name for name in names if not os.path.isfile(snapshot / name)]


def snapshot_covers(
    repo: Path, commit: str, allow: Iterable[str] | None, ignore: Iterable[str] | None
) -> bool:
    """Whether ``snapshots/<commit>`` holds every file a request with these patterns selects.

    Judged against the commit's listing (one small JSON file, then one ``stat`` per selected
    file); a snapshot without a listing counts as complete, there being nothing to compare with.
    A selection of no listed file is never "present": the node says the patterns match nothing.
    """
    snapshot = repo / "snapshots" / commit
    if not snapshot.is_dir():
        return False
    listing = read_listing(repo, commit)
    if listing is None:
        return True
    selected = select_files(listing, allow, ignore)
    if not selected:
        return not listing
    return all(os.path.isfile(snapshot / name) for name in selected)


_COMMIT = re.compile(r"[0-9a-f]{40}")


def is_commit(text: str) -> bool:
    """A full commit sha as the Hub names snapshots: 40 lowercase hex characters, nothing else."""
    return _COMMIT.fullmatch(text) is not None
