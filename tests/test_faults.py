"""Faults on the real cluster: each ends with a true DB state and nothing half-published.

Also the concurrency guarantees (in-flight requests, two jobs publishing one artefact, many
processes writing the DB) and `bfjobs verify` on corrupted artefacts.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.hub import DEMO_FOLDER, DEMO_REPO_ID
from support.site import REPO as PROJECT
from support.site import json_findings, json_job, json_jobs, tmpfs_over, wait_for
from support.slurm import task_pids

pytestmark = pytest.mark.slurm

FOLDER = DEMO_FOLDER
UNFINISHED = ("PENDING", "RUNNING")


def submit(site, *args: str, **env: str) -> dict:
    proc = site.bfjobs("submit", *args, "--json", **env)
    assert proc.stdout, proc.stderr
    return json_job(proc.stdout)


def status(site, job_id: str, **env: str) -> dict:
    proc = site.bfjobs("status", job_id, "--json", **env)
    assert proc.returncode == 0, proc.stderr
    return json_job(proc.stdout)


def final(site, job_id: str, timeout: float = 90, **env: str) -> dict:
    return wait_for(lambda: (s := status(site, job_id, **env))["state"] not in UNFINISHED and s, timeout=timeout)


def hidden_leftovers(directory: Path) -> list[str]:
    if not directory.exists():
        return []
    return sorted(p.name for p in directory.rglob(".bfjobs-*"))


def all_cmdlines() -> list[bytes]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                out.append((entry / "cmdline").read_bytes())
    return out


# --------------------------------------------------------------------------- cancel and kill


def test_scancel_during_download_then_retry(slurm_site, hub):
    site = slurm_site
    site.configure(hub)
    hub.delay_per_chunk = 0.3  # ~15 s for the 3 MB file
    job = submit(site, "download-model", DEMO_REPO_ID, "--shared")
    models = site.cache_dir / "models"
    wait_for(lambda: any(p.name.startswith(".bfjobs-staging-") for p in models.glob(".*")), timeout=60)
    subprocess.run(["scancel", job["slurm_job_id"]], check=True)
    end = final(site, job["id"])
    assert end["state"] == "CANCELLED"
    wait_for(lambda: hidden_leftovers(models) == [], timeout=30)  # staging and lock removed on SIGTERM
    assert not (models / FOLDER / "snapshots").exists() or os.listdir(models / FOLDER / "snapshots") == []
    hub.delay_per_chunk = 0
    again = submit(site, "download-model", DEMO_REPO_ID, "--shared", "--wait")
    assert again["state"] == "COMPLETED"


def test_sigkill_mid_download_then_retry_cleans_up(slurm_site, hub):
    site = slurm_site
    site.configure(hub)
    hub.delay_per_chunk = 0.3
    job = submit(site, "download-model", DEMO_REPO_ID, "--shared")
    models = site.cache_dir / "models"
    wait_for(lambda: any(p.name.startswith(".bfjobs-staging-") for p in models.glob(".*")), timeout=60)
    pid = wait_for(lambda: next(iter(task_pids(job["folder"])), None), timeout=30)
    os.kill(pid, signal.SIGKILL)  # no chance to clean up
    end = final(site, job["id"])
    assert end["state"] == "FAILED" and end["reason"]
    # nothing visible to Blackfish: no snapshot; the leftovers are hidden names only
    assert not (models / FOLDER / "snapshots").exists() or os.listdir(models / FOLDER / "snapshots") == []
    assert all(name.startswith(".bfjobs-") for name in os.listdir(models))
    hub.delay_per_chunk = 0
    again = submit(site, "download-model", DEMO_REPO_ID, "--shared", "--wait")
    assert again["state"] == "COMPLETED"
    assert hidden_leftovers(models) == []  # the retry removed the killed job's staging folder


def test_sigkill_mid_pull_then_retry_cleans_up(slurm_site):
    site = slurm_site
    site.configure()
    job = submit(site, "pull-image", "docker://alpine:killed", FAKE_APPTAINER_SLEEP="60")
    images = site.cache_dir / "images"
    wait_for(lambda: images.is_dir() and any(n.startswith(".bfjobs-partial-") for n in os.listdir(images)), 60)
    pid = wait_for(lambda: next(iter(task_pids(job["folder"])), None), timeout=30)
    os.kill(pid, signal.SIGKILL)
    assert final(site, job["id"])["state"] == "FAILED"
    assert all(name.startswith(".bfjobs-") for name in os.listdir(images))  # nothing under a real name
    again = submit(site, "pull-image", "docker://alpine:killed", "--wait")
    assert again["state"] == "COMPLETED"
    assert os.listdir(images) == ["alpine_killed.sif"]


# --------------------------------------------------------------------------- the daemons


def _stop_daemon(name: str) -> None:
    pid = int(Path(f"/run/slurm/{name}.pid").read_text().strip())
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2],
             timeout=30)


@pytest.fixture
def restart_slurm():
    yield
    subprocess.run(["bash", str(PROJECT / "scripts" / "slurm-up.sh")], check=True, capture_output=True)


def test_slurmctld_unreachable_at_submit_and_status(slurm_site, restart_slurm):
    site = slurm_site
    site.configure()
    done = submit(site, "pull-image", "docker://alpine:before", "--wait")
    assert done["state"] == "COMPLETED"
    running = submit(site, "pull-image", "docker://alpine:during", FAKE_APPTAINER_SLEEP="20")
    wait_for(lambda: status(site, running["id"])["state"] == "RUNNING", timeout=60)
    _stop_daemon("slurmctld")
    proc = site.bfjobs("submit", "pull-image", "docker://alpine:refused", timeout=120)
    assert proc.returncode == 1
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("bfjobs: error: ") and "sbatch" in line
    rows = json_jobs(site.bfjobs("list", "--json", check=True).stdout)
    assert {r["request"]["uri"] for r in rows} == {"docker://alpine:before", "docker://alpine:during"}
    assert len(os.listdir(site.home_dir / "jobs" / "bfjobs")) == 2  # no folder for the refused job
    # status while the controller is away: no crash, the known states are kept
    proc = site.bfjobs("status", "--json", timeout=120)
    assert proc.returncode in (0, 1), proc.stderr
    assert "Traceback" not in proc.stderr
    assert status(site, done["id"])["state"] == "COMPLETED"
    assert status(site, running["id"])["state"] in ("RUNNING", "COMPLETED")
    subprocess.run(["bash", str(PROJECT / "scripts" / "slurm-up.sh")], check=True, capture_output=True)
    assert final(site, running["id"])["state"] == "COMPLETED"


def test_slurmd_stopped_while_a_job_runs(slurm_site, restart_slurm):
    site = slurm_site
    site.configure()
    job = submit(site, "pull-image", "docker://alpine:nodedown", FAKE_APPTAINER_SLEEP="8")
    wait_for(lambda: status(site, job["id"])["state"] == "RUNNING", timeout=60)
    _stop_daemon("slurmd")
    assert status(site, job["id"])["state"] == "RUNNING"  # the job's processes outlive slurmd
    time.sleep(3)
    subprocess.run(["bash", str(PROJECT / "scripts" / "slurm-up.sh")], check=True, capture_output=True)
    end = final(site, job["id"], timeout=120)
    assert end["state"] == "COMPLETED"
    assert os.listdir(site.cache_dir / "images") == ["alpine_nodedown.sif"]


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--qos", "nosuchqos"], "invalid qos"),
        (["--account", "nosuchaccount"], "invalid account"),
        (["--partition", "datamover", "--time", "3-00:00:00"], "requested time limit is invalid"),
    ],
)
def test_sbatch_rejection_reports_the_schedulers_words(slurm_site, flags, words):
    site = slurm_site
    site.configure()
    proc = site.bfjobs("submit", "pull-image", "docker://alpine:3.20", *flags)
    assert proc.returncode == 1
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("bfjobs: error: sbatch refused the job:") and words in line.lower()
    assert json_jobs(site.bfjobs("list", "--json", check=True).stdout) == []


# --------------------------------------------------------------------------- full filesystem


@pytest.fixture
def tiny_cache(site):
    """cache_dir on a 2 MiB tmpfs: it fills up mid-transfer."""
    with tmpfs_over(site.cache_dir, "size=2m,mode=755") as path:
        yield path


def test_filesystem_full_during_download(slurm_site, hub, tiny_cache):
    site = slurm_site
    site.configure(hub)
    job = submit(site, "download-model", DEMO_REPO_ID, "--shared", "--wait")
    assert job["state"] == "FAILED"
    assert "No space left on device" in job["reason"]
    models = tiny_cache / "models"
    assert hidden_leftovers(models) == []
    assert not (models / FOLDER).exists() or not (models / FOLDER / "snapshots").exists() or \
        os.listdir(models / FOLDER / "snapshots") == []


def test_filesystem_full_during_pull(slurm_site, tiny_cache):
    site = slurm_site
    site.configure()
    job = submit(site, "pull-image", "docker://alpine:big", "--wait", FAKE_APPTAINER_SIZE=str(4 * 1024 * 1024))
    assert job["state"] == "FAILED"
    assert "No space left on device" in job["reason"]
    assert os.listdir(tiny_cache / "images") == []


# --------------------------------------------------------------------------- concurrency


def test_second_request_reports_the_job_in_flight(slurm_site, hub):
    site = slurm_site
    site.configure(hub)
    first = submit(site, "pull-image", "docker://alpine:slow", FAKE_APPTAINER_SLEEP="6")
    second = site.bfjobs("submit", "pull-image", "docker://alpine:slow")
    assert second.returncode == 0
    assert f"already in flight: job {first['id']}" in second.stdout
    dup = submit(site, "pull-image", "docker://alpine:slow")
    assert dup["in_flight"] is True and dup["id"] == first["id"]
    hub.delay_per_chunk = 0.1
    model = submit(site, "download-model", DEMO_REPO_ID, "--revision", "dev")
    assert submit(site, "download-model", DEMO_REPO_ID, "--revision", "dev")["id"] == model["id"]
    other = submit(site, "download-model", DEMO_REPO_ID, "--revision", "v1.0")  # another revision: its own job
    assert other["id"] != model["id"] and other["in_flight"] is False
    for job in (first, model, other):
        assert final(site, job["id"])["state"] == "COMPLETED"
    assert len(site.apptainer_calls()) == 1
    assert len(json_jobs(site.bfjobs("list", "--json", check=True).stdout)) == 3


def test_two_users_publish_the_same_artefacts_once(slurm_site, hub):
    """Two users (two databases) ask at once: one job pulls/downloads, the other reuses it."""
    site = slurm_site
    site.configure(hub)
    hub.delay_per_chunk = 0.05
    dbs = [f"sqlite:///{site.root / name}.sqlite" for name in ("alice", "bob")]
    jobs = []
    for db in dbs:
        jobs.append((db, submit(site, "pull-image", "docker://alpine:shared", FAKE_APPTAINER_SLEEP="3",
                                BFJOBS_DB_URL=db)))
        jobs.append((db, submit(site, "download-model", DEMO_REPO_ID, "--shared", BFJOBS_DB_URL=db)))
    results = [final(site, job["id"], BFJOBS_DB_URL=db) for db, job in jobs]
    assert all(r["state"] == "COMPLETED" for r in results), results
    pulls = [r["result"] for r in results if r["kind"] == "pull-image"]
    downloads = [r["result"] for r in results if r["kind"] == "download-model"]
    assert sorted(p["already_present"] for p in pulls) == [False, True]
    assert sorted(d["already_present"] for d in downloads) == [False, True]
    assert len(site.apptainer_calls()) == 1
    lfs_gets = [r for r in hub.requests if r.listener == "cdn" and r.method == "GET"]
    assert len(lfs_gets) == 1  # the 3 MB file crossed the network once
    assert hidden_leftovers(site.cache_dir) == []  # no lock files left to block anyone


def test_fifty_processes_write_the_database(slurm_site):
    site = slurm_site
    site.configure()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "blackfish_jobs", "submit", "pull-image", f"docker://alpine:c{i}", "--to", "home"],
            env=site.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(50)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    failures = [(p.returncode, err) for p, (_out, err) in zip(procs, outs, strict=True) if p.returncode != 0]
    assert failures == []
    assert not any("locked" in err for _out, err in outs)
    conn = sqlite3.connect(site.db_path)
    assert conn.execute("SELECT count(*) FROM bfjobs_jobs").fetchone() == (50,)
    ids = [row[0] for row in conn.execute("SELECT id FROM bfjobs_jobs")]
    waited = site.bfjobs("wait", *ids, "--timeout", "240", timeout=300)
    assert waited.returncode == 0, waited.stderr


# --------------------------------------------------------------------------- secrets


def test_token_never_on_a_command_line(slurm_site, hub):
    site = slurm_site
    site.configure(hub)
    canary = "hf_CANARYsecret0123456789abcdefXYZ"
    hub.require_token = canary
    hub.delay_per_chunk = 0.1
    job = submit(site, "download-model", DEMO_REPO_ID, "--shared", HF_TOKEN=canary)
    seen_running = False
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert not any(canary.encode() in c for c in all_cmdlines())
        state = status(site, job["id"])["state"]
        seen_running |= state == "RUNNING"
        if state not in UNFINISHED:
            break
        time.sleep(0.3)
    assert seen_running and state == "COMPLETED"
    assert any(r.has_auth for r in hub.requests)  # files are checked in test_download.py


# --------------------------------------------------------------------------- verify


def test_verify_detects_corrupt_artefacts(slurm_site, hub):
    site = slurm_site
    site.configure(hub)
    image = submit(site, "pull-image", "docker://alpine:verify", "--wait")
    model = submit(site, "download-model", DEMO_REPO_ID, "--revision", "dev", "--wait")
    ok = site.bfjobs("verify", "--json")
    assert ok.returncode == 0, ok.stderr
    assert {(f["kind"], f["ok"]) for f in json_findings(ok.stdout)} == {("pull-image", True), ("download-model", True)}
    # truncate the image, flip a byte in a model blob
    sif = Path(image["result"]["path"])
    with sif.open("r+b") as fh:
        fh.truncate(sif.stat().st_size // 2)
    weights = Path(model["result"]["snapshot"]) / "model.safetensors"
    blob = weights.resolve()
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    bad = site.bfjobs("verify")
    assert bad.returncode == 1
    assert bad.stdout.count("CORRUPT") == 2
    assert "truncated" in bad.stdout and "model.safetensors" in bad.stdout
    assert bad.stderr.strip().splitlines()[-1].startswith("bfjobs: error: 2 of 2 artefact(s) failed verification")
    # a path works too, without the database
    assert site.bfjobs("verify", str(Path(model["result"]["snapshot"]))).returncode == 1
