"""Requests a cluster can never run, and built-in defaults that fit a small node (real Slurm).

The test cluster (scripts/slurm-up.sh) has a partition ``small`` whose jobs get no more than this
machine has (``MaxCPUsPerNode``/``MaxMemPerNode``), refused at submit by ``EnforcePartLimits=ALL``,
and a QOS ``bfjobs-small`` (2 CPUs per job, no ``DenyOnLimit``) over which a job is accepted and
pends for ever with ``QOSMaxCpuPerJobLimit``. A reason this cluster cannot produce on demand
(``PartitionConfig``) is shown by rewriting only the reason text of a real pending job.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from support.hub import DEMO_REPO_ID
from support.site import as_job, json_jobs, wait_for

pytestmark = pytest.mark.slurm

URI = "docker://ghcr.io/huggingface/text-generation-inference:latest"
OVER_QOS = ("--qos", "bfjobs-small", "--cpus-per-task", "4")


def slurm_state(job_id: str) -> str:
    """The controller's (else accounting's) state of a Slurm job."""
    out = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%T", "-j", job_id], capture_output=True, text=True)
    if out.stdout.strip():
        return out.stdout.strip()
    acct = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "State", "-j", job_id], capture_output=True, text=True)
    return acct.stdout.strip().split(" ")[0]


@pytest.fixture
def limits_site(slurm_site) -> Iterator:
    """``slurm_site`` whose Slurm jobs are cancelled afterwards (a test of the old code leaves
    its impossible job pending)."""
    yield slurm_site
    listed = slurm_site.bfjobs("list", "--json")
    ids = [j["slurm_job_id"] for j in (json_jobs(listed.stdout) if listed.stdout else []) if j.get("slurm_job_id")]
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True)


def test_builtin_defaults_run_on_a_small_node(site, hub):
    """Nothing but the partition set: the built-in download and pull defaults fit a node no
    bigger than this machine (the partition refuses more at submit) and the jobs complete."""
    site.write_profiles()
    site.write_settings(f'[defaults]\npartition = "small"\nhf_endpoint = "{hub.url}"\n')
    rendered = site.bfjobs("render", "download-model", DEMO_REPO_ID, check=True).stdout
    assert "#SBATCH --cpus-per-task=2" in rendered and "#SBATCH --mem=2G" in rendered
    proc = site.bfjobs("submit", "download-model", DEMO_REPO_ID, "--wait", "--json")
    assert proc.returncode == 0, proc.stderr
    assert as_job(proc)["state"] == "COMPLETED"
    proc = site.bfjobs("submit", "pull-image", URI, "--wait", "--json")
    assert proc.returncode == 0, proc.stderr
    assert as_job(proc)["state"] == "COMPLETED"


def test_partition_limit_is_refused_at_submit(limits_site):
    """EnforcePartLimits=ALL: sbatch refuses more CPUs than the partition allows per node; one
    line, exit non-zero, no job recorded."""
    proc = limits_site.bfjobs("submit", "pull-image", URI, "--partition", "small", "--cpus-per-task", "4", "--json")
    assert proc.returncode != 0 and not proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bfjobs: error: ") and "processors" in lines[0], proc.stderr
    assert json_jobs(limits_site.bfjobs("list", "--json").stdout) == []


def test_wait_ends_a_job_over_a_qos_limit(limits_site):
    """A job over the QOS's per-job limit pends for ever: ``--wait`` ends it within a couple of
    refreshes with one line (job, Slurm's reason, the QOS limit, what to change), cancels it in
    Slurm and records CANCELLED with the reason."""
    proc = limits_site.bfjobs("submit", "pull-image", URI, *OVER_QOS, "--wait", "--json", timeout=120)
    assert proc.returncode == 1, proc.stderr
    job = as_job(proc)
    sid = job["slurm_job_id"]
    assert job["state"] == "CANCELLED" and job["reason"].startswith("cannot start: QOSMaxCpuPerJobLimit: ")
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"bfjobs: error: job {job['id']} (Slurm job {sid}) cannot start: QOSMaxCpuPerJobLimit")
    assert "QOS bfjobs-small (MaxTRESPerJob cpu=2)" in line and "4 CPUs" in line and "--cpus-per-task" in line
    assert wait_for(lambda: slurm_state(sid) == "CANCELLED", timeout=30)
    status = as_job(limits_site.bfjobs("status", job["id"], "--json"))
    assert (status["state"], status["reason"]) == ("CANCELLED", job["reason"])
    listed = limits_site.bfjobs("list", "--state", "cancelled").stdout
    assert "cannot start: QOSMaxCpuPerJobLimit" in listed


def test_status_shows_cannot_start_and_logs_follow_ends_it(limits_site):
    """``status``/``list`` show such a job as "cannot start" and leave it queued; ``logs --follow``
    then ends it like ``wait``."""
    job = as_job(limits_site.bfjobs("submit", "pull-image", URI, *OVER_QOS, "--json"))
    sid = job["slurm_job_id"]

    def shown() -> dict | None:
        row = as_job(limits_site.bfjobs("status", job["id"], "--json"))
        return row if row["reason"] == "cannot start: QOSMaxCpuPerJobLimit" else None

    row = wait_for(shown, timeout=60)
    assert row["state"] == "PENDING" and slurm_state(sid) == "PENDING"
    assert "cannot start: QOSMaxCpuPerJobLimit" in limits_site.bfjobs("list").stdout
    assert "cannot start: QOSMaxCpuPerJobLimit" in limits_site.bfjobs("status").stdout
    assert slurm_state(sid) == "PENDING"  # showing it cancels nothing
    proc = limits_site.bfjobs("logs", job["id"], "--follow", timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith(
        f"bfjobs: error: job {job['id']} ended: CANCELLED (cannot start: QOSMaxCpuPerJobLimit: "
    )
    assert wait_for(lambda: slurm_state(sid) == "CANCELLED", timeout=30)


def test_partition_config_pending_is_ended(limits_site, monkeypatch):
    """``PartitionConfig`` (more CPUs than any node of the partition, where the site does not
    enforce partition limits at submit) cannot be produced here: a real job pending over the QOS
    limit is reported with that reason and a 2-CPU node by rewriting only Slurm's answers' text;
    scancel, the DB and everything else are real."""
    from blackfish_jobs import tracking
    from blackfish_jobs.backends import Backends, slurmcmd
    from blackfish_jobs.store import Database

    job = as_job(limits_site.bfjobs("submit", "pull-image", URI, *OVER_QOS, "--json"))
    monkeypatch.setenv("BLACKFISH_HOME_DIR", str(limits_site.app_dir))
    asked: list[list[str]] = []

    def rewritten(argv: list[str]) -> str:
        asked.append(argv)
        out = slurmcmd.run(argv)
        if argv[0] == "sinfo":  # every node of partition cpu has 2 CPUs
            return "".join(
                "|".join(f if i != 1 or not line.startswith("cpu|") else "2" for i, f in enumerate(line.split("|")))
                + "\n"
                for line in out.splitlines()
            )
        return out.replace("QOSMaxCpuPerJobLimit", "PartitionConfig")

    db = Database(None)
    rows = tracking.wait(db, [job["id"]], backends=Backends(rewritten), first_delay=0.5, timeout=60)
    assert rows[0].state == "CANCELLED"
    assert rows[0].reason == (
        "cannot start: PartitionConfig: needs 4 CPUs per task; the largest node of partition cpu has 2: "
        "lower --cpus-per-task or choose another partition"
    )
    assert [a[0] for a in asked].count("scancel") == 1 and [a[0] for a in asked].count("sinfo") == 1
    assert wait_for(lambda: slurm_state(job["slurm_job_id"]) == "CANCELLED", timeout=30)
