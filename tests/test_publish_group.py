"""The node side of group mode (``shared_group``) and of lock files another user left behind.

Group mode: what a job creates in the shared cache is the group's (directories 2775 with setgid,
files 755, lock files 664), and the umask is 002 only while the job publishes. Lock files of
another user that this one cannot open for writing: one held by a running job (or just made) is
waited for; one no job holds, or one this user cannot read, is an error at once naming the ``rm``
to run, never a wait for ever. The other user is a real one (``nobody``), running the node code
from a world-readable copy.
"""

from __future__ import annotations

import grp
import os
import shutil
import stat
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from support.site import REPO, skip_or_fail
from support.unprivileged import SYSTEM_PYTHON

from blackfish_jobs.errors import TaskError
from blackfish_jobs.node import publish

GROUP = "users"  # any group but root's own; Debian has it
RUNUSER = shutil.which("runuser") or "runuser"


def _mode(path: Path) -> tuple[int, int]:
    st = path.lstat()
    return stat.S_IMODE(st.st_mode), st.st_gid


def test_group_mode_gives_what_the_job_creates_to_the_group(tmp_path):
    gid = grp.getgrnam(GROUP).gr_gid
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o755)
    models = cache / "models"
    before = os.umask(0o022)
    try:
        with publish.group_mode(GROUP):
            assert os.umask(0o002) == 0o002  # the job's umask while it publishes
            publish.ensure_public_dir(models / "models--a--b")
            staged = models / ".bfjobs-staging-x" / "models--a--b"
            (staged / "snapshots" / "c").mkdir(parents=True)
            (staged / "snapshots" / "c" / "config.json").write_text("{}")
            os.chmod(staged / "snapshots" / "c" / "config.json", 0o600)  # as huggingface_hub writes some
            publish.chmod_public(staged)
            with publish.publish_lock(models, "k"):
                lock = _mode(models / ".bfjobs-lock-k")
        assert os.umask(0o022) == 0o022  # restored
    finally:
        os.umask(before)
    assert lock == (0o664, gid)
    for directory in (models, models / "models--a--b", staged, staged / "snapshots" / "c"):
        assert _mode(directory) == (0o2775, gid), directory
    assert _mode(staged / "snapshots" / "c" / "config.json") == (0o755, gid)  # read-only for all but its owner
    assert _mode(cache) == (0o755, os.getgid())  # existing folders are not the job's to change


def test_without_group_mode_everything_stays_owner_only(tmp_path):
    publish.ensure_public_dir(tmp_path / "models")
    with publish.publish_lock(tmp_path / "models", "k"):
        assert _mode(tmp_path / "models" / ".bfjobs-lock-k") == (0o644, os.getgid())
    assert _mode(tmp_path / "models") == (0o755, os.getgid())
    assert not (tmp_path / "models" / ".bfjobs-lock-k").exists()


def test_an_unknown_group_fails_the_job_in_one_line():
    with (
        pytest.raises(TaskError, match="shared_group 'no-such-group-x': no such group on node"),
        publish.group_mode("no-such-group-x"),
    ):
        pass


# ----------------------------------------------------------------------------- another user's lock file


@pytest.fixture
def node_copy(tmp_path_factory) -> Path:
    """A world-readable copy of the package (the node side needs nothing but the standard library)."""
    if os.geteuid() != 0 or shutil.which("runuser") is None or not os.access(SYSTEM_PYTHON, os.X_OK):
        skip_or_fail("needs root, runuser and Debian's python3.11")
    root = tmp_path_factory.mktemp("node-copy")
    shutil.copytree(REPO / "blackfish_jobs", root / "blackfish_jobs", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(["chmod", "-R", "a+rX", str(root)], check=True)
    for parent in (root, *root.parents):
        if parent != Path("/"):
            parent.chmod(parent.stat().st_mode | 0o005)
    return root


def _lock_as_nobody(node_copy: Path, directory: Path, *, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Take and release ``directory``'s lock ``k`` as user nobody (at most ``timeout`` seconds)."""
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from blackfish_jobs.errors import TaskError
        from blackfish_jobs.node import publish
        started = time.monotonic()
        try:
            with publish.publish_lock(Path({str(directory)!r}), "k", poll=0.1):
                print(f"locked after {{time.monotonic() - started:.1f}}s", flush=True)
        except TaskError as exc:
            print(exc, file=sys.stderr)
            sys.exit(3)
    """)
    return subprocess.run(
        [RUNUSER, "-u", "nobody", "--", SYSTEM_PYTHON, "-c", code],
        capture_output=True, text=True, timeout=timeout, cwd="/",
        env={"PYTHONPATH": str(node_copy), "PATH": "/usr/bin:/bin"},
    )


def _shared_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "shared"
    directory.mkdir()
    directory.chmod(0o777)  # writable by the other user too, as a group's folder is for its members
    for parent in directory.parents:
        if parent != Path("/"):
            parent.chmod(parent.stat().st_mode | 0o005)
    return directory


def _left_behind(directory: Path, mode: int, age: float = 60) -> Path:
    """A lock file of root's, as a job killed outright leaves it, ``age`` seconds old."""
    left = directory / ".bfjobs-lock-k"
    left.write_text("")
    left.chmod(mode)
    then = time.time() - age
    os.utime(left, (then, then))
    return left


def test_a_lock_file_another_users_killed_job_left_is_an_error_at_once(node_copy, tmp_path):
    directory = _shared_dir(tmp_path)
    left = _left_behind(directory, 0o644)  # nobody cannot open it for writing (it used to wait for ever)
    proc = _lock_as_nobody(node_copy, directory, timeout=20)
    assert proc.returncode == 3, proc
    [line] = proc.stderr.strip().splitlines()
    assert f"the publish lock {left} (uid 0, mode -rw-r--r--) is held by no job" in line and f"rm {left}" in line
    assert left.exists()  # another user's file is never removed by this one


def test_a_lock_file_the_user_cannot_read_is_an_error_at_once(node_copy, tmp_path):
    directory = _shared_dir(tmp_path)
    left = _left_behind(directory, 0o600)
    proc = _lock_as_nobody(node_copy, directory, timeout=20)
    assert proc.returncode == 3, proc
    [line] = proc.stderr.strip().splitlines()
    assert f"the publish lock {left}" in line and "cannot be read by you" in line and f"rm {left}" in line


def test_a_folder_the_user_cannot_write_is_an_error_at_once(node_copy, tmp_path):
    directory = _shared_dir(tmp_path)
    directory.chmod(0o755)  # root's: no lock file can be made in it
    proc = _lock_as_nobody(node_copy, directory, timeout=20)
    assert proc.returncode == 3, proc
    assert f"cannot create the publish lock {directory}/.bfjobs-lock-k: {directory} is not writable" in proc.stderr


def _waiter(node_copy: Path, directory: Path) -> subprocess.Popen[str]:
    """nobody's job waiting for ``directory``'s lock ``k``: returns once it has started trying."""
    proc = subprocess.Popen(
        [RUNUSER, "-u", "nobody", "--", SYSTEM_PYTHON, "-c",
         "from pathlib import Path; from blackfish_jobs.node import publish\n"
         "print('trying', flush=True)\n"
         f"with publish.publish_lock(Path({str(directory)!r}), 'k', poll=0.1): print('locked', flush=True)"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/",
        env={"PYTHONPATH": str(node_copy), "PATH": "/usr/bin:/bin"},
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "trying"
    return proc


def test_a_lock_file_another_user_holds_is_waited_for(node_copy, tmp_path):
    directory = _shared_dir(tmp_path)
    with publish.publish_lock(directory, "k"):  # held by this (root's) process
        waiter = _waiter(node_copy, directory)
        time.sleep(1.5)
        assert waiter.poll() is None  # still waiting: the lock is held
    out, err = waiter.communicate(timeout=30)
    assert waiter.returncode == 0 and out.strip() == "locked", err
    assert not (directory / ".bfjobs-lock-k").exists()


def test_a_new_lock_file_no_job_holds_yet_is_waited_for(node_copy, tmp_path):
    """Between making its lock file and locking it, a live job holds nothing: not an error."""
    directory = _shared_dir(tmp_path)
    left = _left_behind(directory, 0o644, age=0)
    waiter = _waiter(node_copy, directory)
    time.sleep(1.5)
    assert waiter.poll() is None
    left.unlink()  # its job went on, and released it
    out, err = waiter.communicate(timeout=30)
    assert waiter.returncode == 0 and out.strip() == "locked", err


def test_leftovers_another_user_cannot_remove_are_named_not_claimed(node_copy, tmp_path):
    """A killed job's staging folder from before group mode (inner folders 755, root's): nobody's
    job removes what it can and names the rest, instead of reporting it removed."""
    directory = _shared_dir(tmp_path)
    (directory / ".bfjobs-staging-x-1-0123abcd" / "blobs").mkdir(parents=True)
    (directory / ".bfjobs-staging-x-1-0123abcd" / "blobs" / "b").write_text("x")
    (directory / ".bfjobs-partial-1-0123abcd-x.sif").write_text("x")  # a file: its folder is writable
    code = (
        "import re; from pathlib import Path; from blackfish_jobs.node import publish\n"
        f"print(publish.remove_stale(Path({str(directory)!r}), re.compile(r'\\.bfjobs-(staging|partial)-.*')))"
    )
    proc = subprocess.run([RUNUSER, "-u", "nobody", "--", SYSTEM_PYTHON, "-c", code], capture_output=True,
                          text=True, cwd="/", env={"PYTHONPATH": str(node_copy), "PATH": "/usr/bin:/bin"}, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "['.bfjobs-partial-1-0123abcd-x.sif']"
    assert "cannot remove leftovers of interrupted jobs" in proc.stderr
    assert ".bfjobs-staging-x-1-0123abcd" in proc.stderr
    assert (directory / ".bfjobs-staging-x-1-0123abcd").exists()
