"""What a profile's two caches hold, and taking things out of them: ``bfjobs cache``'s work.

Runs where the caches are (the login node, or a remote profile's cluster, through its agent): no
database, no Click. Targets arrive parsed (:mod:`blackfish_jobs.api.caches` checks them with the
download rules); Blackfish's ``model`` table is the caller's (it may be on a laptop).

Reading is cheap by design: a repo's blobs are listed with one ``stat`` each, a snapshot's files
are links whose *names* say which blob they use (``readlink``, no ``stat``), and nothing is hashed
(that is ``bfjobs cache verify``). Removing never leaves a reader a half-removed artefact: a
snapshot (or a whole repo) is first renamed out of sight, in one ``rename``, and only then deleted;
blobs go only while this process holds the repo's lock exclusively, which every download into the
repo holds shared (:func:`~blackfish_jobs.node.publish.repo_lock_name`), so a running download never
loses a blob it links to, and what a running job writes is refused, not waited for.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import layout
from .errors import BfjobsError, NotWritable, show
from .layout import is_commit, refs_by_commit
from .node import records
from .node.publish import group_mode, held_by_other, publish_lock, repo_lock_name
from .node.runtime import JOB_TAG_RE

SHARED, HOME = "shared", "home"
STAGING_PREFIX = ".bfjobs-staging-"
REMOVING_PREFIX = ".bfjobs-removing-"
LOCK_PREFIX = ".bfjobs-lock-"
#: A staging folder: ``.bfjobs-staging-<repo>@<commit>-<job tag>`` (node/download.py).
_STAGING = re.compile(re.escape(STAGING_PREFIX) + r"(?P<key>models--[^@/]+@[0-9a-f]{40})-" + JOB_TAG_RE)
#: An image pull's partial file: ``.bfjobs-partial-<job tag>-<file>.sif`` (node/pull.py).
_PARTIAL = re.compile(re.escape(layout.PARTIAL_PREFIX) + JOB_TAG_RE + r"-(?P<name>[^/]+\.sif)")
#: What an interrupted ``cache rm`` left: ``.bfjobs-removing-<repo>[@<commit>]-<8 hex>``.
_REMOVING = re.compile(re.escape(REMOVING_PREFIX) + r"(?P<repo>models--[^@/]+?)(?:@[0-9a-f]{40})?-[0-9a-f]{8}")
#: A publish lock left by a job killed outright: ``.bfjobs-lock-<name>``.
_LOCK = re.compile(re.escape(LOCK_PREFIX) + r"(?P<name>[^/]+)")

Progress = Callable[[int, int], None]  # (entries removed, bytes freed so far)


class Busy(BfjobsError):
    """A running job holds the lock of what would be removed: nothing was touched."""


def _ignore(_done: int, _freed: int) -> None:
    return None


def _iso(mtime: float) -> str:
    return datetime.fromtimestamp(mtime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------------------- listing


@dataclass
class Entry:
    """One artefact in a cache: a model snapshot or an image file (docs/json.md, ``cache ls``)."""

    kind: str  # "model" or "image"
    where: str  # SHARED or HOME
    path: str
    bytes: int
    modified: str | None = None  # images only (a snapshot's would cost a stat each)
    files: int | None = None
    repo_id: str | None = None
    commit: str | None = None
    refs: list[str] = field(default_factory=list)
    dangling: int = 0  # links of the snapshot whose blob is gone
    blackfish: bool | None = None  # in Blackfish's model table (the caller's to say)
    name: str | None = None
    sha256: str | None = None
    source: str | None = None
    digest: str | None = None  # images: the manifest digest the tag named when pulled (None: not pinned)
    tag: str | None = None  # images: the tag asked (``latest`` when none; None for a digest reference)
    upstream: dict[str, Any] | None = None  # images, ``--check-upstream``: what the tag names now

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))  # not asdict(): its deep copies cost a third of a 10,000-repo listing


@dataclass
class Space:
    """One cache base and the free space of its filesystem (None when it cannot be asked)."""

    where: str
    path: str
    exists: bool
    free_bytes: int | None
    total_bytes: int | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def scan(bases: Mapping[str, Path]) -> tuple[list[Entry], list[Space]]:
    """Every snapshot and image under each base (``{where: base}``) and each base's free space."""
    entries: list[Entry] = []
    spaces: list[Space] = []
    home = bases.get(HOME)
    for where, base in bases.items():
        if where == SHARED and home is not None and os.path.realpath(base) == os.path.realpath(home):
            continue  # a profile whose cache_dir is its home_dir (a laptop's): listed once, as home
        entries += scan_models(layout.models_dir(base), where)
        entries += scan_images(layout.images_dir(base), where)
        spaces.append(_space(where, base))
    return entries, spaces


def _space(where: str, base: Path) -> Space:
    try:
        st = os.statvfs(base)
    except OSError:
        return Space(where, str(base), False, None, None)
    return Space(where, str(base), True, st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize)


def _listing(path: Path | str) -> list[os.DirEntry[str]]:
    """A folder's entries in directory order ([] if it cannot be read)."""
    try:
        with os.scandir(path) as it:
            return list(it)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []


def _scandir(path: Path | str) -> list[os.DirEntry[str]]:
    """A folder's entries sorted by name (what is listed or removed comes in a stable order)."""
    return sorted(_listing(path), key=lambda e: e.name)


def repo_id_of(folder: str) -> str:
    """``models--ns--name`` → ``ns/name`` (as Blackfish splits the folder name)."""
    return folder.removeprefix("models--").replace("--", "/")


def _is_repo_entry(entry: os.DirEntry[str]) -> bool:
    return entry.name.startswith("models--") and entry.is_dir(follow_symlinks=False)


#: From this many repos on, ``cache ls`` reads them in parallel processes (at most this many).
PARALLEL_FROM, MAX_WORKERS = 2000, 8


def scan_models(models: Path, where: str) -> list[Entry]:
    """The snapshots of every repo folder under ``models`` (hidden in-flight folders skipped).

    A large cache is read by several processes at once: each repo costs four folder reads and a
    ``stat`` per blob, and their latency (minutes on GPFS/Lustre, where each is a metadata round
    trip) overlaps; even on a local disk two processes halve the time of 10,000 repos
    (benchmarks/README.md, ``cache-ls``). Threads do not: the GIL serialises the Python between
    the calls, and measured slower than one thread here.
    """
    repos = [entry.path for entry in _scandir(models) if _is_repo_entry(entry)]
    workers = min(MAX_WORKERS, os.cpu_count() or 1, len(repos) // (PARALLEL_FROM // 2) or 1)
    if len(repos) < PARALLEL_FROM or workers < 2:
        return sorted(_repos_entries(repos, where), key=lambda e: e.path)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    parts = [repos[i::workers] for i in range(workers)]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        found = [e for part in pool.map(_repos_entries, parts, [where] * workers) for e in part]
    return sorted(found, key=lambda e: e.path)


def _repos_entries(repos: list[str], where: str) -> list[Entry]:
    found: list[Entry] = []
    for repo in repos:
        found += repo_entries(repo, where)
    return found


def blob_sizes(repo: Path | str) -> dict[str, int]:
    """Each blob of a repo with its size: one ``stat`` per blob (in-flight ``.incomplete`` skipped)."""
    sizes = {}
    for entry in _listing(os.path.join(repo, "blobs")):
        if entry.name.endswith(".incomplete") or entry.name.startswith("."):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            sizes[entry.name] = st.st_size
    return sizes


def snapshot_links(snapshot: Path | str, *, strict: bool = False) -> tuple[set[str], int, int, int]:
    """What a snapshot uses: (blob names its links name, bytes of plain files in it, files, links
    whose target is not a blob name). Links are read, never followed: no ``stat`` per file.
    ``strict``: a folder of it that cannot be read is an error (an unread link may use a blob)."""
    blobs: set[str] = set()
    plain = files = odd = 0
    stack = [os.fspath(snapshot)]
    while stack:
        folder = stack.pop()
        if strict:
            with os.scandir(folder) as it:
                listed = list(it)
        else:
            listed = _listing(folder)
        for entry in listed:
            if entry.is_symlink():
                files += 1
                try:
                    target = os.readlink(entry.path)
                except OSError:
                    odd += 1
                    continue
                head, _, name = target.rpartition("/")
                if head.endswith("blobs") and name:
                    blobs.add(name)
                else:
                    odd += 1
            elif entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
            elif entry.is_file(follow_symlinks=False):
                files += 1
                with contextlib.suppress(OSError):
                    plain += entry.stat(follow_symlinks=False).st_size
    return blobs, plain, files, odd


def snapshot_dirs(repo: Path | str, *, strict: bool = False) -> list[os.DirEntry[str]]:
    """The repo's snapshot folders (named by a full commit; not links). ``strict``: a
    ``snapshots/`` that cannot be read is an error, not "no snapshot" (what removals must know)."""
    snapshots = os.path.join(repo, "snapshots")
    if strict:
        try:
            with os.scandir(snapshots) as it:
                listed = list(it)
        except FileNotFoundError:
            listed = []
    else:
        listed = _listing(snapshots)
    return [e for e in listed if is_commit(e.name) and e.is_dir(follow_symlinks=False)]


def repo_entries(repo: Path | str, where: str) -> list[Entry]:
    """One entry per snapshot of ``repo``; a snapshot's bytes count each blob it uses once."""
    sizes = blob_sizes(repo)
    refs = refs_by_commit(repo)
    repo_id = repo_id_of(os.path.basename(repo))
    found = []
    for snap in snapshot_dirs(repo):
        used, plain, files, odd = snapshot_links(snap.path)
        missing = sum(1 for b in used if b not in sizes)
        found.append(
            Entry(
                kind="model",
                where=where,
                path=snap.path,
                bytes=plain + sum(sizes.get(b, 0) for b in used),
                files=files,
                repo_id=repo_id,
                commit=snap.name,
                refs=refs.get(snap.name, []),
                dangling=missing + odd,
            )
        )
    return found


def scan_images(images: Path, where: str) -> list[Entry]:
    """Every ``*.sif`` under ``images`` with what its pull recorded (source, sha256), if a bfjobs job did."""
    found = []
    for entry in _scandir(images):
        if entry.name.startswith(".") or not entry.name.endswith(".sif"):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        record = records.read(records.image_record_path(Path(entry.path)), "image") or {}
        mine = records.describes(record, st)  # a record of another file says nothing of this one
        found.append(
            Entry(
                kind="image",
                where=where,
                path=entry.path,
                bytes=st.st_size,
                modified=_iso(st.st_mtime),
                name=entry.name,
                sha256=record.get("sha256") if mine else None,
                source=record.get("source") if mine else None,
                digest=record.get("digest") if mine else None,
                tag=_tag(record) if mine else None,
            )
        )
    return found


def _tag(record: dict[str, Any]) -> str | None:
    """The tag a pull asked for (records written before pinning name only their source)."""
    if "tag" in record:
        return record["tag"] if isinstance(record["tag"], str) else None
    source = record.get("source")
    return records.tag_of(source) if isinstance(source, str) else None


# ------------------------------------------------------------------------------- removing


@dataclass
class Removal:
    """What one ``cache rm`` target takes away (or would, with ``--dry-run``)."""

    target: str
    kind: str  # "model" or "image"
    where: str
    path: str  # the snapshot, the repo folder (every revision) or the image file
    bytes: int  # what removing it frees: blobs no remaining snapshot uses, or the image file
    repo_id: str | None = None
    model_dir: str | None = None  # the repo folder (what Blackfish's model table names)
    commits: list[str] = field(default_factory=list)
    refs: list[str] = field(default_factory=list)
    blobs: list[str] = field(default_factory=list)
    whole_repo: bool = False
    removed: bool = False

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["blobs"] = len(self.blobs)
        return data


def _not_found(target: str, where: str, folder: Path) -> BfjobsError:
    from .errors import BadInput

    return BadInput(f"cache rm: {show(target)} is not in the {where} cache ({folder})")


def _require_writable_tree(root: Path, top: Path, where: str) -> None:
    """Every folder that removing ``root`` changes must be writable by the caller: ``top`` (whose
    entry goes) and each folder inside ``root`` (links are not followed). Checked before anything
    is touched, so a permission problem removes nothing."""
    folders = [top]
    if root.is_dir() and not root.is_symlink():
        folders.append(root)
        for dirpath, dirnames, _files in os.walk(root):
            folders += [Path(dirpath) / d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
    for folder in folders:
        if not os.access(folder, os.W_OK | os.X_OK):
            hint = (
                "only the cache's admins can remove from it (with shared_group, its members)"
                if where == SHARED
                else "it is not yours"
            )
            raise NotWritable(f"cannot remove {root}: {folder} is not writable by you ({hint})")


@contextlib.contextmanager
def _held(directory: Path, name: str, what: str, *, probe: bool = False) -> Iterator[None]:
    """The publish lock ``name`` in ``directory``, taken at once or :class:`Busy`. ``probe`` (a dry
    run): only find out whether a job holds it, creating and removing nothing."""
    from .errors import TaskError

    path = directory / (LOCK_PREFIX + name)
    if probe:
        if held_by_other(path):
            raise Busy(f"{what} is being written by a running job (it holds {path})")
        if not os.access(path if path.exists() else directory, os.W_OK):  # what the real run would meet
            raise NotWritable(f"cannot take the lock {path} of {what}: not writable by you")
        yield
        return
    with contextlib.ExitStack() as stack:
        try:  # only taking the lock is translated here: the block's own errors pass as they are
            stack.enter_context(group_mode(_group_of(directory)))
            held = stack.enter_context(publish_lock(directory, name, wait=False))
        except TaskError as exc:  # another user's lock file, left by a killed job (its message names the rm)
            raise NotWritable(str(exc)) from None
        except PermissionError as exc:
            raise NotWritable(f"cannot take the lock of {what} in {directory}: {exc.strerror}") from None
        except OSError as exc:  # a full quota (EDQUOT) or disk: the lock file cannot be made
            raise BfjobsError(f"cannot take the lock of {what} in {directory}: {exc.strerror or exc}") from None
        if not held:
            raise Busy(f"{what} is being written by a running job (it holds {path}): try again when the job has ended")
        yield


def _group_of(directory: Path) -> str | None:
    """The group of a folder kept in group mode (setgid, as ``shared_group`` makes them), when the
    caller is a member: lock files made there are then the group's, as a job's would be."""
    import grp

    try:
        st = os.stat(directory)
        if not st.st_mode & stat.S_ISGID or (st.st_gid != os.getegid() and st.st_gid not in os.getgroups()):
            return None
        return grp.getgrgid(st.st_gid).gr_name
    except (OSError, KeyError):
        return None


#: The folders of a repo bfjobs reads and removes in: each must be a real folder, never a link.
_REPO_FOLDERS = ("blobs", "refs", "snapshots", "trees")


def linked_folder(root: Path, *names: str) -> Path | None:
    """The first of ``root``'s folders ``names`` (each inside the previous one) that is a link, if
    any: what is reached through it lies outside the cache, and is never removed."""
    path = root
    for name in names:
        path = path / name
        if path.is_symlink():
            return path
    return None


def _check_repo_folders(repo: Path) -> None:
    for name in _REPO_FOLDERS:
        link = linked_folder(repo, name)
        if link is not None:
            raise BfjobsError(
                f"cache rm: {link} is a link (to {show(os.readlink(link), 200)}): bfjobs never removes "
                "through a link out of a cache; look at it and remove the repo by hand"
            )


def remove_model(
    models: Path,
    where: str,
    repo_id: str,
    revision: str | None,
    *,
    dry_run: bool = False,
    progress: Progress = _ignore,
    before: frozenset[str] = frozenset(),
) -> Removal:
    """Remove one snapshot (``revision``: a commit or a ref in the repo's ``refs/``) or, without
    ``revision``, the whole repo; refs pointing at what goes, blobs no remaining snapshot uses,
    the tree listing and bfjobs' record go with it. Only this repo's folder is read.

    ``before`` (a dry run of several targets): the commits of this repo earlier targets remove,
    so the plan says what this one removes after them, as the real run will."""
    target = repo_id + (f"@{revision}" if revision else "")
    repo = layout.repo_dir(models, repo_id)
    if not repo.is_dir() or repo.is_symlink():
        raise _not_found(target, where, models)
    _check_repo_folders(repo)
    with _held(models, repo_lock_name(repo), f"{repo_id} in the {where} cache", probe=dry_run):
        plan = _plan_model(repo, where, target, repo_id, revision, before)
        for commit in plan.commits:  # each snapshot's own publish lock (a job adding files to it holds it)
            with _held(models, f"{repo.name}@{commit}", f"{repo_id}@{commit[:12]} in the {where} cache", probe=True):
                pass
        if plan.whole_repo:
            _require_writable_tree(repo, models, where)
        else:
            _require_writable_tree(Path(plan.path), repo / "snapshots", where)
            for name in ("refs", "blobs", "trees"):
                if (repo / name).is_dir():
                    _require_writable_tree(repo / name, repo / name, where)
        if not dry_run:
            with _one_line(target):
                if plan.whole_repo:
                    _remove_repo(models, repo, plan, progress)
                else:
                    _remove_snapshot(models, repo, plan, progress)
    plan.removed = not dry_run
    return plan


@contextlib.contextmanager
def _one_line(target: str) -> Iterator[None]:
    """A filesystem error in the middle of a removal: one line naming what to do (the rest of the
    artefact is already out of sight, and ``cache prune`` removes it)."""
    try:
        yield
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise BfjobsError(
            f"cache rm {show(target)}: {exc.strerror or exc}{where}; what is left is out of sight: "
            "`bfjobs cache prune` removes it"
        ) from None


def _plan_model(
    repo: Path, where: str, target: str, repo_id: str, revision: str | None, before: frozenset[str] = frozenset()
) -> Removal:
    """What removing ``revision`` (None: every snapshot) takes away, once the commits ``before`` are
    gone: blobs used by the snapshots that go and by none that stays. Every snapshot is read
    strictly: one that cannot be read might use a blob that looks unused, so nothing is planned."""
    sizes = blob_sizes(repo)
    refs = refs_by_commit(repo)
    try:
        snaps = {e.name: Path(e.path) for e in snapshot_dirs(repo, strict=True)}
        uses = {commit: snapshot_links(path, strict=True)[0] for commit, path in snaps.items()}
    except OSError as exc:
        raise NotWritable(
            f"cache rm {show(target)}: cannot read {exc.filename or repo} ({exc.strerror}), so the blobs the "
            "snapshots of the repo use are not known: nothing removed"
        ) from None
    left = {c: u for c, u in uses.items() if c not in before}
    earlier = {b for c in before if c in uses for b in uses[c]} - {b for u in left.values() for b in u}
    sizes = {b: n for b, n in sizes.items() if b not in earlier}  # what earlier targets removed
    every = sorted(r for c, rs in refs.items() if c not in before for r in rs)
    if revision is None:
        return Removal(
            target, "model", where, str(repo), sum(sizes.values()), repo_id, str(repo),
            commits=sorted(left), refs=every, blobs=sorted(sizes), whole_repo=True,
        )
    commit = revision if is_commit(revision) else layout.read_ref(repo, revision)
    if commit is None or commit not in left:
        raise _not_found(target, where, repo / "snapshots")
    if len(left) == 1:  # its last snapshot: the repo folder goes (unused blobs too)
        return Removal(
            target, "model", where, str(snaps[commit]), sum(sizes.values()), repo_id, str(repo),
            commits=[commit], refs=every, blobs=sorted(sizes), whole_repo=True,
        )
    kept = {b for c, u in left.items() if c != commit for b in u}
    gone = sorted(b for b in left[commit] if b in sizes and b not in kept)
    return Removal(
        target, "model", where, str(snaps[commit]), sum(sizes[b] for b in gone), repo_id, str(repo),
        commits=[commit], refs=refs.get(commit, []), blobs=gone,
    )


def _out_of_sight(models: Path, label: str) -> Path:
    """A hidden name next to the repos (same filesystem: one ``rename``), recognisable by prune."""
    return models / f"{REMOVING_PREFIX}{label}-{uuid.uuid4().hex[:8]}"


def _remove_snapshot(models: Path, repo: Path, plan: Removal, progress: Progress) -> None:
    commit = plan.commits[0]
    hidden = _out_of_sight(models, f"{repo.name}@{commit}")
    os.rename(repo / "snapshots" / commit, hidden)  # a reader sees all of it, then none of it
    for ref in plan.refs:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(repo / "refs" / ref)
    freed = 0
    for count, blob in enumerate(plan.blobs, 1):
        path = repo / "blobs" / blob
        with contextlib.suppress(FileNotFoundError):
            size = os.lstat(path).st_size
            os.unlink(path)
            freed += size
        progress(count, freed)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(repo / "trees" / f"{commit}.json")
    _remove_record(records.snapshot_record_path(repo / "snapshots" / commit))
    remove_tree(hidden, progress, start=(len(plan.blobs), freed))


def _remove_repo(models: Path, repo: Path, plan: Removal, progress: Progress) -> None:
    hidden = _out_of_sight(models, repo.name)
    os.rename(repo, hidden)  # every snapshot disappears at once
    remove_tree(hidden, progress)
    record_dir = models.parent / records.RECORDS_DIR / layout.MODELS / repo.name
    for commit in plan.commits:
        _remove_record(record_dir / f"{commit}.json")
    if linked_folder(models.parent, records.RECORDS_DIR, layout.MODELS, repo.name) is None:
        with contextlib.suppress(OSError):
            record_dir.rmdir()


def _remove_record(path: Path) -> None:
    """Remove bfjobs' record of an artefact, unless a folder on its way is a link (records live in
    ``<base>/.bfjobs/{images,models/REPO}/``)."""
    parts = path.parts
    base = Path(*parts[: parts.index(records.RECORDS_DIR)])
    if linked_folder(base, *parts[len(base.parts) : -1]) is not None:
        return
    with contextlib.suppress(FileNotFoundError, PermissionError):
        os.unlink(path)


def remove_image(
    images: Path, where: str, name: str, *, dry_run: bool = False, progress: Progress = _ignore
) -> Removal:
    """Remove one image file (and bfjobs' record of its pull), unless a pull of it is running."""
    path = images / name
    try:
        st = os.lstat(path)
    except OSError:
        raise _not_found(name, where, images) from None
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        raise _not_found(name, where, images)
    with _held(images, name, f"{name} in the {where} cache", probe=dry_run):
        _require_writable_tree(path, images, where)
        plan = Removal(name, "image", where, str(path), st.st_size if stat.S_ISREG(st.st_mode) else 0)
        if not dry_run:
            with _one_line(name):
                os.unlink(path)  # one step: a reader has the whole file or none
            _remove_record(records.image_record_path(path))
            progress(1, plan.bytes)
    plan.removed = not dry_run
    return plan


def remove_tree(root: Path, progress: Progress = _ignore, start: tuple[int, int] = (0, 0)) -> int:
    """``rm -r`` that never follows a link (``os.fwalk`` works on descriptors), reporting as it
    goes; returns the bytes of the regular files it removed."""
    done, freed = start
    last = time.monotonic()
    try:
        walker = os.fwalk(root, topdown=False, follow_symlinks=False)
        for _dirpath, dirnames, filenames, dirfd in walker:  # links to folders are among dirnames
            for name in filenames:
                with contextlib.suppress(FileNotFoundError):
                    st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
                    os.unlink(name, dir_fd=dirfd)
                    done += 1
                    if stat.S_ISREG(st.st_mode) and st.st_nlink <= 1:
                        freed += st.st_size
                if time.monotonic() - last > 0.2:
                    progress(done, freed)
                    last = time.monotonic()
            for name in dirnames:
                with contextlib.suppress(FileNotFoundError):
                    if stat.S_ISLNK(os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_mode):
                        os.unlink(name, dir_fd=dirfd)
                    else:
                        os.rmdir(name, dir_fd=dirfd)
        os.rmdir(root)
    except FileNotFoundError:
        pass
    progress(done, freed)
    return freed


# ------------------------------------------------------------------------------- pruning


@dataclass
class Leftover:
    """One thing ``cache prune`` removes (or would): what it is, where, how many bytes it frees."""

    what: str  # "staging", "partial", "removing", "lock", "blobs", "ref", "empty repo"
    where: str
    path: str
    bytes: int
    detail: str | None = None
    removed: bool = False
    skipped: str | None = None  # why it was left (a running job holds it; not yours)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _tree_bytes(root: Path) -> int:
    total = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(dirpath, name))
                if stat.S_ISREG(st.st_mode):
                    total += st.st_size
    return total


def _older(path: Path, older_than: float | None, now: float) -> bool:
    if older_than is None:
        return True
    try:
        return now - os.lstat(path).st_mtime >= older_than
    except OSError:
        return False


def prune(
    base: Path,
    where: str,
    *,
    dry_run: bool = False,
    older_than: float | None = None,
    progress: Progress = _ignore,
) -> list[Leftover]:
    """Leftovers of killed jobs and of interrupted removals in one cache base, each only if no
    running job holds its lock (and, with ``older_than`` seconds, only older ones); then in every
    repo no job is writing to: blobs no snapshot uses and refs whose snapshot is gone."""
    now = time.time()
    found: list[Leftover] = []
    models, images = layout.models_dir(base), layout.images_dir(base)
    for entry in _scandir(models):
        path = Path(entry.path)
        if not _older(path, older_than, now):
            continue
        staging, removing = _STAGING.fullmatch(entry.name), _REMOVING.fullmatch(entry.name)
        if staging and entry.is_dir(follow_symlinks=False):
            found.append(_drop(models, staging["key"], path, "staging", where, dry_run, progress))
        elif removing and entry.is_dir(follow_symlinks=False):
            found.append(_drop(models, removing["repo"], path, "removing", where, dry_run, progress))
    for entry in _scandir(images):
        partial = _PARTIAL.fullmatch(entry.name)
        if partial and not entry.is_dir(follow_symlinks=False) and _older(Path(entry.path), older_than, now):
            found.append(_drop(images, partial["name"], Path(entry.path), "partial", where, dry_run, progress))
    for entry in _scandir(models):
        if _is_repo_entry(entry):
            found += _prune_repo(models, Path(entry.path), where, dry_run, older_than, now)
    for folder in (models, images):
        for entry in _scandir(folder):
            lock = _LOCK.fullmatch(entry.name)
            if lock and entry.is_file(follow_symlinks=False) and _older(Path(entry.path), older_than, now):
                found.append(_stale_lock(folder, lock["name"], Path(entry.path), where, dry_run))
    return found


def _drop(
    directory: Path, lock: str, path: Path, what: str, where: str, dry_run: bool, progress: Progress
) -> Leftover:
    """Remove ``path`` if the lock ``lock`` (the one its job held) can be taken at once."""
    folder = path.is_dir() and not path.is_symlink()
    size = _tree_bytes(path) if folder else _lstat_size(path)
    return _under_lock(directory, lock, Leftover(what, where, str(path), size), dry_run,
                       (lambda: remove_tree(path, progress)) if folder else path.unlink)


def _under_lock(
    directory: Path, lock: str, item: Leftover, dry_run: bool, remove: Callable[[], object] | None
) -> Leftover:
    """Remove a leftover (``remove``; None: releasing the lock is the removal) while holding the
    lock ``lock`` its job held, taken at once; else say why not (a dry run says the same)."""
    path = Path(item.path)
    try:
        with _held(directory, lock, path.name, probe=dry_run):
            _require_writable_tree(path, directory, item.where)  # a dry run says what a real run would leave
            if not dry_run and remove is not None:
                remove()
            item.removed = not dry_run
    except Busy:
        item.skipped = "a running job holds its lock"
    except NotWritable as exc:
        item.skipped = str(exc)
    except OSError as exc:
        item.skipped = f"not removable: {exc.strerror or exc}"
    if item.removed and path.exists():
        item.removed, item.skipped = False, "not removable by you (not yours, and not the group's)"
    return item


def _lstat_size(path: Path) -> int:
    try:
        return os.lstat(path).st_size
    except OSError:
        return 0


def _prune_repo(
    models: Path, repo: Path, where: str, dry_run: bool, older_than: float | None, now: float
) -> list[Leftover]:
    """Unused blobs (older than ``older_than``, if given) and dangling refs of one repo, or the
    whole repo when it holds no snapshot; under its lock. A repo a job is writing into is skipped
    (its leftovers are pruned another time); one with a linked folder or an unreadable snapshot
    is listed as left (a blob it uses could look unused)."""
    for name in _REPO_FOLDERS:
        link = linked_folder(repo, name)
        if link is not None:
            return [Leftover("repo", where, str(repo), 0, skipped=f"{link} is a link: not pruned through it")]
    try:
        with _held(models, repo_lock_name(repo), repo.name, probe=dry_run):
            return _prune_repo_locked(models, repo, where, dry_run, older_than, now)
    except Busy:
        return []  # a job is writing into it: nothing of it is a leftover now


def _prune_repo_locked(
    models: Path, repo: Path, where: str, dry_run: bool, older_than: float | None, now: float
) -> list[Leftover]:
    sizes = blob_sizes(repo)
    used: set[str] = set()
    try:
        snaps = {e.name: Path(e.path) for e in snapshot_dirs(repo, strict=True)}
        for path in snaps.values():
            used |= snapshot_links(path, strict=True)[0]
    except OSError as exc:
        why = f"cannot read {exc.filename or repo} ({exc.strerror}): the blobs its snapshots use are not known"
        return [Leftover("repo", where, str(repo), 0, skipped=why)]
    empty = not snaps
    found = []
    if empty:
        if not _older(repo, older_than, now):
            return []
        found.append(Leftover("empty repo", where, str(repo), sum(sizes.values()), "no snapshot left"))
    unused = sorted(b for b in sizes if b not in used and _older(repo / "blobs" / b, older_than, now))
    if unused and not empty:
        found.append(
            Leftover("blobs", where, str(repo / "blobs"), sum(sizes[b] for b in unused),
                     f"{len(unused)} blob(s) of {repo_id_of(repo.name)} no snapshot uses")
        )
    dangling = [] if empty else sorted(
        (ref, commit) for commit, refs in refs_by_commit(repo).items() if commit not in snaps for ref in refs
    )
    for ref, commit in dangling:
        found.append(Leftover("ref", where, str(repo / "refs" / ref), 0, f"points at {commit[:12]}, gone"))
    if not found:
        return found
    try:  # a dry run says what a real run would leave, too
        if empty:
            _require_writable_tree(repo, models, where)
        else:
            for name in ("blobs", "refs"):
                if (repo / name).is_dir():
                    _require_writable_tree(repo / name, repo / name, where)
    except NotWritable as exc:
        for item in found:
            item.skipped = str(exc)
        return found
    if dry_run:
        return found
    try:
        if empty:
            remove_tree(repo)
        else:
            for blob in unused:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(repo / "blobs" / blob)
            for ref, _commit in dangling:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(repo / "refs" / ref)
    except OSError as exc:  # (an NFS .nfsXXXX file in a folder, an I/O error): the rest is pruned
        for item in found:
            item.skipped = f"not removable: {exc.strerror or exc} ({exc.filename})"
        return found
    for item in found:
        item.removed = True
    return found


def _stale_lock(folder: Path, name: str, path: Path, where: str, dry_run: bool) -> Leftover:
    """A lock file no job holds (left by a job killed outright): taken, then released, which removes it."""
    return _under_lock(folder, name, Leftover("lock", where, str(path), 0), dry_run, None)
