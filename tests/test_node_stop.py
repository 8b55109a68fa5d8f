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
        publish.publish_lock(tmp_path, "repo@commit"),
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
