"""`bfjobs submit download-model`: real huggingface_hub inside real Slurm jobs, from a local hub.

Covers the admin guide's rule (shared cache first, never "latest" over a shared copy), atomic
publication, permissions, the Blackfish ``model`` table, include/exclude, moving branches,
mid-download failures and tokens.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import hub_and_mirror
from support.blackfish import create_blackfish_db
from support.hub import DEMO_FOLDER, DEMO_REPO_ID, snapshot_files
from support.site import Site, as_job, json_job

REPO = DEMO_REPO_ID
FOLDER = DEMO_FOLDER


run = Site.submit_download




def names(directory: Path) -> list[str]:
    return sorted(os.listdir(directory)) if directory.exists() else []


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def assert_public_and_clean(models: Path) -> None:
    """755 everywhere, nothing group/world-writable, no staging, locks or *.incomplete."""
    for path in [models, *models.rglob("*")]:
        if path.is_symlink():
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == 0o755, (path, oct(mode))
        name = path.name
        assert not name.endswith((".incomplete", ".lock")), path
        assert not name.startswith((".bfjobs-staging", ".bfjobs-old", ".locks")), path


def model_rows(db: Path) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(
            "SELECT id, repo, profile, revision, image, created_at, updated_at, model_dir, metadata FROM model"
        ).fetchall()
    finally:
        conn.close()


pytestmark = pytest.mark.slurm


@hub_and_mirror
def test_download_to_home_and_register(blackfish_site, hub):
    site = blackfish_site
    repo = hub.get_repo(REPO)
    rendered = site.bfjobs("render", "download-model", REPO, "--revision", "dev", check=True).stdout
    assert f"export HF_ENDPOINT={hub.url}" in rendered
    job = as_job(run(site, "--revision", "dev", "--wait"))
    assert job["state"] == "COMPLETED", job
    result = job["result"]
    commit = repo.branches["dev"]
    home_models = site.home_dir / "models"
    assert result["commit"] == commit
    assert result["model_dir"] == str(home_models / FOLDER) == job["target"]
    assert result["snapshot"] == str(home_models / FOLDER / "snapshots" / commit)
    pipeline = "unknown" if hub.minimal else "text-generation"  # a mirror may omit it: Blackfish's own "unknown"
    assert result["pipeline_tag"] == pipeline
    files = snapshot_files(Path(result["snapshot"]))
    assert files == {k: bytes(v) if not isinstance(v, bytes) else v for k, v in repo.files_at(commit).items()}
    assert result["files"] == len(files) and result["bytes"] == sum(map(len, files.values()))
    assert (home_models / FOLDER / "refs" / "dev").read_text() == commit
    assert_public_and_clean(home_models)
    assert not (site.cache_dir / "models").exists()  # users' downloads never touch the shared cache
    # Blackfish's model table, as Blackfish 1.0 stores rows
    [(rid, repo_id, profile, revision, image, created, updated, model_dir, meta)] = model_rows(site.db_path)
    assert isinstance(rid, bytes) and len(rid) == 16
    assert (repo_id, profile, revision, image, model_dir) == (
        REPO, "slurm", commit, pipeline, str(home_models / FOLDER)
    )
    assert len(created) == 26 and created[10] == " " and created == updated  # naive UTC text
    meta = json.loads(meta)
    assert set(meta) >= {"model_size_gb", "size_source", "fetched_at"}
    assert job["registered_at"]
    # render, submit and the job asked only what the server serves (a minimal mirror: snapshot_download's requests)
    assert [r.decoded_path for r in hub.requests if r.status == 404] == []
    # Blackfish's other tables are untouched
    conn = sqlite3.connect(site.db_path)
    for table in ("download_task", "service", "jobs"):
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)


@hub_and_mirror
def test_rule_shared_copy_is_used_as_is(slurm_site, hub):
    """An admin's shared download is what users get: no revision → nothing submitted."""
    site = slurm_site
    site.configure(hub)
    repo = hub.get_repo(REPO)
    admin = as_job(run(site, "--to", "shared", "--wait"))
    assert admin["state"] == "COMPLETED"
    main = repo.branches["main"]
    shared_models = site.cache_dir / "models"
    assert admin["result"]["snapshot"] == str(shared_models / FOLDER / "snapshots" / main)
    assert_public_and_clean(shared_models)
    # the hub moves on: a user without --revision still gets the shared commit, nothing is submitted
    repo.commit({"config.json": '{"moved": true}\n'}, branch="main")
    user = run(site)
    assert user.returncode == 0
    present = json_job(user.stdout)
    assert {k: present[k] for k in ("id", "kind", "state", "profile", "target")} == {
        "id": None, "kind": "download-model", "state": "PRESENT", "profile": "slurm",
        "target": str(shared_models / FOLDER),
    }
    assert present["result"] == {
        "commit": main, "where": "shared", "snapshot": str(shared_models / FOLDER / "snapshots" / main),
        "model_dir": str(shared_models / FOLDER), "ref": "main",
    }
    assert "already available: commit " + main + " in the shared cache" in site.bfjobs(
        "submit", "download-model", REPO).stdout
    # the shared commit or its recorded branch name, asked for explicitly: nothing to do either
    assert json_job(run(site, "--revision", main).stdout)["result"]["where"] == "shared"
    assert json_job(run(site, "--revision", "main").stdout)["result"]["commit"] == main
    # a different revision goes to home_dir, never over the shared copy
    v1 = as_job(run(site, "--revision", "v1.0", "--wait"))
    assert v1["state"] == "COMPLETED"
    assert v1["result"]["snapshot"] == str(site.home_dir / "models" / FOLDER / "snapshots" / repo.tags["v1.0"])
    assert names(shared_models / FOLDER / "snapshots") == [main]
    assert not (site.home_dir / "jobs" / "bfjobs").exists() or len(os.listdir(site.home_dir / "jobs" / "bfjobs")) == 2
    # after a shared download, huggingface_hub itself finds it offline with no request
    hub.clear_requests()
    code = (
        "import os; os.environ['HF_HUB_OFFLINE']='1'\n"
        "from huggingface_hub import snapshot_download\n"
        f"print(snapshot_download({REPO!r}, revision={main!r}, cache_dir={str(shared_models)!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "HF_ENDPOINT": hub.url})
    assert out.stdout.strip() == str(shared_models / FOLDER / "snapshots" / main)
    assert hub.requests == []


@hub_and_mirror
def test_rule_home_copy_and_force(slurm_site, hub):
    site = slurm_site
    site.configure(hub)
    repo = hub.get_repo(REPO)
    first = as_job(run(site, "--wait"))
    main = repo.branches["main"]
    assert first["result"]["commit"] == main and first["target"].startswith(str(site.home_dir))
    # no revision, nothing shared, home has it: nothing to do
    again = json_job(run(site).stdout)
    assert (again["state"], again["result"]["where"], again["result"]["commit"]) == ("PRESENT", "home", main)
    # the commit sha itself: nothing to do
    assert json_job(run(site, "--revision", main).stdout)["state"] == "PRESENT"
    # --force downloads again into the chosen destination (home), same commit, one snapshot
    forced = as_job(run(site, "--force", "--wait"))
    assert forced["state"] == "COMPLETED" and forced["result"]["commit"] == main
    assert names(site.home_dir / "models" / FOLDER / "snapshots") == [main]
    assert_public_and_clean(site.home_dir / "models")


def test_branch_moves_on_the_hub(blackfish_site, hub):
    site = blackfish_site
    repo = hub.get_repo(REPO)
    old = repo.branches["dev"]
    as_job(run(site, "--revision", "dev", "--wait"))
    new = repo.commit({"config.json": '{"dev": 2}\n'}, branch="dev")
    # the recorded ref still names a present snapshot: revision-pinned, nothing silently changes
    assert json_job(run(site, "--revision", "dev").stdout)["result"]["commit"] == old
    moved = as_job(run(site, "--revision", "dev", "--force", "--wait"))
    assert moved["result"]["commit"] == new
    base = site.home_dir / "models" / FOLDER
    assert names(base / "snapshots") == sorted([old, new])
    assert (base / "refs" / "dev").read_text() == new
    # one model row per commit, never a duplicate
    assert sorted(r[3] for r in model_rows(site.db_path)) == sorted([old, new])
    # downloading the same commit again updates its row
    before = {r[3]: r for r in model_rows(site.db_path)}
    as_job(run(site, "--revision", new, "--force", "--wait"))
    after = {r[3]: r for r in model_rows(site.db_path)}
    assert len(after) == 2 and after[new][0] == before[new][0] and after[new][6] > before[new][6]


def test_include_and_exclude(slurm_site, hub):
    site = slurm_site
    site.configure(hub)
    job = as_job(run(site, "--revision", "v1.0", "--include", "*.json", "--include", "sub/*",
                      "--exclude", "tokenizer.json", "--wait"))
    assert job["state"] == "COMPLETED"
    assert sorted(snapshot_files(Path(job["result"]["snapshot"]))) == ["config.json", "sub/extra.txt"]


def test_mid_download_failure_leaves_shared_cache_clean(slurm_site, hub):
    site = slurm_site
    site.configure(hub)
    hub.fail_mid_file = "model.safetensors"
    hub.fail_mode = "reset"
    hub.fail_times = 1
    failed = as_job(run(site, "--shared", "--wait"))
    assert failed["state"] == "FAILED" and failed["reason"]
    assert hub.failures_injected == 1
    shared = site.cache_dir / "models"
    assert names(shared / FOLDER / "snapshots") == []
    assert [p for p in tree(shared) if "incomplete" in p or "staging" in p or ".lock" in p] == []
    ok = as_job(run(site, "--shared", "--wait"))
    assert ok["state"] == "COMPLETED"
    assert_public_and_clean(shared)


def test_token_is_used_but_never_written(slurm_site, hub):
    site = slurm_site
    site.configure(hub)
    canary = "hf_CANARYtoken1234567890abcdef"
    hub.require_token = canary
    denied = run(site, "--wait", HF_TOKEN="")  # refused at submit: the hub says no before a job is spent
    assert denied.returncode == 1 and denied.stdout == ""
    assert "is restricted: set HF_TOKEN" in denied.stderr
    job = as_job(run(site, "--revision", "dev", "--wait", HF_TOKEN=canary))
    assert job["state"] == "COMPLETED"
    assert any(r.has_auth for r in hub.requests)
    for path in [*site.root.rglob("*")]:
        if path.is_file() and not path.is_symlink():
            assert canary.encode() not in path.read_bytes(), path


def test_model_table_absent_then_sync(slurm_site, hub):
    site = slurm_site
    site.configure(hub)
    proc = run(site, "--revision", "dev", "--wait")
    job = as_job(proc)
    assert job["state"] == "COMPLETED" and job["registered_at"] is None
    assert "no Blackfish 'model' table" in proc.stderr
    create_blackfish_db(site.db_path)  # Blackfish initialises its database later
    synced = site.bfjobs("sync", check=True)
    assert "registered 1 model(s)" in synced.stdout
    [row] = model_rows(site.db_path)
    assert row[3] == job["result"]["commit"]
    assert json_job(site.bfjobs("status", job["id"], "--json", check=True).stdout)["registered_at"]


def test_shared_refused_when_cache_not_writable(site, hub, read_only_cache):
    site.configure(hub)
    proc = site.bfjobs("submit", "download-model", REPO, "--shared")
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert "cannot write to the destination" in line and "--to shared is for the shared cache's admins" in line
