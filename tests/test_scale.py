"""Scale on the real cluster: Slurm client calls are counted, never one per job.

- 60 jobs submitted through bfjobs: ``list`` makes no call, ``status`` one sacct (plus at most
  one squeue for jobs too new for accounting), the fallback one squeue, ``wait`` one query per poll.
- 1,000 live (pending) jobs: ``status`` and ``cancel`` still make one call each.
- 10,000 rows: ``list`` stays interactive.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from support.rows import insert_rows, job_row
from support.site import Site, json_jobs
from support.slurm import DownPartition, ids_in

from blackfish_jobs.store import Database, JobRow, utcnow

submit = Site.submit_pull


# bfjobs' own library, as the CLI calls it, in one process: 60 CLI start-ups on a 2-CPU test
# machine would take longer than the jobs (each `bfjobs submit` is tested on its own elsewhere).
_SUBMIT_MANY = """
import json, sys
from blackfish_jobs import config, kinds
from blackfish_jobs.kinds import image
from blackfish_jobs.api import submission
from blackfish_jobs.api.results import outcome_json
from blackfish_jobs.store import Database

db = Database()
profile = config.load_profile(None)
settings = kinds.load_settings(profile.name, "pull-image")
outcomes = [submission.submit(db, image.pull_image(uri, profile, settings)) for uri in sys.argv[1:]]
print(json.dumps([outcome_json(o) for o in outcomes]))
"""


def submit_many(site, uris: list[str], **env: str) -> list[dict]:
    proc = subprocess.run([sys.executable, "-c", _SUBMIT_MANY, *uris], capture_output=True, text=True,
                          env=site.env(**env), timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def timed(site, *args: str, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    proc = site.bfjobs(*args, **env)
    return proc, time.monotonic() - started


def row_values(i: int, *, native_id: str, state: str, age_s: float, kind: str = "pull-image") -> JobRow:
    return job_row(i, kind=kind, native_id=native_id, state=state, reason="boom" if state == "FAILED" else None,
                   folder=f"/nonexistent/{i}", submitted_at=utcnow() - timedelta(seconds=age_s))


@pytest.mark.slurm
def test_sixty_real_jobs_one_query_per_refresh(slurm_site, calls):
    site = slurm_site
    uris = [f"docker://scale/img{i}:{'bad' if i % 12 == 0 else 'v1'}" for i in range(60)]
    started = time.monotonic()
    submitted = submit_many(site, uris, FAKE_APPTAINER_SLEEP="6", FAKE_APPTAINER_FAIL_ON=":bad")
    submit_s = time.monotonic() - started
    ids = {j["id"] for j in submitted}
    slurm_ids = {j["slurm_job_id"] for j in submitted}
    assert len(ids) == 60 == len(slurm_ids)

    calls.clear()
    proc, listed_s = timed(site, "list", "--limit", "0", **calls.env())
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 61
    assert calls.calls() == []  # the DB only

    proc = site.bfjobs("status", "--json", **calls.env())
    assert proc.returncode == 0, proc.stderr
    assert {j["id"] for j in json_jobs(proc.stdout)} == ids
    counted = calls.counts()
    assert counted["sacct"] == 1 and counted["squeue"] <= 1 and sum(counted.values()) <= 2, counted
    [sacct] = [c for c in calls.calls() if c["cmd"] == "sacct"]
    assert set(ids_in(sacct)) == slurm_ids and "-S" in sacct["argv"]

    calls.clear()
    proc = site.bfjobs("status", "--json", **calls.env(accounting=False))
    assert proc.returncode == 0, proc.stderr
    assert calls.counts() == {"sacct": 1, "squeue": 1}  # sacct says it is disabled; one squeue for all
    squeue_ids = set(ids_in(next(c for c in calls.calls() if c["cmd"] == "squeue")))
    assert squeue_ids and squeue_ids <= slurm_ids

    db = Database(f"sqlite:///{site.db_path}")
    unfinished = len(db.unfinished())
    calls.clear()
    proc, waited_s = timed(site, "wait", *sorted(ids), "--json", **calls.env())
    assert proc.returncode == 1  # five of them fail on purpose
    final = {j["id"]: j for j in json_jobs(proc.stdout)}
    states = sorted(j["state"] for j in final.values())
    assert states == ["COMPLETED"] * 55 + ["FAILED"] * 5
    assert all("apptainer pull exited with code 255" in j["reason"] for j in final.values() if j["state"] == "FAILED")
    counted = calls.counts()
    polls = counted["sacct"]
    assert set(counted) <= {"sacct", "squeue"} and counted["squeue"] <= polls <= 15, counted
    sizes = [len(ids_in(c)) for c in calls.calls() if c["cmd"] == "sacct"]
    assert sizes[0] == unfinished and sizes == sorted(sizes, reverse=True)  # every unfinished job, each call

    # a fresh process re-reads the same results from the DB (re-attach), without asking Slurm
    calls.clear()
    again = json_jobs(site.bfjobs("list", "--json", "--limit", "0", check=True, **calls.env()).stdout)
    assert {j["id"]: (j["state"], j["result"]) for j in again} == {
        i: (j["state"], j["result"]) for i, j in final.items()
    }
    assert calls.calls() == []
    print(f"\n60 jobs: submit {submit_s:.1f}s, list {listed_s:.2f}s, wait {waited_s:.1f}s "
          f"({unfinished} unfinished at start) with {polls} sacct + {counted['squeue']} squeue calls")


@pytest.mark.slurm
def test_thousand_live_jobs_one_call_for_status_and_cancel(slurm_site, calls):
    site = slurm_site
    down = DownPartition()  # the jobs stay pending there, using nothing
    try:
        script = (
            f"for i in $(seq 1 1000); do sbatch --parsable -p {down.name} --mem=10M -c1 -o /dev/null "
            "-J bfjobs-scale --wrap true || exit 1; done"
        )
        out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
        slurm_ids = out.split()
        assert len(slurm_ids) == 1000
        insert_rows(site.db_path,
                    [row_values(i, native_id=sid, state="PENDING", age_s=5) for i, sid in enumerate(slurm_ids)])

        calls.clear()
        proc, status_s = timed(site, "status", "--json", **calls.env())
        assert proc.returncode == 0, proc.stderr
        shown = json_jobs(proc.stdout)
        assert len(shown) == 1000 and {j["state"] for j in shown} == {"PENDING"}
        counted = calls.counts()
        assert counted["sacct"] == 1 and counted["squeue"] <= 1 and sum(counted.values()) <= 2, counted
        assert len(ids_in(next(c for c in calls.calls() if c["cmd"] == "sacct"))) == 1000

        calls.clear()
        proc, fallback_s = timed(site, "status", **calls.env(accounting=False))
        assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 1001
        assert calls.counts() == {"sacct": 1, "squeue": 1}

        calls.clear()
        ids = [f"{i:012x}" for i in range(1000)]
        proc, cancel_s = timed(site, "cancel", *ids, "--json", **calls.env())
        assert proc.returncode == 0, proc.stderr
        assert {j["state"] for j in json_jobs(proc.stdout)} == {"CANCELLED"}
        scancels = [c for c in calls.calls() if c["cmd"] == "scancel"]
        assert len(scancels) == 1 and len(ids_in(scancels[0])) == 1000
        assert calls.counts()["sacct"] <= 10  # the refresh before, then a few confirmation polls
        print(f"\n1000 live jobs: status {status_s:.2f}s (fallback {fallback_s:.2f}s), cancel {cancel_s:.2f}s")
    finally:
        subprocess.run(["scancel", "-n", "bfjobs-scale", "-p", down.name], capture_output=True)
        down.remove()


def test_list_over_ten_thousand_rows_stays_interactive(site, calls):
    states = ("COMPLETED", "COMPLETED", "COMPLETED", "FAILED", "CANCELLED")
    insert_rows(site.db_path, [
        row_values(i, native_id=str(100_000 + i), state=states[i % 5], age_s=60 * i,
                   kind="pull-image" if i % 3 else "download-model")
        for i in range(10_000)
    ])
    site.bfjobs("list", check=True)  # first use: warm caches as a user's second call would have them
    # the same command on an empty database: start-up cost on this machine right now (it may be busy)
    empty = f"sqlite:///{site.root / 'empty.sqlite'}"
    site.bfjobs("--db", empty, "list", check=True)
    _, baseline_s = timed(site, "--db", empty, "list")
    proc, first_page_s = timed(site, "list", **calls.env())
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 51
    proc, filtered_s = timed(site, "list", "--state", "FAILED", "--kind", "pull-image", "--since", "2d",
                             "--limit", "0", "--json")
    expected = sum(1 for i in range(10_000) if i % 5 == 3 and i % 3 and 60 * i < 2 * 86400)
    assert len(json_jobs(proc.stdout)) == expected
    proc, everything_s = timed(site, "list", "--limit", "0", "--json")
    assert len(json_jobs(proc.stdout)) == 10_000
    proc = site.bfjobs("status", **calls.env())
    assert proc.returncode == 0 and "no unfinished jobs" in proc.stdout
    assert calls.calls() == []  # nothing unfinished: no Slurm call at all
    # a page or a filter costs little more than starting the command; all 10,000 as JSON stays in seconds
    budget = (baseline_s + 0.5, baseline_s + 0.5, 3 * baseline_s + 2.0)
    measured = (first_page_s, filtered_s, everything_s)
    assert all(m < b for m, b in zip(measured, budget, strict=True)), (measured, budget)
    print(f"\n10,000 rows: list {first_page_s:.2f}s (empty DB {baseline_s:.2f}s), filtered {filtered_s:.2f}s, "
          f"all as JSON {everything_s:.2f}s")
