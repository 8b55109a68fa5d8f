"""``bfjobs cache ls|rm|prune`` and ``bfjobs jobs prune`` behind the facade: targets checked with
the download rules, the work done where the caches are (here, or on a remote profile's cluster in
one round trip), and Blackfish's ``model`` table (this machine's) kept in step.

The cache work itself is :mod:`blackfish_jobs.caches`; the cluster's side of a remote profile is
:mod:`.cluster` (``cache_*`` requests), which calls the same functions below with ``_here``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BadInput, BfjobsError, NotWritable, show

if TYPE_CHECKING:
    from .. import config
    from ..caches import Entry, Leftover, Removal, Space

Progress = Callable[[int, int], None]

def no_progress(_done: int, _freed: int) -> None:
    return None


def parse_target(text: str) -> dict[str, str | None]:
    """A ``cache rm`` TARGET with the rules downloads use: ``REPO_ID@REV``, ``REPO_ID`` or an image
    file name. ``..``, paths, globs and option-like words are refused before anything is read."""
    from .. import validate
    from ..kinds.image import check_sif_name
    from ..kinds.model import check_repo_id, check_revision

    validate.ascii_only("TARGET", text)
    if not text or text.startswith("-"):
        raise BadInput(f"TARGET: not a target (an option-like word?): {show(text)}")
    if text.startswith("/") or text.startswith("~") or ".." in text:
        raise BadInput(f"TARGET: paths are not targets (REPO_ID@REV, REPO_ID or NAME.sif): {show(text)}")
    if any(c in text for c in "*?[]"):
        raise BadInput(f"TARGET: globs are not expanded; name each target: {show(text)}")
    if text.endswith(".sif") and "/" not in text:
        return {"kind": "image", "name": check_sif_name(text, "TARGET")}
    repo_id, sep, revision = text.partition("@")
    check_repo_id(repo_id)
    if sep:
        check_revision(revision)
    return {"kind": "model", "repo_id": repo_id, "revision": revision if sep else None}


def _bases(profile: config.Profile, shared: bool) -> tuple[str, Path]:
    from ..caches import HOME, SHARED

    return (SHARED, profile.cache_dir) if shared else (HOME, profile.home_dir)


def require_writable(base: Path, where: str, command: str) -> None:
    """``--shared`` needs write permission in the shared cache: one clear line if not."""
    import os

    from .. import layout

    for folder in (layout.models_dir(base), layout.images_dir(base), base):
        if folder.is_dir():
            if not os.access(folder, os.W_OK | os.X_OK):
                if where == "shared":
                    raise NotWritable(
                        f"{command} --shared: the shared cache {folder} is not writable by you: only its admins "
                        "can change it (without --shared bfjobs acts on your home_dir)"
                    )
                raise NotWritable(f"{command}: {folder} is not writable by you")
            return


# --------------------------------------------------------------------------- where the caches are


def ls_here(profile: config.Profile) -> tuple[list[Entry], list[Space]]:
    """Every snapshot and image in the profile's two caches, on this machine."""
    from ..caches import HOME, SHARED, scan

    return scan({SHARED: profile.cache_dir, HOME: profile.home_dir})


#: At most this many registries asked at once by ``cache ls --check-upstream``.
UPSTREAM_WORKERS = 8


def check_upstream(entries: Sequence[Entry], insecure: Sequence[str] = ()) -> None:
    """Mark each image with what its tag names now (``entry.upstream``): one request per image to
    its registry, a few at once. ``moved`` is True when the digest differs from the one it was
    pulled from, None when that is unknown (no record, not pinned, a source without digests)."""
    from concurrent.futures import ThreadPoolExecutor

    from .. import constants
    from ..kinds.image import parse_image_uri
    from ..node import registry

    if constants.registry_offline_env():
        raise BadInput("--check-upstream: BFJOBS_REGISTRY_OFFLINE is set, and this asks each image's registry")
    client = registry.Client(tuple(insecure))

    def ask(entry: Entry) -> dict[str, Any]:
        # a record is read from a cache others write to: its source is checked as a URI typed
        # by hand would be before any registry is asked
        try:
            source = parse_image_uri(entry.source).uri if isinstance(entry.source, str) else None
        except BadInput as exc:
            return {"digest": None, "moved": None, "error": f"its recorded source is not a valid URI ({exc})"}
        ref = registry.parse(source) if source else None
        if ref is None:
            why = "no record of its source" if not source else "its source has no digests to compare"
            return {"digest": None, "moved": None, "error": why}
        if ref.digest is not None:  # pulled by digest: the reference cannot move
            return {"digest": ref.digest, "moved": None if entry.digest is None else entry.digest != ref.digest,
                    "error": None}
        try:
            now = client.resolve(ref).digest
        except registry.RegistryError as exc:
            return {"digest": None, "moved": None, "error": str(exc)}
        if not isinstance(entry.digest, str):
            return {"digest": now, "moved": None, "error": "pulled unpinned: no digest recorded to compare"}
        return {"digest": now, "moved": now != entry.digest, "error": None}

    images = [e for e in entries if e.kind == "image"]
    if not images:
        return
    with ThreadPoolExecutor(max_workers=min(UPSTREAM_WORKERS, len(images))) as pool:
        for entry, answer in zip(images, pool.map(ask, images), strict=True):
            entry.upstream = answer


def rm_here(
    profile: config.Profile,
    targets: Sequence[Mapping[str, Any]],
    *,
    shared: bool,
    dry_run: bool,
    progress: Progress = no_progress,
    on_removed: Callable[[Removal], None] = lambda _removal: None,
) -> list[Removal]:
    """Each target (already parsed) removed from one cache of the profile, on this machine: every
    target is found and checked (writable, not being written) before the first is removed;
    ``on_removed`` hears each removal as soon as it is done (a later one may fail)."""
    where, base = _bases(profile, shared)
    if not dry_run:
        require_writable(base, where, "cache rm")
    plans = [_remove_one(base, where, t, dry_run=True) for t in targets]  # each found, or nothing touched
    targets, _plans = _distinct(targets, plans)
    # Planned (and checked: locks, permissions) in turn, as the real run removes them, each after
    # those before it: a later revision that becomes its repo's last takes the repo folder, whose
    # whole tree must then be removable. Nothing is touched if any plan fails.
    gone: dict[str, frozenset[str]] = {}
    plans = []
    for target in targets:
        plans.append(_remove_one(base, where, target, dry_run=True, before=gone.get(str(target.get("repo_id")))))
        if plans[-1].kind == "model":
            key = str(target["repo_id"])
            gone[key] = gone.get(key, frozenset()) | frozenset(plans[-1].commits)
    if dry_run:
        return plans
    done: list[Removal] = []
    for target in targets:  # each planned again under its lock, against the cache as it is now
        try:
            done.append(_remove_one(base, where, target, dry_run=False, progress=progress))
        except (BfjobsError, OSError) as exc:
            if not done:
                raise
            names = ", ".join(r.target for r in done)
            message = f"{exc} (removed before it: {names})"
            raise (type(exc)(message) if isinstance(exc, BfjobsError) else BfjobsError(message)) from None
        on_removed(done[-1])
    return done


def _distinct(
    targets: Sequence[Mapping[str, Any]], plans: Sequence[Removal]
) -> tuple[list[Mapping[str, Any]], list[Removal]]:
    """Targets that name what another already removes (the same snapshot twice, a snapshot of a
    repo also removed whole) are dropped: each artefact is removed once, and none is then found
    missing halfway through."""
    whole = {p.repo_id for t, p in zip(targets, plans, strict=True) if t["kind"] == "model" and t["revision"] is None}
    kept: list[tuple[Mapping[str, Any], Removal]] = []
    seen: set[tuple[str, ...]] = set()
    for target, plan in zip(targets, plans, strict=True):
        if target["kind"] == "model" and target["revision"] is not None and plan.repo_id in whole:
            continue
        key = (plan.kind, plan.path, *plan.commits)
        if key not in seen:
            seen.add(key)
            kept.append((target, plan))
    return [t for t, _ in kept], [p for _, p in kept]


def _remove_one(
    base: Path,
    where: str,
    target: Mapping[str, Any],
    *,
    dry_run: bool,
    progress: Progress = no_progress,
    before: frozenset[str] | None = None,
) -> Removal:
    from .. import caches, layout

    if target.get("kind") == "image":
        return caches.remove_image(layout.images_dir(base), where, str(target["name"]), dry_run=dry_run,
                                   progress=progress)
    revision = target.get("revision")
    return caches.remove_model(
        layout.models_dir(base), where, str(target["repo_id"]), None if revision is None else str(revision),
        dry_run=dry_run, progress=progress, before=before or frozenset(),
    )


def prune_here(
    profile: config.Profile,
    *,
    shared: bool,
    dry_run: bool,
    older_than: float | None,
    models: Sequence[tuple[str, str]] = (),
    progress: Progress = no_progress,
) -> tuple[list[Leftover], list[tuple[str, str]]]:
    """Leftovers in one cache of the profile, on this machine, and which of Blackfish's ``model``
    rows (``(model_dir, revision)``) name a snapshot that is gone from that cache."""
    from .. import caches

    where, base = _bases(profile, shared)
    if not dry_run:
        require_writable(base, where, "cache prune")
    leftovers = caches.prune(base, where, dry_run=dry_run, older_than=older_than, progress=progress)
    return leftovers, gone_models(base, models)


def gone_models(base: Path, models: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """Of Blackfish's rows ``(model_dir, revision)``, those of this cache (``<base>/models/…``)
    whose snapshot is gone; the others are not this cache's to judge."""
    return [
        (model_dir, revision)
        for model_dir, revision in models
        if of_cache(base, model_dir, revision) and not (Path(model_dir) / "snapshots" / revision).is_dir()
    ]


def of_cache(base: Path, model_dir: str, revision: str) -> bool:
    """Whether a Blackfish row names a snapshot of the cache at ``base`` (``<base>/models/REPO``)."""
    from .. import layout

    return str(Path(model_dir).parent) == str(layout.models_dir(base)) and layout.is_commit(revision)


def prune_folders_here(profile: config.Profile, folders: Sequence[str], *, dry_run: bool) -> list[dict[str, Any]]:
    """Remove job folders (those of finished jobs: the caller's to say), each only if it is a
    folder right inside the profile's jobs folder (never a link, never anything else)."""
    from ..caches import _tree_bytes, remove_tree

    jobs = profile.jobs_dir
    done = []
    for text in folders:
        path = Path(text)
        item: dict[str, Any] = {"path": text, "bytes": 0, "removed": False, "skipped": None}
        if path.parent != jobs or not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", path.name) or path.name.startswith("."):
            item["skipped"] = f"not a job folder of {jobs}"
        elif path.is_symlink() or not path.is_dir():
            item["skipped"] = "not there (already removed?)" if not path.exists() else "not a folder"
        else:
            item["bytes"] = _tree_bytes(path)
            if not dry_run:
                try:
                    remove_tree(path)
                    item["removed"] = True
                except OSError as exc:
                    item["skipped"] = f"cannot remove: {exc.strerror or exc}"
        done.append(item)
    return done


# --------------------------------------------------------------------------- answers from a cluster


def decode(cls: type, raw: Any) -> Any:
    """A :mod:`blackfish_jobs.caches` record sent by a cluster, checked field by field (strings made
    one line: they reach the user's terminal)."""
    from ..backends.protocol import one_line

    if not isinstance(raw, dict):
        raise ValueError("not an object")
    values: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in raw:
            continue
        value = raw[f.name]
        hint = str(f.type)
        if value is None:
            values[f.name] = None
        elif hint.startswith("list"):
            if not isinstance(value, list):
                raise ValueError(f.name)
            values[f.name] = [one_line(str(v)) for v in value]
        elif hint.startswith("int"):
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f.name)
            values[f.name] = value
        elif hint.startswith("bool"):
            values[f.name] = bool(value)
        else:
            values[f.name] = one_line(str(value))
    return cls(**values)
