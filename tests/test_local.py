"""The built-in local profile: the same pull through submitit's LocalExecutor, no Slurm."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat

import pytest
from support.site import json_job, wait_for

URI = "docker://ghcr.io/huggingface/text-generation-inference:latest"


@pytest.fixture(autouse=True)
def _no_slurm(local_site):
    """Every test here is about the built-in local profile: a machine without Slurm's commands."""


def images(site):
    d = site.app_dir / "images"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def test_local_pull_end_to_end(site):
    proc = site.bfjobs("submit", "pull-image", URI, "--wait", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "built-in 'local' profile (no sbatch on PATH" in proc.stderr
    job = json_job(proc.stdout)
    target = site.app_dir.resolve() / "images" / "text-generation-inference_latest.sif"
    assert job["state"] == "COMPLETED" and job["backend"] == "local" and job["slurm_job_id"] is None
    assert job["result"]["path"] == str(target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert job["result"]["size"] == target.stat().st_size
    assert images(site) == [target.name]  # nothing else (no partial file) published
    # Apptainer's cache and temp dirs were job-private, outside home and caches, and removed.
    [call] = site.apptainer_calls()
    for var in ("APPTAINER_CACHEDIR", "APPTAINER_TMPDIR"):
        path = call[var]
        assert path and not path.startswith(str(site.root))
        assert not os.path.exists(path)
    # the DB row is there, in bfjobs' table inside Blackfish's app.sqlite
    conn = sqlite3.connect(site.db_path)
    assert conn.execute("SELECT state, kind FROM bfjobs_jobs WHERE id = ?", (job["id"],)).fetchone() == (
        "COMPLETED", "pull-image",
    )
    # a second request finds it and submits nothing
    again = site.bfjobs("submit", "pull-image", URI)
    assert again.returncode == 0 and "already present" in again.stdout
    assert len(site.apptainer_calls()) == 1


def test_local_failed_pull_publishes_nothing(site):
    assert site.failed_pull()["backend"] == "local"
    assert images(site) == []


def test_running_local_job_seen_from_a_new_process(site):
    submitted = site.bfjobs("submit", "pull-image", "docker://alpine:slow", "--json", FAKE_APPTAINER_SLEEP="4")
    assert submitted.returncode == 0, submitted.stderr
    job = json_job(submitted.stdout)
    status = json_job(site.bfjobs("status", job["id"], "--json").stdout)
    assert status["state"] == "RUNNING"  # submitit's re-attached LocalJob would say "done" here
    final = wait_for(
        lambda: (s := json_job(site.bfjobs("status", job["id"], "--json").stdout))["state"] != "RUNNING" and s,
        timeout=60,
    )
    assert final["state"] == "COMPLETED"
    assert images(site) == ["alpine_slow.sif"]


def test_killed_local_job_is_failed_not_running(site):
    submitted = site.bfjobs("submit", "pull-image", "docker://alpine:killed", "--json", FAKE_APPTAINER_SLEEP="30")
    job = json_job(submitted.stdout)
    wait_for(lambda: site.apptainer_calls(), timeout=30)
    os.killpg(job["local_pid"], signal.SIGKILL)  # the controller runs in its own session
    final = wait_for(
        lambda: (s := json_job(site.bfjobs("status", job["id"], "--json").stdout))["state"] != "RUNNING" and s,
        timeout=30,
    )
    assert final["state"] == "FAILED"
    assert "ended without a result" in final["reason"]


def test_local_download_model(site, hub):
    """The built-in local profile downloads a snapshot with the real client, no Slurm."""
    proc = site.bfjobs("submit", "download-model", "bfjobs-test/tiny-model", "--revision", "v1.0", "--wait", "--json",
                       HF_ENDPOINT=hub.url)
    assert proc.returncode == 0, proc.stderr
    job = json_job(proc.stdout)
    commit = hub.get_repo("bfjobs-test/tiny-model").tags["v1.0"]
    assert job["state"] == "COMPLETED" and job["result"]["commit"] == commit
    snapshot = site.app_dir.resolve() / "models" / "models--bfjobs-test--tiny-model" / "snapshots" / commit
    assert job["result"]["snapshot"] == str(snapshot)
    assert (snapshot / "pytorch_model.bin").stat().st_size == 256 * 1024


def test_waiting_for_a_local_job_polls_from_a_fifth_of_a_second(site, monkeypatch):
    """No scheduler is asked about a local job, so its wait starts at 0.2 s and stays under 2 s."""
    from blackfish_jobs import tracking
    from blackfish_jobs.backends.local import LocalBackend
    from blackfish_jobs.store import Database

    submitted = site.bfjobs("submit", "pull-image", "docker://alpine:brief", "--json", FAKE_APPTAINER_SLEEP="1")
    job = json_job(submitted.stdout)
    pauses: list[float] = []
    real_sleep = tracking.time.sleep
    monkeypatch.setattr(tracking.time, "sleep", lambda s: (pauses.append(s), real_sleep(s)))
    [row] = tracking.wait(Database(), [job["id"]], timeout=60)
    assert row.state == "COMPLETED"
    assert pauses[0] == LocalBackend.FIRST_DELAY and max(pauses) <= LocalBackend.MAX_DELAY, pauses
