"""A job told to stop (scancel, time limit) cleans up at once, not after its running downloads.

huggingface_hub's thread pool waits for every running file download before the exception a
signal raises reaches bfjobs' ``finally`` blocks; with Slurm's SIGKILL ``KillWait`` seconds
after SIGTERM, the staging folder and the lock file would stay behind. These tests send the
process a real SIGTERM while a worker thread is still busy.
"""

from __future__ import annotations

import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from blackfish_jobs.node import publish, runtime


def _sigterm_soon() -> None:
    threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM)).start()


def test_sigterm_removes_staging_while_a_worker_is_still_busy(tmp_path):
    staging = tmp_path / ".bfjobs-staging-x"
    (staging / "blobs").mkdir(parents=True)
    busy = threading.Event()
    seen_while_busy: list[bool] = []
    before = signal.getsignal(signal.SIGTERM)
    with (
        pytest.raises(runtime.Interrupted, match="received SIGTERM"),
        runtime.stop_on_signals(),
        runtime.removed_whatever_happens(staging),
        ThreadPoolExecutor(1) as pool,
    ):
        running = pool.submit(busy.wait, 30)  # a download that is not near its end
        _sigterm_soon()
        try:
            running.result()
        finally:  # before the pool's exit joins the worker
            seen_while_busy.append(staging.exists())
            busy.set()
    assert seen_while_busy == [False]
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is restored
    assert runtime._on_stop == []


def test_sigterm_releases_the_publish_lock_at_once_and_only_once(tmp_path):
    busy = threading.Event()
    lock_file = tmp_path / ".bfjobs-lock-repo@commit"
    after_signal: list[bool] = []
    with (
        pytest.raises(runtime.Interrupted),
        runtime.stop_on_signals(),
        publish.publish_lock(tmp_path, "repo@commit", release_on_stop=True),
        ThreadPoolExecutor(1) as pool,
    ):
        assert lock_file.exists()
        running = pool.submit(busy.wait, 30)
        _sigterm_soon()
        try:
            running.result()
        finally:
            after_signal.append(lock_file.exists())
            # another job takes the lock now, although this one has not unwound yet
            with publish.publish_lock(tmp_path, "repo@commit", poll=0.05):
                after_signal.append(lock_file.exists())
            busy.set()
    assert after_signal == [False, True]
    assert not lock_file.exists()


def test_clean_ups_run_once_without_a_signal(tmp_path):
    ran: list[str] = []
    with runtime.stop_on_signals(), runtime.cleanup_on_stop(lambda: ran.append("stop")):
        pass
    folder = tmp_path / "scratch"
    folder.mkdir()
    with runtime.removed_whatever_happens(folder):
        pass
    assert ran == [] and not folder.exists() and runtime._on_stop == []


def test_without_release_on_stop_the_lock_is_held_until_the_block_unwinds(tmp_path):
    """A pull's roll-back (under the lock) runs while unwinding: the lock must still be held then."""
    lock_file = tmp_path / ".bfjobs-lock-image.sif"
    while_unwinding: list[bool] = []
    with pytest.raises(runtime.Interrupted), runtime.stop_on_signals(), publish.publish_lock(tmp_path, "image.sif"):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            threading.Event().wait(5)  # the handler raises here
        finally:
            while_unwinding.append(lock_file.exists())
    assert while_unwinding == [True]
    assert not lock_file.exists()


@pytest.mark.parametrize("release_on_stop", [False, True])
def test_a_signal_right_after_the_lock_is_taken_leaves_no_lock_file(tmp_path, monkeypatch, release_on_stop):
    """The moment between ``lockf`` and noting the lock as held: the signal waits for the note."""
    real_lockf = publish.fcntl.lockf
    ran_on: list[str] = []

    def lockf_then_signal(fd: int, cmd: int) -> None:
        real_lockf(fd, cmd)
        ran_on.append("locked")
        os.kill(os.getpid(), signal.SIGTERM)  # Python runs the handler at the next bytecode

    monkeypatch.setattr(publish.fcntl, "lockf", lockf_then_signal)
    body_ran = False
    with (
        pytest.raises(runtime.Interrupted),
        runtime.stop_on_signals(),
        publish.publish_lock(tmp_path, "repo@commit", release_on_stop=release_on_stop),
    ):
        body_ran = True
    assert ran_on == ["locked"] and not body_ran
    assert list(tmp_path.iterdir()) == []  # no lock file left to block another user


def test_a_second_signal_during_the_clean_ups_does_not_cut_them(tmp_path, capsys):
    ran: list[str] = []

    def first() -> None:
        ran.append("first")

    def second_signal_then_work() -> None:  # runs first (innermost)
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # bytecodes at which a re-entrant handler would run
            pass
        ran.append("second")

    with (
        pytest.raises(runtime.Interrupted),
        runtime.stop_on_signals(),
        runtime.cleanup_on_stop(first),
        runtime.cleanup_on_stop(second_signal_then_work),
    ):
        os.kill(os.getpid(), signal.SIGTERM)
        threading.Event().wait(5)
    assert ran == ["second", "first"]
    assert "clean-up on stop failed" not in capsys.readouterr().err
    assert not runtime._stopping and runtime._on_stop == []


def test_a_stop_kills_the_child_before_the_clean_ups_so_nothing_is_recreated(tmp_path):
    """A child that goes on writing after a stop (huggingface_hub's download threads) would
    recreate the staging folder the clean-up removed, and Slurm's SIGKILL would leave it: the stop
    kills and reaps the child first (run_child), then removes the folder. Only the job's own
    process is signalled here (as submitit's local backend does), so the kill is bfjobs'."""
    import subprocess
    import sys
    import time

    staging = tmp_path / ".bfjobs-staging-x"
    pid_file = tmp_path / "child.pid"
    child = f"""
import os, time
from pathlib import Path
Path({str(pid_file)!r}).write_text(str(os.getpid()))
while True:  # a download finishing a small file now and then: it writes into the staging folder
    (Path({str(staging)!r}) / "snapshots" / "c").mkdir(parents=True, exist_ok=True)
    time.sleep(0.001)
"""
    code = f"""
import sys
from pathlib import Path
from blackfish_jobs.node import publish, runtime
staging = Path({str(staging)!r})
try:
    with runtime.stop_on_signals(), publish.publish_lock(staging.parent, "k", release_on_stop=True):
        with runtime.removed_whatever_happens(staging):
            print("working", flush=True)
            runtime.run_child([sys.executable, "-c", {child!r}], b"")
except runtime.Interrupted as exc:
    print(exc, file=sys.stderr)
    sys.exit(143)
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "working"
    deadline = time.monotonic() + 10
    while not (pid_file.exists() and (staging / "snapshots").exists()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (staging / "snapshots").exists()
    child_pid = int(pid_file.read_text())
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=10)
    assert proc.returncode == 143, err
    assert "received SIGTERM: job cancelled or out of time" in err
    with pytest.raises(ProcessLookupError):
        os.kill(child_pid, 0)  # killed and reaped: no zombie either
    time.sleep(0.2)
    assert not staging.exists() and not (tmp_path / ".bfjobs-lock-k").exists()


def test_run_child_returns_the_status_and_stdout_and_feeds_stdin(tmp_path):
    import sys

    status, out = runtime.run_child(
        [sys.executable, "-c", "import sys; d = sys.stdin.read(); print(d.upper()); sys.exit(3)"], b"abc"
    )
    assert (status, out.strip()) == (3, b"ABC")
