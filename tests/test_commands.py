"""The commands' edges: Ctrl-C, job array ids and id resolution, render's checks, and the
smaller messages (model-table notice, wrong partition, unreachable controller, missing node
scratch, logs of a pending job). Real Slurm where a job is involved; CliRunner where in-process
is enough.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import pytest
from support.hub import DEMO_REPO_ID
from support.rows import job_row
from support.site import Site, as_job, as_jobs, json_job, json_jobs, wait_for
from support.slurm import make_call_log

from blackfish_jobs.errors import BadInput, JobNotFound
from blackfish_jobs.store import Database, JobRow, utcnow

submit = Site.submit_pull


def write_list(site, name: str, text: str) -> Path:
    path = site.root / name
    path.write_text(textwrap.dedent(text))
    return path


def interrupted(site, *args: str, settle: float = 3.0) -> subprocess.CompletedProcess:
    """Start ``bfjobs ARGS`` as a real process, let it get into its loop, send SIGINT (Ctrl-C)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "blackfish_jobs", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=site.env(),
    )
    time.sleep(settle)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


# ----------------------------------------------------------------------------- 8. Ctrl-C


@pytest.mark.slurm
def test_ctrl_c_exits_130_in_every_long_running_command(slurm_site, down):
    site = slurm_site
    job = submit(site, "docker://alpine:never", "--partition", down.name)
    for args in (["wait", job["id"]], ["logs", job["id"], "--follow"], ["wait", job["id"], "--timeout", "600"]):
        proc = interrupted(site, *args)
        assert proc.returncode == 130, (args, proc.stderr)
        assert proc.stderr.strip().splitlines()[-1] == "bfjobs: interrupted", args
        assert "Traceback" not in proc.stderr
    # submit --wait: the job is submitted and recorded, then the wait is interrupted
    proc = interrupted(site, "submit", "pull-image", "docker://alpine:never2", "--partition", down.name, "--wait",
                       settle=6.0)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "bfjobs: interrupted"
    assert proc.stdout.startswith("submitted ")
    # the job keeps its record: Ctrl-C ends the waiting, not the job
    listed = json_jobs(site.bfjobs("list", "--json", check=True).stdout)
    assert {j["request"]["uri"] for j in listed if j["state"] == "PENDING"} == {
        "docker://alpine:never", "docker://alpine:never2"
    }


# ----------------------------------------------------------------------------- 9. job array ids


@pytest.mark.slurm
def test_an_array_id_names_the_whole_array(slurm_site, down):
    site = slurm_site
    listing = write_list(site, "images.txt", "docker://alpine:a0\ndocker://alpine:a1\ndocker://alpine:a2\n")
    entries = as_jobs(site.bfjobs("submit", "pull-image", "--from-file", str(listing), "--partition", down.name,
                                  "--json"))
    array = entries[0]["slurm_job_id"].split("_")[0]
    ids = [e["id"] for e in entries]
    # status ARRAY: every element, in index order, as a JSON array
    shown = as_jobs(site.bfjobs("status", array, "--json"))
    assert [j["id"] for j in shown] == ids
    assert [j["slurm_job_id"] for j in shown] == [f"{array}_{i}" for i in range(3)]
    # an element's own Slurm id still names that one job (one JSON object)
    one = as_job(site.bfjobs("status", f"{array}_1", "--json"))
    assert one["id"] == ids[1]
    # wait ARRAY waits for all of them
    waited = site.bfjobs("wait", array, "--timeout", "0", "--json")
    assert waited.returncode == 1 and [j["id"] for j in json_jobs(waited.stdout)] == ids
    assert "timed out after 0 s: 3 of 3 job(s) not finished" in waited.stderr
    # logs ARRAY: one log per job, so one line naming the elements, exit 2
    logs = site.bfjobs("logs", array)
    assert logs.returncode == 2 and logs.stdout == ""
    [line] = logs.stderr.strip().splitlines()
    assert f"'{array}' is a Slurm job array of 3 jobs: name one of them:" in line
    assert all(i in line for i in ids) and f"Slurm job {array}_2" in line
    # cancel ARRAY: one scancel for all its elements
    calls = make_call_log(site.root)
    cancelled = site.bfjobs("cancel", array, "--json", **calls.env())
    assert cancelled.returncode == 0, cancelled.stderr
    assert [j["state"] for j in json_jobs(cancelled.stdout)] == ["CANCELLED"] * 3
    [scancel] = [c for c in calls.calls() if c["cmd"] == "scancel"]
    assert sorted(a for a in scancel["argv"] if a.startswith(array)) == [f"{array}_{i}" for i in range(3)]


def _row(job_id: str, native_id: str, folder: str, minutes: int = 0) -> JobRow:
    now = utcnow() - timedelta(minutes=minutes)
    return job_row(id=job_id, native_id=native_id, state="COMPLETED", folder=folder, target="/cache/images/x.sif",
                   request={"uri": "docker://x"}, node="vm", user="u", submitted_at=now, ended_at=now, updated_at=now)


def test_ids_resolve_exact_id_then_slurm_id_then_prefix(tmp_path):
    url = f"sqlite:///{tmp_path / 'app.sqlite'}"
    Database(url).insert_many([
        _row("3269abcdef01", "500", "/jobs/3269abcdef01"),  # its id starts like the array's Slurm id
        *[_row(f"e1e1e1e1e{i:03d}", f"3269_{i}", "/jobs/array") for i in (0, 1, 10, 2)],
        _row("700000000001", "700", "/jobs/old", minutes=600),  # a Slurm id reused after a reset
        _row("700000000002", "700", "/jobs/new"),
        _row("aaaa00000001", "901", "/jobs/a1"),
        _row("aaab00000002", "902", "/jobs/a2"),
    ])
    db = Database(url)
    # one job wanted, an array given (the id is also a prefix of a bfjobs id): the elements are listed
    with pytest.raises(BadInput, match=r"'3269' is a Slurm job array of 4 jobs: name one of them: e1e1"):
        db.resolve("3269")
    # exact bfjobs id
    assert [r.id for r in db.resolve_many("3269abcdef01")] == ["3269abcdef01"]
    # an exact Slurm id before a prefix: the array's id is all its elements, in index order
    assert [r.native_id for r in db.resolve_many("3269")] == ["3269_0", "3269_1", "3269_2", "3269_10"]
    assert db.resolve("3269_10").id == "e1e1e1e1e010"  # an element's own Slurm id: that one job
    assert db.resolve("500").id == "3269abcdef01"
    # a unique prefix last
    assert db.resolve("3269a").id == "3269abcdef01"
    assert db.resolve("aaab").id == "aaab00000002"
    # anything else lists the candidates in the one line
    with pytest.raises(JobNotFound) as ambiguous:
        db.resolve_many("aaa")
    text = str(ambiguous.value)
    assert "job id prefix 'aaa' is ambiguous" in text and "aaaa00000001" in text and "aaab00000002" in text
    assert "Slurm job 901" in text and "\n" not in text
    with pytest.raises(JobNotFound) as reused:
        db.resolve_many("700")
    assert "Slurm job id '700' is ambiguous" in str(reused.value)
    assert "700000000001" in str(reused.value) and "700000000002" in str(reused.value)
    with pytest.raises(JobNotFound, match="no bfjobs job"):
        db.resolve_many("3268")


# ----------------------------------------------------------------------------- 10. render = submit's checks


def test_render_of_a_present_image_prints_submits_message_and_no_script(cli, site):
    site.configure()
    images = site.cache_dir / "images"
    site.place_image("alpine_here.sif", "docker://alpine:here", b"already here")
    result = cli("render", "pull-image", "docker://alpine:here")
    assert result.exit_code == 0 and result.stdout == ""
    assert f"already present: {images / 'alpine_here.sif'}" in result.stderr
    # --force: submit would send it, so render prints the script
    forced = cli("render", "pull-image", "docker://alpine:here", "--force")
    assert forced.exit_code == 0 and forced.stdout.startswith("#!/bin/bash")


def test_render_refuses_what_submit_refuses(cli, site, read_only_cache):
    site.configure()
    result = cli("render", "pull-image", "docker://alpine:3.20")
    assert result.exit_code == 2 and result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("bfjobs: error: cannot write to the destination") and "--to home" in line
    assert cli("render", "pull-image", "docker://alpine:3.20", "--to", "home").stdout.startswith("#!/bin/bash")


def test_render_from_file_names_elements_and_skipped_entries(cli, site):
    site.configure()
    images = site.cache_dir / "images"
    site.place_image("alpine_here.sif", "docker://alpine:here", b"already here")
    listing = write_list(site, "l.txt", "docker://alpine:here\ndocker://alpine:new1\ndocker://alpine:new2\n")
    result = cli("render", "pull-image", "--from-file", str(listing))
    assert result.exit_code == 0
    assert "#SBATCH --array=0-1" in result.stdout
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"bfjobs: skipped docker://alpine:here -> {images / 'alpine_here.sif'}: already present: "
        f"{images / 'alpine_here.sif'} (use --force to pull again)",
        f"bfjobs: array element 0: docker://alpine:new1 -> {images / 'alpine_new1.sif'}",
        f"bfjobs: array element 1: docker://alpine:new2 -> {images / 'alpine_new2.sif'}",
    ]
    # all present: submit sends nothing and exits 0; so does render, with no script
    only = write_list(site, "only.txt", "docker://alpine:here\n")
    result = cli("render", "pull-image", "--from-file", str(only))
    assert result.exit_code == 0 and result.stdout == "" and "skipped docker://alpine:here" in result.stderr


@pytest.mark.slurm
def test_render_of_a_job_in_flight_and_logs_of_a_pending_job(slurm_site, down):
    site = slurm_site
    job = submit(site, "docker://alpine:flying", "--partition", down.name)
    proc = site.bfjobs("render", "pull-image", "docker://alpine:flying")
    assert proc.returncode == 0 and proc.stdout == ""
    assert f"already in flight: job {job['id']} (Slurm job {job['slurm_job_id']}, PENDING)" in proc.stderr
    listing = write_list(site, "l.txt", "docker://alpine:flying\ndocker://alpine:other\n")
    proc = site.bfjobs("render", "pull-image", "--from-file", str(listing))
    assert proc.returncode == 0 and "#SBATCH --array=0-0" in proc.stdout
    assert f"skipped docker://alpine:flying -> {job['target']}: already in flight: job {job['id']}" in proc.stderr
    # 11. logs of a job that has not started: says so (stderr), exit 0, nothing on stdout
    logs = site.bfjobs("logs", job["id"])
    assert logs.returncode == 0 and logs.stdout == ""
    [line] = logs.stderr.strip().splitlines()
    assert line.startswith(f"bfjobs: job {job['id']} is PENDING") and line.endswith("no log yet"), line


# ----------------------------------------------------------------------------- 11. smaller messages


@pytest.mark.slurm
def test_model_table_notice_comes_once_where_the_download_completes(slurm_site, hub):
    site = slurm_site
    site.configure(hub)
    job = as_job(site.bfjobs("submit", "download-model", DEMO_REPO_ID, "--revision", "dev", "--json"))
    seen: list[str] = []

    def completed() -> bool:
        proc = site.bfjobs("status", job["id"], "--json")
        seen.append(proc.stderr)
        return json_job(proc.stdout)["state"] == "COMPLETED"

    wait_for(completed, timeout=120, interval=1)
    notices = [e for e in seen if "kept in bfjobs' table only" in e]
    assert len(notices) == 1 and notices[0] == seen[-1]  # said by the status that saw it complete
    [line] = notices[0].strip().splitlines()
    assert line.startswith(f"bfjobs: 1 download(s) finished ({job['id']}) and kept in bfjobs' table only:")
    # later commands do not repeat it; an image job's wait says nothing about downloads
    image = submit(site, "docker://alpine:quiet")
    for args in (["status", job["id"]], ["wait", image["id"]], ["list"]):
        proc = site.bfjobs(*args)
        assert proc.returncode == 0 and "kept in bfjobs' table only" not in proc.stderr, (args, proc.stderr)
    # sync still says how many wait
    synced = site.bfjobs("sync", check=True)
    assert "1 waiting" in synced.stdout
    assert synced.stderr.count("kept in bfjobs' table only") == 1


@pytest.mark.slurm
def test_wrong_partition_lists_the_valid_ones(slurm_site):
    site = slurm_site
    valid = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, check=True).stdout.split()
    proc = site.bfjobs("submit", "pull-image", "docker://alpine:3.20", "--partition", "nosuchpart")
    assert proc.returncode == 1
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("bfjobs: error: sbatch refused the job: invalid partition specified: nosuchpart")
    assert line.endswith(f"(partitions here: {', '.join(valid)})"), line


@pytest.mark.slurm
def test_unreachable_controller_is_not_a_refusal(slurm_site, tmp_path):
    site = slurm_site
    conf = tmp_path / "slurm.conf"
    text = Path("/etc/slurm/slurm.conf").read_text()
    lines = [line for line in text.splitlines() if not line.startswith("SlurmctldPort")]
    conf.write_text("\n".join([*lines, "SlurmctldPort=6999"]) + "\n")  # nothing listens there
    proc = site.bfjobs("submit", "pull-image", "docker://alpine:3.20", SLURM_CONF=str(conf), timeout=120)
    assert proc.returncode == 1
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("bfjobs: error: could not submit the job: the Slurm controller is unreachable"), line
    assert "refused" not in line
    assert not (site.home_dir / "jobs" / "bfjobs").exists() or not any((site.home_dir / "jobs" / "bfjobs").iterdir())


@pytest.mark.slurm
def test_missing_node_scratch_is_a_one_line_reason(slurm_site, tmp_path):
    site = slurm_site
    missing = tmp_path / "no-such-scratch"
    proc = site.bfjobs("submit", "pull-image", "docker://alpine:scratch", "--wait", "--json",
                       BFJOBS_NODE_SCRATCH=str(missing))
    assert proc.returncode == 1
    job = json_job(proc.stdout)
    assert job["state"] == "FAILED"
    assert job["reason"].startswith(f"node-local scratch {missing} is not usable on "), job["reason"]
    assert "FileNotFoundError" not in job["reason"] and "Errno" not in job["reason"]
