"""Progress a person can see (issue 11, item 5): records the node writes into the job folder, read by
``status``/``wait`` for RUNNING jobs, shown as fields in ``--json`` and as updating lines on a terminal.

Real cluster, real huggingface_hub against the throttled test hub (``delay_per_chunk``), the
apptainer stand-in (``FAKE_APPTAINER_SLEEP`` holds it after writing half the image).
"""

from __future__ import annotations

import hashlib
import re
import sys
import threading
from pathlib import Path

import pytest
from support.hub import DEMO_REPO_ID, MiB, pseudo_random_bytes
from support.rows import job_row
from support.site import as_job, wait_for, with_tty

from blackfish_jobs.node import progress

SECRET = "hf_progressSecretToken0123456789"


def status(site, job_id: str) -> dict:
    return as_job(site.bfjobs("status", job_id, "--json"))


def running_with(site, job_id: str, check) -> dict:
    """Poll ``status --json`` until the job is RUNNING and its progress passes ``check``."""

    def seen() -> dict | None:
        job = status(site, job_id)
        assert job["state"] in ("PENDING", "RUNNING"), job
        return job if job["state"] == "RUNNING" and job["progress"] and check(job["progress"]) else None

    return wait_for(seen, timeout=120, interval=0.5)


def selected_sizes(hub, revision: str) -> dict[str, int]:
    return {path: len(data) for path, data in hub.get_repo(DEMO_REPO_ID).files_at(revision).items()}


def cache_names(site) -> list[str]:
    """Every path in the model and image caches, shared and home (the job folders are elsewhere)."""
    roots = [base / kind for base in (site.cache_dir, site.home_dir) for kind in ("models", "images", ".bfjobs")]
    return [str(p) for root in roots for p in root.rglob("*")]


def assert_final(record: dict, total: int, files: int) -> None:
    assert record["final"] is True, record
    assert record["bytes_done"] == record["bytes_total"] == total, record
    assert record["files_done"] == record["files_total"] == files, record
    assert record["eta_seconds"] == 0, record
    assert record["started_at"] <= record["updated_at"], record


@pytest.mark.slurm
def test_running_download_reports_bytes_then_final_figures(slurm_site, hub):
    site = slurm_site
    site.configure(hub)
    hub.delay_per_chunk = 0.25  # 64 KiB every 0.25 s: the 3 MiB weights take ~12 s
    sizes = selected_sizes(hub, "main")
    job = as_job(site.bfjobs("submit", "download-model", DEMO_REPO_ID, "--json", HF_TOKEN=SECRET))
    seen = running_with(site, job["id"], lambda p: 0 < p["bytes_done"] < (p["bytes_total"] or 0))
    figures = seen["progress"]
    assert figures["bytes_total"] == sum(sizes.values()) and figures["files_total"] == len(sizes), figures
    assert figures["final"] is False and figures["files_done"] < len(sizes)
    # the table shows it in the STATE cell
    table = site.bfjobs("status", job["id"]).stdout
    assert re.search(rf"^{job['id']}\s+download-model\s+RUNNING \([0-9.]+ [kM]?B of 3\.\d MB", table, re.M), table
    hub.delay_per_chunk = 0
    done = as_job(site.bfjobs("wait", job["id"], "--json"))
    assert done["state"] == "COMPLETED", done
    assert_final(done["progress"], sum(sizes.values()), len(sizes))
    assert status(site, job["id"])["progress"] == done["progress"]  # a finished job keeps its final figures
    # the record is in the job folder, holds no secret, and nothing of it is in the caches
    record = Path(job["folder"]) / f"{job['slurm_job_id']}_0_progress.json"
    assert SECRET not in record.read_text()
    assert not [n for n in cache_names(site) if progress.SUFFIX in n]


@pytest.mark.slurm
def test_blobs_shared_with_another_commit_count_as_done_and_are_not_fetched(slurm_site, hub):
    """Branch ``big`` keeps main's weights and adds a file: once main is in the cache, the job for
    ``big`` fetches only what main lacks, and its figures count the weights as done from the start."""
    site = slurm_site
    site.configure(hub)
    repo = hub.get_repo(DEMO_REPO_ID)
    first = as_job(site.bfjobs("submit", "download-model", DEMO_REPO_ID, "--wait", "--json"))
    assert first["state"] == "COMPLETED", first
    extra = pseudo_random_bytes(MiB, "progress-extra")
    repo.create_branch("big", "main")
    repo.commit({"extra.bin": extra}, branch="big")  # *.bin: an LFS file, served by the CDN
    weights = repo.files_at("main")["model.safetensors"]
    hub.clear_requests()
    hub.delay_per_chunk = 0.25  # the new 1 MiB file takes ~4 s
    job = as_job(site.bfjobs("submit", "download-model", DEMO_REPO_ID, "--revision", "big", "--json"))
    seen = running_with(site, job["id"], lambda p: p["bytes_total"] is not None and p["bytes_done"] < p["bytes_total"])
    assert seen["progress"]["bytes_done"] >= len(weights), seen["progress"]
    hub.delay_per_chunk = 0
    done = as_job(site.bfjobs("wait", job["id"], "--json"))
    assert done["state"] == "COMPLETED", done
    sizes = selected_sizes(hub, "big")
    assert_final(done["progress"], sum(sizes.values()), len(sizes))
    fetched = {r.path.rsplit("/", 1)[-1] for r in hub.requests if r.method == "GET" and r.listener == "cdn"}
    assert fetched == {hashlib.sha256(extra).hexdigest()}, fetched  # main's weights were not downloaded again
    snapshot = Path(done["result"]["snapshot"])
    assert (snapshot / "model.safetensors").read_bytes() == weights and (snapshot / "extra.bin").read_bytes() == extra


@pytest.mark.slurm
def test_running_pull_reports_bytes_so_far(slurm_site):
    site = slurm_site
    size = 3_000_000
    env = {"FAKE_APPTAINER_SIZE": str(size), "FAKE_APPTAINER_SLEEP": "60"}
    job = as_job(site.bfjobs("submit", "pull-image", "docker://alpine:progress", "--json", **env))
    seen = running_with(site, job["id"], lambda p: p["bytes_done"] > 0)
    figures = seen["progress"]
    assert figures["bytes_done"] == size // 2 and figures["bytes_total"] is None, figures  # the stand-in's first half
    assert figures["files_done"] == 0 and figures["files_total"] == 1 and figures["eta_seconds"] is None
    assert not [n for n in cache_names(site) if progress.SUFFIX in n]
    cancelled = as_job(site.bfjobs("cancel", job["id"], "--json"))
    assert cancelled["state"] == "CANCELLED", cancelled
    # a failed job's record still ends with final figures: nothing is in place
    final = as_job(site.bfjobs("wait", job["id"], "--json"))["progress"]
    assert final["final"] is True and final["bytes_done"] == 0 and final["files_done"] == 0, final
    # a pull that completes: its size is the total
    done = as_job(site.bfjobs("submit", "pull-image", "docker://alpine:progress2", "--wait", "--json",
                               FAKE_APPTAINER_SIZE=str(size)))
    assert done["state"] == "COMPLETED", done
    assert_final(done["progress"], size, 1)


def test_readers_never_see_a_torn_record(tmp_path: Path):
    """A reader polling while the reporter replaces the record thousands of times always gets a
    whole record (a writer truncating the file in place would hand it empty or half files)."""
    path = tmp_path / "7_0_progress.json"
    count = iter(range(10**9))
    reporter = progress.Reporter(path, lambda: progress.Sample(next(count) * 1000, 10**12, 1, 3))
    reporter.tick()
    stop = threading.Event()
    reads: list[dict | None] = []

    def read() -> None:
        while not stop.is_set():
            reads.append(progress.read(path))

    reader = threading.Thread(target=read)
    reader.start()
    for _ in range(3000):
        reporter.tick()
    stop.set()
    reader.join()
    assert reads and all(r is not None and r["files_total"] == 3 for r in reads), sum(r is None for r in reads)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind


@pytest.mark.slurm
def test_wait_on_a_terminal_updates_one_line_per_job(slurm_site, hub):
    site = slurm_site
    site.configure(hub)
    hub.delay_per_chunk = 0.2
    model = as_job(site.bfjobs("submit", "download-model", DEMO_REPO_ID, "--json"))
    image = as_job(site.bfjobs("submit", "pull-image", "docker://alpine:tty", "--json",
                                FAKE_APPTAINER_SIZE="2000000", FAKE_APPTAINER_SLEEP="15"))
    ids = [model["id"], image["id"]]
    code, out = with_tty([sys.executable, "-m", "blackfish_jobs", "wait", *ids], site.env(TERM="xterm"), timeout=180)
    assert code == 0, out
    # each job has its own line, redrawn in place: back up one line, then both lines again
    assert re.search(rf"\r\[\d\d:\d\d\] {model['id']} RUNNING on vm: [0-9.]+ [kM]?B of 3\.\d MB", out), out
    assert re.search(rf"\r\[\d\d:\d\d\] {image['id']} RUNNING on vm: 1\.0 MB so far", out), out
    assert "\x1b[1A\r[" in out, out
    # not on a terminal: the same wait draws nothing, so no control character reaches a log
    again = site.bfjobs("wait", *ids)
    assert again.returncode == 0 and "\x1b" not in again.stderr + again.stdout and "\r" not in again.stderr


def test_only_running_and_ended_jobs_records_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """PENDING jobs are not looked at (a long queue costs no file reads); RUNNING and ended ones are."""
    from blackfish_jobs.backends import folder as job_folder

    rows = []
    for i, state in enumerate(("PENDING", "RUNNING", "COMPLETED")):
        folder = tmp_path / f"job{i}"
        folder.mkdir()
        row = job_row(i, profile="laptop", native_id=str(100 + i), state=state, folder=str(folder), target="/x.sif",
                      request={}, user=None)
        progress.Reporter(progress.record_path(folder, row.native_id), lambda: progress.Sample(5, None, 0, 1)).tick()
        rows.append(row)
    opened: list[str] = []
    real = progress.read
    monkeypatch.setattr(progress, "read", lambda path: opened.append(Path(path).name) or real(path))
    found = job_folder.read_progress(rows)
    assert sorted(found) == [rows[1].id, rows[2].id] and opened == ["101_0_progress.json", "102_0_progress.json"]
    assert found[rows[1].id]["bytes_done"] == 5 and set(found[rows[1].id]) == {*progress.FIELDS, "final"}
