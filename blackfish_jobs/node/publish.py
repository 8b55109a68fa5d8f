"""Publishing into a shared cache: publish locks, atomic renames, public modes.

Whatever a job makes appears under its final name in one ``rename`` (or hard link) once it is
complete, so a job that fails, times out or is cancelled leaves nothing half-published; jobs
publishing the same artefact serialise on a lock that works across nodes.

**Group mode** (:func:`group_mode`, the setting ``shared_group``): several admins keep one shared
cache. Directories this job creates are then group-owned, setgid and group-writable (2775), so
another member can replace (``--force``) or remove what this one published; files stay read-only
for all (755, as Blackfish's admin guide has it), and lock files are group-writable.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import grp
import os
import re
import shutil
import stat
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from ..errors import TaskError
from .runtime import cleanup_on_stop, stop_deferred

PUBLIC_DIR_MODE = 0o755
PUBLIC_FILE_MODE = 0o755  # Blackfish's admin guide: chmod -R 755 on shared artefacts
GROUP_DIR_MODE = 0o2775  # group mode: setgid (new entries inherit the group) and group-writable
LOCK_MODE, GROUP_LOCK_MODE = 0o644, 0o664  # readable by all: a waiter can tell a stale lock file

#: The shared cache's group id while :func:`group_mode` is on (a job is one process: like the
#: umask it sets, this is process-wide).
_gid: int | None = None


@contextlib.contextmanager
def group_mode(group: str | None) -> Iterator[None]:
    """Publish for a group of admins (``shared_group``); a no-op for ``None``.

    The umask becomes 002 for the job, so what huggingface_hub or apptainer create (and a killed
    job leaves behind) can be removed by another member; directories this job creates are
    chowned to the group and made 2775.
    """
    global _gid
    if group is None:
        yield
        return
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        raise TaskError(f"shared_group {group!r}: no such group on node {os.uname().nodename}") from None
    previous = os.umask(0o002)
    _gid = gid
    try:
        yield
    finally:
        _gid = None
        os.umask(previous)


def _dir_mode() -> int:
    return GROUP_DIR_MODE if _gid is not None else PUBLIC_DIR_MODE


def _own(path: str | os.PathLike[str]) -> None:
    """In group mode, give what this job created to the group (its owner is a member: allowed)."""
    if _gid is not None:
        os.chown(path, -1, _gid, follow_symlinks=False)


def ensure_public_dir(path: Path) -> None:
    """``mkdir -p`` whose new directories are 755 whatever the umask (others must read them);
    2775 and the group's in :func:`group_mode`. Existing directories are left as they are."""
    missing = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir()
            _own(directory)  # before the chmod: a chown may clear the setgid bit
            os.chmod(directory, _dir_mode())


def publish_file(partial: Path, target: Path, force: bool) -> bool:
    """Move a complete file into place atomically. Returns False if another job won the race.

    Without ``force`` a hard link gives a no-clobber publish (the first complete file wins and a
    reader never sees a replaced file); with ``force`` ``rename`` replaces the old file at once.
    """
    _own(partial)
    os.chmod(partial, PUBLIC_FILE_MODE)
    if force:
        os.replace(partial, target)
        return True
    try:
        os.link(partial, target)
    except FileExistsError:
        return False
    except OSError:  # filesystems without hard links: rename, re-checking just before
        if target.exists():
            return False
        os.replace(partial, target)
        return True
    partial.unlink()
    return True


@contextlib.contextmanager
def publish_lock(
    directory: Path,
    name: str,
    poll: float = 1.0,
    release_on_stop: bool = False,
    *,
    shared: bool = False,
    wait: bool = True,
) -> Iterator[bool]:
    """Hold an exclusive POSIX ``fcntl`` lock on ``<directory>/.bfjobs-lock-<name>``.

    ``fcntl`` record locks work across nodes on NFS, GPFS and Lustre, where ``flock`` can be a
    no-op (huggingface_hub #4228). The lock file exists only while held: the holder unlinks it
    before unlocking, and a waiter that wins a lock on an already-unlinked file retries. A file
    left by a job killed outright (SIGKILL) is taken over by the next job of its owner (or, in
    group mode, of any member); another user's job stops at once with the ``rm`` to run
    (:func:`_check_foreign`) instead of waiting for ever (huggingface_hub #2580). A stop signal
    cannot fall between taking the lock and noting it, nor inside the release
    (:func:`~.runtime.stop_deferred`), so a cancelled job never leaves the file behind.

    ``release_on_stop``: release at once when a stop signal arrives (:func:`~.runtime.cleanup_on_stop`),
    for work that cannot unwind quickly (huggingface_hub's thread pool); only where nothing
    under the lock still needs it while unwinding.

    ``shared``: a shared lock instead (many holders at once; :func:`repo_lock`); the last holder
    to leave removes the file (it finds out by upgrading to an exclusive lock on the way out).
    ``wait=False``: one attempt; the block gets whether the lock is held (``bfjobs cache``, which
    refuses what a running job holds rather than waiting for it).
    """
    path = directory / f".bfjobs-lock-{name}"
    held: list[int] = []  # the locked descriptor, once the lock is ours

    def release() -> None:  # at the end, or at once on a stop signal; a no-op once done
        with stop_deferred():
            if held:
                alone = _alone(held[0], shared)
                if alone:
                    with contextlib.suppress(OSError):
                        os.unlink(path)
                os.close(held[0])
                held.clear()
                if not alone:
                    _remove_if_unheld(path)

    with contextlib.ExitStack() as stack:
        stack.callback(release)  # registered before the lock is taken: no moment it is not covered
        if release_on_stop:
            stack.enter_context(cleanup_on_stop(release))
        pause = min(0.05, poll)
        while not _try_lock(path, held, shared):
            if not wait:
                break
            time.sleep(pause)
            pause = min(pause * 2, poll)
        yield bool(held)


def repo_lock_name(repo: Path) -> str:
    """The name of the lock that covers a model repo's blobs (``models--ns--name``): downloads
    into any commit of the repo hold it shared, ``bfjobs cache`` exclusively while it removes
    blobs (which are shared across commits, where the publish lock is per commit)."""
    return repo.name


def _remove_if_unheld(path: Path) -> None:
    """After leaving a shared lock that others held a moment ago: if they left meanwhile (two
    holders leaving at once each saw the other), remove the file as its last holder would: take
    it exclusively without waiting, check it is still the file at ``path``, unlink, close."""
    try:
        fd = os.open(path, os.O_RDWR)  # never created here
    except OSError:
        return
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        same = os.fstat(fd)
        current = os.stat(path)
        if (same.st_ino, same.st_dev) == (current.st_ino, current.st_dev):
            os.unlink(path)
    except OSError:
        pass  # held again, or gone: nothing to do
    finally:
        os.close(fd)


#: ``struct flock`` for F_GETLK and where its ``l_type`` is: Linux (short type, short whence,
#: off_t start, off_t len, pid_t pid), macOS and the BSDs (off_t start, off_t len, pid_t pid,
#: short type, short whence).
_FLOCK = ("hhqqi4x", 0) if sys.platform.startswith("linux") else ("qqihh", 3)


def held_by_other(path: Path) -> bool:
    """Whether another process holds any lock (shared or exclusive) on the file ``path``.

    Asked with ``F_GETLK`` for a write lock, which works on a descriptor opened read-only: a user
    who cannot open another user's lock file for writing still sees its shared holders (a test
    lock of our own, shared, would not conflict with them). False when there is no such file.
    Never ask about a file this process holds a lock on: closing the descriptor opened here would
    release it (POSIX locks belong to the process and the file, not the descriptor).
    """
    import struct

    layout, at = _FLOCK
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        values = [0, 0, 0, fcntl.F_WRLCK, os.SEEK_SET] if at else [fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0]
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, struct.pack(layout, *values))
        return struct.unpack(layout, answer)[at] != fcntl.F_UNLCK
    finally:
        os.close(fd)


def _alone(fd: int, shared: bool) -> bool:
    """Whether the holder of ``fd`` may remove the lock file: always for an exclusive lock; for a
    shared one only when no other holder is left (the upgrade to exclusive succeeds)."""
    if not shared:
        return True
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _try_lock(path: Path, held: list[int], shared: bool = False) -> bool:
    """One attempt at :func:`publish_lock`'s lock; on success its descriptor is put in ``held``."""
    with stop_deferred():
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, _lock_mode())
        except PermissionError:  # another user's lock file: held by their job, or left by a killed one
            _check_foreign(path)
            return False
        opened = os.fstat(fd)
        if opened.st_uid == os.geteuid():  # ours: readable by all (whatever the umask), the group's in group mode
            with contextlib.suppress(OSError):
                if _gid is not None and opened.st_gid != _gid:
                    os.fchown(fd, -1, _gid)
                os.fchmod(fd, _lock_mode())
        try:
            fcntl.lockf(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EACCES, errno.EAGAIN):  # another holder
                return False
            raise
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        if current is None or (current.st_ino, current.st_dev) != (opened.st_ino, opened.st_dev):
            os.close(fd)  # the previous holder removed this file after we opened it: start again
            return False
        held.append(fd)
        return True


def _lock_mode() -> int:
    return GROUP_LOCK_MODE if _gid is not None else LOCK_MODE


#: A lock file of another user that no job holds and that is older than this was left by a
#: killed job (a live holder locks its file within moments of creating it).
STALE_AFTER_S = 10.0


def _check_foreign(path: Path) -> None:
    """A lock file this user cannot open for writing: return (and wait) while a job holds it or
    it is new; fail at once, naming the ``rm`` to run, when no job holds it (a job killed outright
    left it) or this user cannot even read it.

    It is never removed here: another user's job cannot unlink it safely (between checking that
    no job holds a path and unlinking it, a new holder may take the path). In group mode lock files
    are the group's (664), so a member's job simply takes over one a killed job left.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:  # no lock file: we could not create one
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise TaskError(f"cannot create the publish lock {path}: {path.parent} is not writable by you") from None
        return  # released meanwhile: try again
    except PermissionError:
        if _age(path) >= STALE_AFTER_S:
            raise TaskError(_foreign_message(path, "cannot be read by you")) from None
        return
    os.close(fd)
    if held_by_other(path):
        return  # held by a running job (exclusively, or shared by downloads into its repo): wait for it
    if _age(path) >= STALE_AFTER_S:
        raise TaskError(_foreign_message(path, "is held by no job (a job killed outright left it)"))


def _age(path: Path) -> float:
    try:
        return time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        return 0.0


def _foreign_message(path: Path, problem: str) -> str:
    try:
        st = os.stat(path)
        owner = f"uid {st.st_uid}, mode {stat.filemode(st.st_mode)}"
    except OSError:
        owner = "unknown owner"
    return (
        f"the publish lock {path} ({owner}) {problem}, and only its owner can take it over: "
        f"if no job of theirs is running, remove it (rm {path}) and submit again; with shared_group set, "
        "lock files are the group's"
    )


def remove_stale(directory: Path, pattern: re.Pattern[str]) -> list[str]:
    """Remove leftovers of killed jobs (only called with the artefact's publish lock held).

    Returns what was removed. What cannot be (another user's staging folder whose inner folders
    are not the group's, from before group mode) is named on stderr and left: it is hidden, and
    no reader takes it for an artefact.
    """
    removed, left = [], []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if pattern.fullmatch(entry.name):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
            (left if os.path.lexists(entry.path) else removed).append(entry.name)
    if removed:
        print(f"bfjobs: removed leftovers of interrupted jobs: {', '.join(removed)}", flush=True)
    if left:
        print(f"bfjobs: warning: cannot remove leftovers of interrupted jobs in {directory} (not yours, and "
              f"not the group's): {', '.join(left)}", file=sys.stderr, flush=True)
    return removed


def chmod_public(root: Path) -> None:
    """``chmod -R 755`` on a tree this job created (a staged repo folder; Blackfish's admin guide):
    directories 2775 and the group's in :func:`group_mode`; symlinks left alone.

    huggingface_hub writes some files 0600 whatever the umask (its issue #1141); other users of
    a shared cache must read them.
    """
    for dirpath, _dirnames, filenames in os.walk(root):
        _own(dirpath)
        os.chmod(dirpath, _dir_mode())
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                _own(path)
                os.chmod(path, PUBLIC_FILE_MODE)


def write_ref(repo: Path, ref: str, commit: str) -> None:
    """Record ``refs/<ref>`` atomically (write a temporary file, then rename)."""
    path = repo / "refs" / ref
    ensure_public_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(commit)
    _own(tmp)
    os.chmod(tmp, PUBLIC_FILE_MODE)
    os.replace(tmp, path)


def publish_snapshot(staged: Path, repo: Path, commit: str, *, force: bool) -> bool:
    """Move a complete staged repo folder's blobs, then its snapshot's files, into ``repo``.

    Blobs are content-addressed (same name, same bytes), so existing ones are kept (``force``
    replaces them, one ``rename`` each). A new snapshot folder appears in one ``rename`` once
    every blob it links to is in place; into an existing one each file's link is renamed in on
    its own (filters are additive, as with ``hf download``): a reader sees each file whole or
    not at all, never a dangling link, and files the staged download did not select are never
    removed. Returns whether anything was published (False when another job had done it all).
    """
    for sub in ("blobs", "snapshots", "refs"):
        ensure_public_dir(repo / sub)
    chmod_public(staged)
    for kind in ("blobs", "trees"):
        source = staged / kind
        if not source.is_dir():
            continue
        ensure_public_dir(repo / kind)
        for entry in source.iterdir():
            dest = repo / kind / entry.name
            if entry.is_symlink():
                continue  # a blob the repo already had, linked in by _link_known_blobs
            if force or not dest.exists():
                os.replace(entry, dest)
    final = repo / "snapshots" / commit
    new = staged / "snapshots" / commit
    if not new.is_dir():
        return False  # the selection matched no file: nothing staged
    if not final.exists():
        try:
            os.rename(new, final)
            return True
        except OSError:  # ENOTEMPTY/EEXIST: a concurrent job published this commit a moment ago
            if not final.is_dir():
                raise
    return _merge_snapshot(new, final, force=force)


def _merge_snapshot(new: Path, final: Path, *, force: bool) -> bool:
    """Rename each staged file (a relative link to ``../../blobs/…``) into an existing snapshot.

    The staged tree has the same depth, so each link's text resolves from its new place too.
    Files already there (resolving) are kept unless ``force``; a dangling one is replaced.
    """
    published = False
    for dirpath, _dirs, names in os.walk(new):
        rel = Path(dirpath).relative_to(new)
        if names:
            ensure_public_dir(final / rel)
        for name in names:
            dest = final / rel / name
            if not force and dest.exists():
                continue
            os.replace(Path(dirpath) / name, dest)
            published = True
    return published
