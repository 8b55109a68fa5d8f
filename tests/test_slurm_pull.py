"""`bfjobs submit pull-image` end to end on the real Slurm cluster (scripts/slurm-up.sh)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
from support.site import json_job, json_jobs, wait_for

pytestmark = pytest.mark.slurm

URI = "docker://ghcr.io/huggingface/text-generation-inference:latest"


def sacct(job_id: str, fields: str) -> list[str]:
    """Accounting's record of a finished job (slurmdbd lags the controller by a few seconds)."""

    def read() -> list[str]:
        out = subprocess.run(
            ["sacct", "-X", "-n", "-P", "-j", job_id, "-o", f"State,{fields}"],
            capture_output=True, text=True, check=True,
        ).stdout
        rows = [line for line in out.splitlines() if line]
        complete = rows and all(rows[0].split("|")) and not rows[0].startswith(("PENDING", "RUNNING"))
        return [r.split("|", 1)[1] for r in rows] if complete else []

    return wait_for(read, timeout=30)


def image_dir_entries(site, shared: bool = True) -> list[str]:
    d = (site.cache_dir if shared else site.home_dir) / "images"
    return sorted(os.listdir(d)) if d.exists() else []


def status(site, job_id: str) -> dict:
    proc = site.bfjobs("status", job_id, "--json")
    assert proc.returncode == 0, proc.stderr
    return json_job(proc.stdout)


def test_pull_end_to_end(slurm_site):
    site = slurm_site
    rendered = site.bfjobs("render", "pull-image", URI, check=True).stdout
    proc = site.bfjobs("submit", "pull-image", URI, "--wait", "--json")
    assert proc.returncode == 0, proc.stderr
    job = json_job(proc.stdout)
    target = site.cache_dir / "images" / "text-generation-inference_latest.sif"
    assert job["state"] == "COMPLETED" and job["backend"] == "slurm" and job["slurm_job_id"]
    assert job["result"]["path"] == str(target) and job["target"] == str(target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o755
    assert image_dir_entries(site) == [target.name]
    # submitit's files are in the job folder under <home_dir>/jobs/bfjobs/<id>
    folder = Path(job["folder"])
    assert folder == site.home_dir / "jobs" / "bfjobs" / job["id"]
    sid = job["slurm_job_id"]
    for name in (f"{sid}_submission.sh", f"{sid}_submitted.pkl", f"{sid}_0_result.pkl", f"{sid}_0_log.out"):
        assert (folder / name).exists(), name
    # `render` printed exactly what was submitted, but for the id and the job folder
    submitted = (folder / f"{sid}_submission.sh").read_text()
    assert rendered.replace("render-preview", job["id"]) == submitted
    # it ran inside the Slurm job, with Apptainer's dirs on node-local scratch, removed afterwards
    [call] = site.apptainer_calls()
    assert call["SLURM_JOB_ID"] == sid
    assert call["APPTAINER_CACHEDIR"].startswith(os.environ.get("TMPDIR", "/tmp") + "/bfjobs-pull-")
    assert not os.path.exists(call["APPTAINER_CACHEDIR"])
    assert sacct(sid, "State,Partition") == ["COMPLETED|cpu"]
    # a fresh process re-reads the same finished job from the DB
    again = status(site, job["id"])
    assert again["state"] == "COMPLETED" and again["result"]["sha256"] == job["result"]["sha256"]
    listed = json_jobs(site.bfjobs("list", "--json", check=True).stdout)
    assert [j["id"] for j in listed] == [job["id"]]


def test_failed_pull_publishes_nothing(slurm_site):
    site = slurm_site
    assert site.failed_pull()["backend"] == "slurm"
    assert image_dir_entries(site) == []  # not even a hidden partial file


def test_datamover_partition_from_settings(slurm_site):
    site = slurm_site
    site.write_settings(
        """
        [defaults]
        mem = "200M"
        time = "00:10:00"
        cpus_per_task = 1

        [profiles.slurm]
        partition = "datamover"
        """
    )
    assert "#SBATCH --partition=datamover" in site.bfjobs("render", "pull-image", URI, check=True).stdout
    job = json_job(site.bfjobs("submit", "pull-image", URI, "--wait", "--json", check=True).stdout)
    assert job["state"] == "COMPLETED"
    assert sacct(job["slurm_job_id"], "Partition") == ["datamover"]
    # a command-line flag overrides the file
    job = json_job(
        site.bfjobs("submit", "pull-image", URI, "--to", "home", "--partition", "cpu", "--wait", "--json",
                    check=True).stdout
    )
    assert sacct(job["slurm_job_id"], "Partition") == ["cpu"]
    assert image_dir_entries(site, shared=False) == ["text-generation-inference_latest.sif"]


def test_status_and_wait_from_fresh_processes(slurm_site):
    site = slurm_site
    job = json_job(site.bfjobs("submit", "pull-image", "docker://alpine:slow", "--json", check=True,
                                 FAKE_APPTAINER_SLEEP="3").stdout)
    assert job["state"] == "PENDING" and job["result"] is None
    first = status(site, job["id"])
    assert first["state"] in ("PENDING", "RUNNING")
    # the Slurm job id is accepted too
    waited = site.bfjobs("wait", job["slurm_job_id"], "--json", FAKE_APPTAINER_SLEEP="3")
    assert waited.returncode == 0, waited.stderr
    final = json_job(waited.stdout)
    assert final["state"] == "COMPLETED" and final["result"]["path"].endswith("alpine_slow.sif")
    assert status(site, job["id"])["state"] == "COMPLETED"


def test_sbatch_rejection_is_the_schedulers_message(slurm_site):
    site = slurm_site
    proc = site.bfjobs("submit", "pull-image", URI, "--partition", "nosuchpartition")
    assert proc.returncode == 1
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("bfjobs: error: sbatch refused the job:")
    assert "invalid partition" in line.lower()
    assert json_jobs(site.bfjobs("list", "--json", check=True).stdout) == []


def test_cancelled_pull_leaves_nothing(slurm_site):
    site = slurm_site
    job = json_job(site.bfjobs("submit", "pull-image", "docker://alpine:cancel", "--json", check=True,
                                 FAKE_APPTAINER_SLEEP="60").stdout)
    images = site.cache_dir / "images"
    # the pull is under way: its partial file sits, hidden, next to the final name
    wait_for(lambda: images.is_dir() and any(n.startswith(".bfjobs-partial-") for n in os.listdir(images)), timeout=60)
    subprocess.run(["scancel", job["slurm_job_id"]], check=True)
    final = wait_for(lambda: (s := status(site, job["id"]))["state"] not in ("PENDING", "RUNNING") and s, timeout=60)
    assert final["state"] == "CANCELLED"
    wait_for(lambda: os.listdir(images) == [], timeout=30)  # the task removed its partial file


def test_hostile_uri_submits_nothing(slurm_site):
    site = slurm_site
    canary = site.root / "canary"
    for uri in (f"docker://alpine;touch {canary}", f"docker://alpine:$(touch {canary})", "docker://a\nb"):
        proc = site.bfjobs("submit", "pull-image", uri)
        assert proc.returncode == 2
        assert len(proc.stderr.strip().splitlines()) == 1
    assert not canary.exists()
    assert not (site.home_dir / "jobs").exists()
