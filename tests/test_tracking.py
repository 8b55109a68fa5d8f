"""Tracking on the real cluster: cancel, failures, killed jobs, no accounting, vanished jobs, logs, views.

Every bfjobs call runs in a fresh process (re-attaching through the DB and the job folder); the
Slurm clients it starts are the real ones, counted through a logging PATH wrapper. Fakes appear
only for what a real cluster cannot do on demand (see test_tracker_unit.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from support.rows import insert_rows, job_row
from support.site import REPO, as_job, as_jobs, json_job, json_jobs, wait_for, with_tty
from support.slurm import ids_in, task_pids

from blackfish_jobs.store import Database, JobRow, utcnow


def submit(site, uri: str, *args: str, **env: str) -> dict:
    proc = site.bfjobs("submit", "pull-image", uri, "--json", *args, **env)
    assert proc.returncode == 0, proc.stderr
    return json_job(proc.stdout)


def status(site, *ids: str, **env: str) -> dict | list:
    """One job's object for one id, else the list (the output is always ``{"version": 1, "jobs": [...]}``)."""
    proc = site.bfjobs("status", *ids, "--json", **env)
    assert proc.returncode == 0, proc.stderr
    jobs = json_jobs(proc.stdout)
    return jobs[0] if len(ids) == 1 else jobs


def partials(site) -> list[str]:
    d = site.cache_dir / "images"
    return sorted(n for n in os.listdir(d) if n.startswith(".bfjobs-partial-")) if d.exists() else []


def copy_row(site, source: dict, *, native_id: str, age: timedelta, with_result: bool, state: str = "RUNNING") -> str:
    """A job row for a Slurm id the controller does not know (gone, as after MinJobAge).

    Its folder is a copy of a real finished job's folder, renamed for the new id, with or without
    the result file: the controller and accounting genuinely know nothing about that id.
    """
    db = Database(f"sqlite:///{site.db_path}")
    new_id = uuid.uuid4().hex[:12]
    old_folder = Path(source["folder"])
    folder = old_folder.parent / new_id
    folder.mkdir()
    for entry in old_folder.iterdir():
        name = entry.name.replace(str(source["slurm_job_id"]), native_id, 1)
        if name.endswith("_result.pkl") and not with_result:
            continue
        shutil.copy(entry, folder / name)
    now = utcnow()
    insert_rows(db, [job_row(
        id=new_id, native_id=native_id, state=state, folder=str(folder), target=source["target"],
        request=source["request"], node="vm", submitted_at=now - age, updated_at=now,
    )])
    return new_id


def unknown_slurm_id() -> str:
    """A job id far above anything this test cluster has handed out (ids start low)."""
    return str(60_000_000 + uuid.uuid4().int % 1_000_000)


# ----------------------------------------------------------------------------- cancel


@pytest.mark.slurm
def test_cancel_running_pending_and_held_with_one_scancel(slurm_site, calls, down):
    site = slurm_site
    with ThreadPoolExecutor(4) as pool:
        running_f = pool.submit(submit, site, "docker://alpine:running", FAKE_APPTAINER_SLEEP="60")
        pending_f = pool.submit(submit, site, "docker://alpine:pending", "--partition", down.name)
        held_f = pool.submit(submit, site, "docker://alpine:held", "--partition", down.name)
        outside_f = pool.submit(submit, site, "docker://alpine:outside", "--partition", down.name)
    running, pending, held, outside = (f.result() for f in (running_f, pending_f, held_f, outside_f))
    subprocess.run(["scontrol", "hold", held["slurm_job_id"]], check=True)
    wait_for(lambda: partials(site), timeout=60)  # the pull is under way, its partial file exists

    # a wait on a job that never starts, ended by someone else's scancel: it must not hang
    waiter = subprocess.Popen(
        [sys.executable, "-m", "blackfish_jobs", "wait", outside["id"], "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=site.env(),
    )
    def settled() -> list | None:
        jobs = status(site, running["id"], pending["id"], held["id"])
        return jobs if [j["state"] for j in jobs] == ["RUNNING", "PENDING", "PENDING"] else None

    wait_for(settled, timeout=30)
    held_state = subprocess.run(["squeue", "-h", "-j", held["slurm_job_id"], "-o", "%T %r"],
                                capture_output=True, text=True, check=True).stdout.split()
    assert held_state == ["PENDING", "JobHeldAdmin"]

    # logs of a job that has not started: nothing, and no error
    proc = site.bfjobs("logs", pending["id"])
    assert proc.returncode == 0 and proc.stdout == ""

    subprocess.run(["scancel", outside["slurm_job_id"]], check=True)
    calls.clear()
    proc = site.bfjobs("cancel", running["id"], pending["slurm_job_id"], held["id"], "--json", **calls.env())
    assert proc.returncode == 0, proc.stderr
    after = {j["id"]: j for j in json_jobs(proc.stdout)}
    assert {j["state"] for j in after.values()} == {"CANCELLED"}
    assert "before it started" in after[pending["id"]]["reason"]
    assert "before it started" in after[held["id"]]["reason"]
    scancels = [c for c in calls.calls() if c["cmd"] == "scancel"]
    assert len(scancels) == 1
    assert sorted(ids_in(scancels[0])) == sorted(j["slurm_job_id"] for j in (running, pending, held))

    # the cancelled pull removed its partial file; nothing was published
    wait_for(lambda: partials(site) == [], timeout=30)
    assert not (site.cache_dir / "images" / "alpine_running.sif").exists()
    # a fresh process reads CANCELLED from the DB; cancelling again is harmless
    assert [j["state"] for j in status(site, running["id"], pending["id"], held["id"])] == ["CANCELLED"] * 3
    again = site.bfjobs("cancel", running["id"])
    assert again.returncode == 0 and "already ended: CANCELLED" in again.stdout

    out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 1, err
    assert json_job(out)["state"] == "CANCELLED"
    assert "did not complete" in err.strip().splitlines()[-1]


@pytest.mark.slurm
def test_cancel_refuses_what_is_not_a_job(slurm_site):
    proc = slurm_site.bfjobs("cancel", "nosuchjob")
    assert proc.returncode == 2 and proc.stderr.startswith("bfjobs: error: no bfjobs job")


def test_cancel_local_job_leaves_nothing(site):
    job = submit(site, "docker://alpine:localcancel", FAKE_APPTAINER_SLEEP="60")
    wait_for(lambda: partials_local(site), timeout=30)
    proc = site.bfjobs("cancel", job["id"])
    assert proc.returncode == 0, proc.stderr
    assert "cancelled (CANCELLED)" in proc.stdout
    assert not Path(f"/proc/{job['local_pid']}").exists() or not _is_controller(job["local_pid"])
    assert partials_local(site) == []
    assert not (site.app_dir / "images" / "alpine_localcancel.sif").exists()
    time.sleep(0.5)  # the task's error result lands after the signal: the DB must still say CANCELLED
    assert status(site, job["id"])["state"] == "CANCELLED"
    assert site.bfjobs("wait", job["id"]).returncode == 1


def partials_local(site) -> list[str]:
    d = site.app_dir / "images"
    return sorted(n for n in os.listdir(d) if n.startswith(".bfjobs-partial-")) if d.exists() else []


def _is_controller(pid: int) -> bool:
    try:
        return b"submitit.local._local" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


# ----------------------------------------------------------------------------- failures


@pytest.mark.slurm
def test_failed_and_killed_jobs_end_with_a_reason(slurm_site):
    site = slurm_site
    with ThreadPoolExecutor(2) as pool:
        killed_f = pool.submit(submit, site, "docker://alpine:killed", FAKE_APPTAINER_SLEEP="30")
        failed_f = pool.submit(submit, site, "docker://alpine:broken", FAKE_APPTAINER_FAIL_ON="broken")
    killed, failed = killed_f.result(), failed_f.result()
    wait_for(lambda: task_pids(killed["folder"]) and any(c["SLURM_JOB_ID"] == killed["slurm_job_id"]
                                                         for c in site.apptainer_calls()), timeout=60)
    # killed within a moment of its launch, before slurmd has reported the launch, Slurm may say
    # "JobLaunchFailure" rather than the signal (seen: 0.4 s after start): kill a job it knows runs
    wait_for(lambda: status(site, killed["id"])["state"] == "RUNNING", timeout=60)
    time.sleep(1)
    for pid in task_pids(killed["folder"]):
        os.kill(pid, signal.SIGKILL)  # the task's Python process on the node dies without a result
    proc = site.bfjobs("wait", killed["id"], failed["id"], "--json", "--timeout", "60")
    assert proc.returncode == 1
    by_id = {j["id"]: j for j in json_jobs(proc.stdout)}
    k, f = by_id[killed["id"]], by_id[failed["id"]]
    assert k["state"] == "FAILED" and k["result"] is None
    # the job script execs Python, so Slurm itself reports the signal that killed the job
    assert "without writing a result" in k["reason"] and "SIGKILL" in k["reason"], k["reason"]
    assert f["state"] == "FAILED" and "apptainer pull exited with code 255" in f["reason"]
    assert not (site.cache_dir / "images" / "alpine_killed.sif").exists()
    # the one-line reasons show in plain list and status output too
    listed = site.bfjobs("list", check=True).stdout
    assert re.search(rf"{failed['id']}\s+pull-image\s+FAILED .*apptainer pull exited with code 255", listed)
    assert re.search(rf"{killed['id']}\s+pull-image\s+FAILED .*without writing a result", listed)
    shown = site.bfjobs("status", failed["id"], check=True).stdout
    assert shown.splitlines()[0].split()[:3] == ["ID", "KIND", "STATE"] and "exited with code 255" in shown
    # the failing job's stderr log has apptainer's FATAL line
    err = site.bfjobs("logs", failed["id"], "--stderr", check=True).stdout
    assert "FATAL:" in err and "requested failure" in err
    for call in site.apptainer_calls():  # the orphaned stand-in of the killed task
        if call["SLURM_JOB_ID"] == killed["slurm_job_id"]:
            with __import__("contextlib").suppress(ProcessLookupError):
                os.kill(call["pid"], signal.SIGKILL)


@pytest.mark.slurm
def test_logs_follow_until_the_job_ends(slurm_site):
    site = slurm_site
    job = submit(site, "docker://alpine:follow", FAKE_APPTAINER_SLEEP="4")
    started = time.monotonic()
    proc = site.bfjobs("logs", job["slurm_job_id"], "--follow", timeout=90)
    assert proc.returncode == 0, proc.stderr
    assert "+ apptainer pull" in proc.stdout and "Creating SIF file" in proc.stdout
    assert proc.stdout.count("Converting OCI blobs") == 1  # each line once, however often it polled
    assert proc.stderr.strip() == f"bfjobs: job {job['id']} ended: COMPLETED"
    assert time.monotonic() - started >= 3
    # piped into head: stops quietly
    head = subprocess.run(
        f"{sys.executable} -m blackfish_jobs logs {job['id']} | head -c 10",
        shell=True, capture_output=True, text=True, env=site.env(),
    )
    assert head.returncode == 0 and len(head.stdout) == 10 and "Traceback" not in head.stderr
    # a job that fails: its log to the end, then exit 1 and why, in one line
    failing = submit(site, "docker://alpine:followfail", FAKE_APPTAINER_SLEEP="2", FAKE_APPTAINER_FAIL_ON="followfail")
    proc = site.bfjobs("logs", failing["id"], "--follow", timeout=90)
    assert proc.returncode == 1 and "+ apptainer pull" in proc.stdout, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"bfjobs: error: job {failing['id']} ended: FAILED ("), line


# ----------------------------------------------------------------------------- without accounting


@pytest.mark.slurm
def test_without_accounting_squeue_and_result_files_decide(slurm_site, calls):
    site = slurm_site
    noacct = calls.env(accounting=False)
    with ThreadPoolExecutor(2) as pool:
        ok_f = pool.submit(submit, site, "docker://alpine:noacct", FAKE_APPTAINER_SLEEP="3")
        bad_f = pool.submit(submit, site, "docker://alpine:noacct-bad", FAKE_APPTAINER_FAIL_ON="bad")
    ok, bad = ok_f.result(), bad_f.result()
    calls.clear()
    live = status(site, ok["id"], bad["id"], **noacct)
    assert {j["state"] for j in live} <= {"PENDING", "RUNNING", "FAILED"}
    assert calls.counts() == {"sacct": 1, "squeue": 1}  # one failed sacct, one squeue for both
    calls.clear()
    proc = site.bfjobs("wait", ok["id"], bad["id"], "--json", **noacct)
    assert proc.returncode == 1
    done = {j["id"]: j for j in json_jobs(proc.stdout)}
    assert done[ok["id"]]["state"] == "COMPLETED" and done[ok["id"]]["result"]["path"].endswith("alpine_noacct.sif")
    assert done[bad["id"]]["state"] == "FAILED" and "code 255" in done[bad["id"]]["reason"]
    counted = calls.counts()
    assert counted["sacct"] == 1  # accounting that is disabled is not asked again by the same process
    assert counted["squeue"] >= 1 and set(counted) == {"sacct", "squeue"}
    assert all(len(ids_in(c)) >= 1 for c in calls.calls())

    # Jobs the controller has forgotten (as after MinJobAge), with no accounting to ask:
    gone_ok = copy_row(site, done[ok["id"]], native_id=unknown_slurm_id(), age=timedelta(minutes=10),
                       with_result=True)
    gone_lost = copy_row(site, done[ok["id"]], native_id=unknown_slurm_id(), age=timedelta(minutes=10),
                         with_result=False)
    too_new = copy_row(site, done[ok["id"]], native_id=unknown_slurm_id(), age=timedelta(seconds=1),
                       with_result=False, state="PENDING")
    calls.clear()
    found = {j["id"]: j for j in status(site, gone_ok, gone_lost, too_new, **noacct)}
    assert calls.counts() == {"sacct": 1, "squeue": 1}
    assert found[gone_ok]["state"] == "COMPLETED" and found[gone_ok]["result"]["sha256"]
    assert found[gone_lost]["state"] == "UNKNOWN"
    assert "no accounting" in found[gone_lost]["reason"] and "no longer knows" in found[gone_lost]["reason"]
    assert found[too_new]["state"] == "PENDING"  # too new to be missing: not concluded yet
    started = time.monotonic()
    proc = site.bfjobs("wait", gone_lost, "--json", **noacct)
    assert proc.returncode == 1 and json_job(proc.stdout)["state"] == "UNKNOWN"
    assert time.monotonic() - started < 20
    assert "UNKNOWN" in proc.stderr


@pytest.mark.slurm
def test_vanished_job_with_accounting_is_unknown_and_wait_ends(slurm_site, calls):
    site = slurm_site
    job = submit(site, "docker://alpine:vanish")
    done = as_job(site.bfjobs("wait", job["id"], "--json"))
    lost = copy_row(site, done, native_id=unknown_slurm_id(), age=timedelta(minutes=10), with_result=False)
    calls.clear()
    proc = site.bfjobs("wait", lost, "--json", **calls.env())
    assert proc.returncode == 1
    row = json_job(proc.stdout)
    assert row["state"] == "UNKNOWN" and "known neither to accounting nor to the controller" in row["reason"]
    assert calls.counts() == {"sacct": 1, "squeue": 1}
    # the same job with its result file: accounting and controller forgot it, the folder did not
    back = copy_row(site, done, native_id=unknown_slurm_id(), age=timedelta(minutes=10), with_result=True)
    assert status(site, back)["state"] == "COMPLETED"


@pytest.mark.slurm
def test_accounting_window_is_local_time(slurm_site, calls):
    """``sacct -S`` is read in the local time zone: a UTC string would lie hours in the future west of UTC."""
    site = slurm_site
    job = submit(site, "docker://alpine:tz")
    done = as_job(site.bfjobs("wait", job["id"], "--json"))
    # the same Slurm job, as an unfinished row, refreshed from Los Angeles and from Tokyo
    for tz in ("America/Los_Angeles", "Asia/Tokyo"):
        again = copy_row(site, done, native_id=done["slurm_job_id"], age=timedelta(seconds=5), with_result=True)
        calls.clear()
        assert status(site, again, TZ=tz, **calls.env())["state"] == "COMPLETED"
        [call] = calls.calls()
        assert call["cmd"] == "sacct" and call["rc"] == 0, call


# ----------------------------------------------------------------------------- views


def _fill(site, n: int = 5) -> list[JobRow]:
    now = utcnow()
    states = [("COMPLETED", "FAILED", "RUNNING", "PENDING", "CANCELLED")[i % 5] for i in range(n)]
    return insert_rows(site.db_path, [
        job_row(i, kind="pull-image" if i % 2 else "download-model", state=state,
                reason="boom" if state == "FAILED" else None, node="vm", submitted_at=now - timedelta(hours=i),
                updated_at=now, location="shared" if i % 3 else "home")
        for i, state in enumerate(states)
    ])


def test_list_plain_filters_and_no_heavy_imports(site):
    _fill(site, 10)
    code = (
        "import sys\n"
        "from blackfish_jobs.cli import cli\n"
        "try:\n    cli.main(['list', '--since', '3h'], prog_name='bfjobs')\nexcept SystemExit:\n    pass\n"
        "print([m for m in ('submitit', 'huggingface_hub') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=site.env()).stdout
    lines = out.strip().splitlines()
    assert lines[-1] == "[]"
    assert lines[0].split() == [
        "ID", "KIND", "STATE", "SLURM", "ID", "NODE", "SUBMITTED", "PROFILE", "WHERE", "REVISION", "TARGET", "REASON",
    ]
    assert len(lines) == 1 + 3 + 1  # header, jobs submitted 0, 1 and 2 hours ago, the import check
    failed = site.bfjobs("list", "--state", "failed", "--limit", "0", check=True).stdout.splitlines()
    assert len(failed) == 3 and all(" FAILED " in line and line.endswith("boom") for line in failed[1:])
    js = as_jobs(site.bfjobs("list", "--kind", "download-model", "--json", "--limit", "2"))
    assert [j["kind"] for j in js] == ["download-model"] * 2
    bad = site.bfjobs("list", "--since", "yesterday-ish")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--since" in bad.stderr


def test_list_on_a_terminal_colours_states_and_shortens_targets(site):
    rows = _fill(site, 3)
    code, out = with_tty([sys.executable, "-m", "blackfish_jobs", "list"], site.env(TERM="xterm"))
    assert code == 0, out
    lines = out.strip().splitlines()
    assert lines[0].startswith("\x1b[1mID ")  # the header bold
    for row in rows:
        [line] = [line for line in lines if line.startswith(row.id)]
        colour = {"COMPLETED": "32", "FAILED": "31", "RUNNING": "36"}[row.state]
        assert f"\x1b[{colour}m{row.state}\x1b[0m" in line, line
        assert f" {Path(row.target).name} " in line + " " and row.target not in line
    # the columns line up once the colour codes are taken out
    plain = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in lines]
    at = plain[0].index("STATE")
    assert sorted(line[at:].split()[0] for line in plain[1:]) == sorted(r.state for r in rows)
    code, out = with_tty([sys.executable, "-m", "blackfish_jobs", "list"], site.env(NO_COLOR="1"))
    assert code == 0 and "\x1b[" not in out, out


def test_tables_show_profile_where_and_a_models_revision(site):
    """What an admin reads: whose profile, which cache, which commit; a terminal's short target
    keeps the whole path where the row cannot say which cache it is in."""
    now = utcnow()
    commit = "0123456789abcdef" * 2 + "01234567"
    model, home_image, old_image = insert_rows(site.db_path, [
        job_row(1, kind="download-model", profile="della", target="/cache/models/models--org--m",
                request={"repo_id": "org/m", "shared": True, "commit": commit}, location="shared",
                submitted_at=now - timedelta(minutes=1), state="COMPLETED"),
        job_row(2, target="/home/u/images/img2.sif", location="home", submitted_at=now - timedelta(minutes=2),
                state="COMPLETED"),
        job_row(3, target="/cache/images/img3.sif", submitted_at=now - timedelta(minutes=3), state="COMPLETED"),
    ])
    header, *lines = site.bfjobs("list", check=True).stdout.splitlines()
    at = {name: header.index(name) for name in ("PROFILE", "WHERE", "REVISION", "TARGET")}
    cells = [{name: line[i:].split()[0] for name, i in at.items()} for line in lines]
    assert [line.split()[0] for line in lines] == [model.id, home_image.id, old_image.id]  # newest first
    assert cells == [
        {"PROFILE": "della", "WHERE": "shared", "REVISION": commit[:12], "TARGET": model.target},
        {"PROFILE": "slurm", "WHERE": "home", "REVISION": "-", "TARGET": home_image.target},
        {"PROFILE": "slurm", "WHERE": "-", "REVISION": "-", "TARGET": old_image.target},
    ]
    jobs = as_jobs(site.bfjobs("list", "--json"))
    assert [j["where"] for j in jobs] == ["shared", "home", None]
    code, out = with_tty([sys.executable, "-m", "blackfish_jobs", "list"], site.env(NO_COLOR="1"))
    assert code == 0, out
    by_id = {line.split()[0]: line + " " for line in out.strip().splitlines()[1:]}
    assert " models--org--m " in by_id[model.id] and model.target not in by_id[model.id]
    assert " img2.sif " in by_id[home_image.id] and " home " in by_id[home_image.id]
    assert old_image.target in by_id[old_image.id]  # WHERE unknown: the whole path


def test_list_help_says_what_it_lists(site):
    text = " ".join(site.bfjobs("list", "--help", check=True).stdout.split())
    for words in ("every kind, state and profile", "newest first as `status` shows them", "WHERE", "REVISION"):
        assert words in text, text


@pytest.mark.slurm
def test_status_and_list_show_jobs_in_one_order(slurm_site, down):
    """Newest first in both; status with ids keeps the order asked."""
    site = slurm_site
    ids = [submit(site, f"docker://alpine:order{i}", "--partition", down.name, *to)["id"]
           for i, to in enumerate(((), ("--to", "home"), ()))]
    shown = [j for j in status(site) if j["id"] in ids]
    listed = [j for j in as_jobs(site.bfjobs("list", "--json")) if j["id"] in ids]
    assert [j["id"] for j in shown] == [j["id"] for j in listed] == ids[::-1]
    assert [j["where"] for j in shown] == ["shared", "home", "shared"]
    assert [j["id"] for j in status(site, *ids)] == ids
    plain = site.bfjobs("status", check=True).stdout.splitlines()
    assert [line.split()[0] for line in plain[1:] if line.split()[0] in ids] == ids[::-1]
    site.bfjobs("cancel", *ids, check=True)


def test_json_shape_is_the_documented_one(site):
    _fill(site, 1)
    [job] = as_jobs(site.bfjobs("list", "--json"))
    doc = (REPO / "docs" / "json.md").read_text()
    block = doc.split("## JOB", 1)[1].split("```json", 1)[1].split("```", 1)[0]
    documented = json.loads(block)
    assert list(job) == sorted(documented), set(job) ^ set(documented)
    for key in ("id", "slurm_job_id", "state", "reason", "result", "node", "submitted_at"):
        assert key in job


@pytest.mark.slurm
def test_wait_shows_progress_on_a_terminal(slurm_site):
    site = slurm_site
    job = submit(site, "docker://alpine:progress", FAKE_APPTAINER_SLEEP="3")
    code, out = with_tty([sys.executable, "-m", "blackfish_jobs", "wait", job["id"]], site.env(), timeout=90)
    assert code == 0, out
    assert re.search(rf"\r\[00:0\d\] {job['id']} (PENDING|RUNNING)", out), out
    assert "RUNNING on vm" in out or "COMPLETED on vm" in out
