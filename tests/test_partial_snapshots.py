"""Partial snapshots and where a model counts as present (issue 10, items 1 and 2).

Filters are additive as with ``hf download``: a later download of other files of the same commit
fills the same snapshot, and ``--force`` re-fetches only what its patterns select. Presence is
judged by the files the request selects, against the commit's listing huggingface_hub keeps in
``trees/<commit>.json``. ``--shared`` looks only at the shared cache; in home only ``refs/main``'s
snapshot is the default branch. Real Slurm jobs, the real huggingface_hub client, the test hub.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from support.hub import DEMO_FOLDER, DEMO_REPO_ID, snapshot_files
from support.site import Site, as_job, as_jobs, json_findings, json_job

from blackfish_jobs import verify

REPO = DEMO_REPO_ID
FOLDER = DEMO_FOLDER


run = Site.submit_download




def seed(models: Path, hub, revision: str | None = None, allow: list[str] | None = None) -> Path:
    """A snapshot put in a cache by huggingface_hub itself (as `hf download --cache-dir` would)."""
    from huggingface_hub import snapshot_download

    path = snapshot_download(REPO, revision=revision, cache_dir=models, endpoint=hub.url, allow_patterns=allow)
    return Path(path)


def fetched(hub) -> list[str]:
    """Files the client fetched since the last clear (one HEAD of its resolve URL each; LFS
    content then comes from the CDN by hash)."""
    return sorted(
        r.decoded_path.split("/resolve/", 1)[1].split("/", 1)[1]
        for r in hub.requests
        if r.listener == "hub" and r.method == "HEAD" and "/resolve/" in r.path
    )


def model_metadata(db: Path) -> dict[str, dict]:
    conn = sqlite3.connect(db)
    try:
        return {rev: json.loads(meta) for rev, meta in conn.execute("SELECT revision, metadata FROM model")}
    finally:
        conn.close()


def listed_bytes(hub, commit: str) -> int:
    return sum(len(data) for data in hub.get_repo(REPO).files_at(commit).values())


pytestmark = pytest.mark.slurm


def test_filters_are_additive_and_presence_follows_the_selection(blackfish_site, hub):
    site = blackfish_site
    repo = hub.get_repo(REPO)
    main = repo.branches["main"]
    full = repo.files_at(main)
    snapshot = site.home_dir / "models" / FOLDER / "snapshots" / main

    first = as_job(run(site, "--include", "*.json", "--wait"))
    assert first["state"] == "COMPLETED", first
    assert sorted(snapshot_files(snapshot)) == ["config.json", "tokenizer.json"]
    result = first["result"]
    assert (result["files"], result["listed_files"], result["partial"]) == (2, len(full), True)
    assert result["listed_bytes"] == listed_bytes(hub, main) and result["bytes"] < result["listed_bytes"]
    meta = model_metadata(site.db_path)[main]
    assert meta["partial"] is True and (meta["files_present"], meta["files_listed"]) == (2, len(full))
    assert meta["model_size_gb"] == round(listed_bytes(hub, main) / 1e9, 3) > 0  # the full size, not 0.0
    assert meta["size_source"] == "listing"
    checked = site.bfjobs("verify", first["id"])
    assert checked.returncode == 1 and checked.stdout.startswith("PARTIAL"), checked
    assert f"2 of {len(full)} listed files present" in checked.stdout

    # the same selection again: present; other files of the same commit: a job that fills the snapshot
    again = json_job(run(site, "--include", "*.json").stdout)
    found = again["result"]
    assert (again["state"], found["where"], found["commit"], found["ref"]) == ("PRESENT", "home", main, "main")
    config_link = os.lstat(snapshot / "config.json").st_ino
    hub.clear_requests()
    weights = as_job(run(site, "--include", "*.safetensors", "--wait"))
    assert weights.get("state") == "COMPLETED", weights  # old code: "already available"
    assert weights["result"]["already_present"] is False and weights["result"]["snapshot"] == str(snapshot)
    assert sorted(snapshot_files(snapshot)) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert os.lstat(snapshot / "config.json").st_ino == config_link  # kept, not re-published
    assert fetched(hub) == ["model.safetensors"]

    # a plain request wants every file: it fetches only the ones still absent
    hub.clear_requests()
    rest = as_job(run(site, "--wait"))
    assert rest.get("state") == "COMPLETED", rest
    assert fetched(hub) == sorted(set(full) - {"config.json", "tokenizer.json", "model.safetensors"})
    assert snapshot_files(snapshot) == full
    assert (rest["result"]["files"], rest["result"]["partial"]) == (len(full), False)
    assert rest["result"]["bytes"] == rest["result"]["listed_bytes"]
    meta = model_metadata(site.db_path)[main]
    assert "partial" not in meta and meta["model_size_gb"] == round(listed_bytes(hub, main) / 1e9, 3)
    assert json_job(run(site).stdout)["state"] == "PRESENT"
    checked = site.bfjobs("verify", rest["id"])
    assert checked.returncode == 0 and checked.stdout.startswith("OK"), checked
    assert list((site.home_dir / "models").rglob(".bfjobs*")) == []  # no staging, lock or temporary name left


def test_force_with_include_keeps_the_other_files(blackfish_site, hub):
    site = blackfish_site
    repo = hub.get_repo(REPO)
    dev = repo.branches["dev"]
    full = repo.files_at(dev)
    snapshot = site.home_dir / "models" / FOLDER / "snapshots" / dev
    assert as_job(run(site, "--revision", "dev", "--wait"))["state"] == "COMPLETED"
    hub.clear_requests()
    forced = as_job(run(site, "--revision", "dev", "--include", "*.json", "--force", "--wait"))
    assert forced["state"] == "COMPLETED", forced
    assert fetched(hub) == ["config.json", "tokenizer.json"]  # --force re-fetches what it selects...
    assert snapshot_files(snapshot) == full  # ...and removes nothing else
    assert (forced["result"]["files"], forced["result"]["partial"]) == (len(full), False)
    found = json_findings(site.bfjobs("verify", forced["id"], "--json").stdout)
    assert [(f["status"], f["checked_files"]) for f in found] == [("OK", len(full))]
    meta = model_metadata(site.db_path)[dev]
    assert meta["model_size_gb"] == round(listed_bytes(hub, dev) / 1e9, 3) > 0 and "partial" not in meta


def test_a_running_filtered_job_does_not_hold_back_other_files(slurm_site, hub):
    """An --include '*.json' job in flight does not fetch the weights a plain request asks for."""
    site = slurm_site
    site.configure(hub)
    # config.json (one chunk) arrives 10 s after it is asked for: the job is still in flight after two
    # more submits on a loaded machine (4 s after the chunk, as before, delayed nothing).
    hub.delay_per_chunk = 10
    partial = as_job(run(site, "--include", "config.json"))
    assert partial["state"] in ("PENDING", "RUNNING")
    plain = as_job(run(site))
    assert plain["in_flight"] is False and plain["id"] != partial["id"], plain  # old code: "already in flight"
    again = as_job(run(site, "--include", "config.json"))
    assert again.get("in_flight") is True and again["id"] == partial["id"], again  # the same selection: that job
    hub.delay_per_chunk = 0
    done = as_jobs(site.bfjobs("wait", partial["id"], plain["id"], "--json", timeout=180))
    assert [j["state"] for j in done] == ["COMPLETED", "COMPLETED"], done
    main = hub.get_repo(REPO).branches["main"]
    assert snapshot_files(site.home_dir / "models" / FOLDER / "snapshots" / main) == hub.get_repo(REPO).files_at(main)


def test_patterns_that_match_nothing_fail_clearly(slurm_site, hub):
    site = slurm_site
    site.configure(hub)
    job = as_job(run(site, "--include", "*.gguf", "--wait"))
    assert job["state"] == "FAILED" and "matches --include/--exclude" in job["reason"], job
    assert not (site.home_dir / "models" / FOLDER / "snapshots").exists() or not os.listdir(
        site.home_dir / "models" / FOLDER / "snapshots"
    )


def test_shared_looks_only_at_the_shared_cache(slurm_site, hub):
    """Home copies of dev and v1.0 do not answer for --shared (one request, then a --from-file list)."""
    site = slurm_site
    site.configure(hub)
    repo = hub.get_repo(REPO)
    home = site.home_dir / "models"
    seed(home, hub, "dev")
    seed(home, hub, "v1.0")
    shared = site.cache_dir / "models" / FOLDER / "snapshots"
    job = as_job(run(site, "--revision", "dev", "--to", "shared", "--wait"))
    assert job.get("state") == "COMPLETED", job  # old code: "already available ... in your home cache"
    assert job["result"]["snapshot"] == str(shared / repo.branches["dev"])
    listing = site.root / "list.txt"
    listing.write_text(f"{REPO}@v1.0\n{REPO}@dev\n")
    jobs = as_jobs(site.bfjobs("submit", "download-model", "--from-file", str(listing), "--shared", "--wait", "--json"))
    by_state = sorted((j["state"], j["result"].get("where")) for j in jobs)
    assert by_state == [("COMPLETED", None), ("PRESENT", "shared")], jobs
    assert sorted(os.listdir(shared)) == sorted([repo.tags["v1.0"], repo.branches["dev"]])
    # without --shared the shared cache is still looked at first
    assert json_job(run(site, "--revision", "dev").stdout)["result"]["where"] == "shared"


def test_home_copy_of_another_branch_is_not_the_default_branch(slurm_site, hub):
    site = slurm_site
    site.configure(hub)
    repo = hub.get_repo(REPO)
    home = site.home_dir / "models"
    seed(home, hub, "dev")
    job = as_job(run(site, "--wait"))
    assert job.get("state") == "COMPLETED", job  # old code: dev's snapshot "already available" as main
    main = repo.branches["main"]
    assert job["result"]["commit"] == main
    present = json_job(run(site).stdout)
    found = present["result"]
    assert (present["state"], found["where"], found["commit"], found["ref"]) == ("PRESENT", "home", main, "main")


def test_any_shared_snapshot_answers_and_is_named(site, hub):
    """No revision: a shared snapshot of another branch is used as it is, and the answer names it."""
    site.configure(hub)
    repo = hub.get_repo(REPO)
    seed(site.cache_dir / "models", hub, "dev")
    seed(site.home_dir / "models", hub)  # home's main comes second: the shared cache is looked at first
    proc = site.bfjobs("submit", "download-model", REPO)
    dev = repo.branches["dev"]
    assert proc.returncode == 0 and f"commit {dev} in the shared cache" in proc.stdout and "(ref: dev)" in proc.stdout
    present = json_job(run(site).stdout)
    assert (present["result"]["where"], present["result"]["commit"], present["result"]["ref"]) == ("shared", dev, "dev")
    # a shared snapshot missing the selected files does not answer; home's complete main does
    seed(site.cache_dir / "models", hub, "main", allow=["*.json"])
    os.utime(site.cache_dir / "models" / FOLDER / "snapshots" / repo.branches["main"])
    present = json_job(run(site, "--include", "*.safetensors").stdout)
    assert (present["result"]["where"], present["result"]["commit"]) == ("home", repo.branches["main"]), present


def test_verify_says_partial_unverified_corrupt_or_ok(site, hub):
    """verify_snapshot on snapshots huggingface_hub itself wrote (no job needed)."""
    models = site.home_dir / "models"
    snapshot = seed(models, hub, "dev", allow=["*.json"])
    repo_dir = snapshot.parent.parent
    listed = len(hub.get_repo(REPO).files_at(snapshot.name))
    found = verify.verify_snapshot(snapshot)
    assert (found.status, found.checked_files) == (verify.PARTIAL, 2)
    assert found.problem.startswith(f"2 of {listed} listed files present")
    seed(models, hub, "dev")
    assert verify.verify_snapshot(snapshot).status == verify.OK
    listing = repo_dir / "trees" / f"{snapshot.name}.json"
    saved = listing.read_bytes()
    listing.unlink()
    found = verify.verify_snapshot(snapshot)
    assert found.status == verify.UNVERIFIED and "no tree listing" in found.problem
    blob = (snapshot / "config.json").resolve()
    blob.rename(blob.with_name("gone"))
    assert verify.verify_snapshot(snapshot).status == verify.CORRUPT  # a dangling link, listing or not
    listing.write_bytes(saved)
    found = verify.verify_snapshot(snapshot)
    assert (found.status, found.problem) == (verify.CORRUPT, "config.json: blob missing")
    blob.with_name("gone").rename(blob)
    (snapshot / "tokenizer.json").resolve().write_text("{}")
    assert verify.verify_snapshot(snapshot).status == verify.CORRUPT
    assert verify.verify_snapshot(snapshot.parent / ("0" * 40)).status == verify.MISSING
