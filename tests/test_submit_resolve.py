"""`bfjobs submit download-model` asks the hub before spending a job (issue 10, item 7).

A repo, branch or commit that does not exist is refused at submit (one line, exit 1, no sbatch
call, no job folder, no DB row); a hit pins the job to the commit the hub named; where the hub
cannot be asked from here the job is submitted as before and the node resolves. Real Slurm, the
real huggingface_hub client, the test hub.
"""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest
from conftest import hub_and_mirror
from support.hub import DEMO_FOLDER, DEMO_REPO_ID, HubServer, make_demo_repo
from support.site import as_job, json_job, json_jobs

pytestmark = pytest.mark.slurm

REPO = DEMO_REPO_ID
FOLDER = DEMO_FOLDER


def job_rows(site) -> int:
    if not site.db_path.exists():
        return 0
    conn = sqlite3.connect(site.db_path)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return conn.execute("SELECT count(*) FROM bfjobs_jobs").fetchone()[0] if "bfjobs_jobs" in tables else 0
    finally:
        conn.close()


def assert_nothing_submitted(site, calls, proc: subprocess.CompletedProcess) -> str:
    """Exit 1, one ``bfjobs: error:`` line, no sbatch call, no job folder, no DB row."""
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    [line] = proc.stderr.splitlines()
    assert line.startswith("bfjobs: error: ") and "nothing submitted" in line, line
    assert proc.stdout == ""
    assert calls.counts()["sbatch"] == 0
    jobs = site.home_dir / "jobs" / "bfjobs"
    assert not jobs.exists() or list(jobs.iterdir()) == []
    assert job_rows(site) == 0
    return line


@pytest.mark.parametrize("case", ["repo", "branch", "commit"])
@hub_and_mirror
def test_a_miss_is_refused_before_any_job(slurm_site, hub, calls, case):
    site = slurm_site
    site.configure(hub)
    repo, args = {
        "repo": ("bfjobs-test/no-such-model", []),
        "branch": (REPO, ["--revision", "no-such-branch"]),
        "commit": (REPO, ["--revision", "0123456789abcdef0123456789abcdef01234567"]),
    }[case]
    proc = site.bfjobs("submit", "download-model", repo, *args, "--wait", **calls.env())
    line = assert_nothing_submitted(site, calls, proc)
    revision = args[1] if args else "main"
    assert repo in line and hub.url in line
    assert f"{revision!r} not found" in line if case != "repo" else f"{repo}@main: repository not found" in line
    # the request snapshot_download makes, with the revision explicit (main when none is given)
    asked = [r.decoded_path for r in hub.requests]
    assert asked == [f"/api/models/{repo}/revision/{revision}"], asked


def test_gated_repo_without_token_is_refused(slurm_site, hub, calls):
    site = slurm_site
    site.configure(hub)
    hub.require_token = "hf_CANARYgated0123456789abcdef"
    line = assert_nothing_submitted(site, calls, site.bfjobs("submit", "download-model", REPO, **calls.env()))
    assert "is restricted: set HF_TOKEN" in line and hub.url in line


def test_a_hit_pins_the_commit_the_hub_named(slurm_site, hub, calls, down):
    """The branch moves between submit and the job's start: the job downloads what submit saw."""
    site = slurm_site
    site.configure(hub)
    repo = hub.get_repo(REPO)
    seen = repo.branches["dev"]
    proc = site.bfjobs("submit", "download-model", REPO, "--revision", "dev", "--partition", down.name, **calls.env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith(f"(commit {seen})"), proc.stdout
    job_id = proc.stdout.split()[1]
    row = as_job(site.bfjobs("status", job_id, "--json"))
    assert row["state"] == "PENDING"  # held on a DOWN partition
    assert row["request"]["commit"] == seen and row["request"]["revision"] == "dev"
    assert row["request"]["endpoint"] == hub.url
    moved = repo.commit({"config.json": '{"dev": "moved"}\n'}, branch="dev")
    assert moved != seen
    subprocess.run(["scontrol", "update", f"PartitionName={down.name}", "State=UP"], check=True)
    job = as_job(site.bfjobs("wait", job_id, "--json", timeout=300))
    assert job["state"] == "COMPLETED", job
    snapshot = site.home_dir / "models" / FOLDER / "snapshots" / seen
    assert job["result"]["commit"] == seen and job["result"]["snapshot"] == str(snapshot)
    assert (snapshot / "config.json").read_bytes() == repo.files_at(seen)["config.json"]
    assert (site.home_dir / "models" / FOLDER / "refs" / "dev").read_text() == seen
    assert not (site.home_dir / "models" / FOLDER / "snapshots" / moved).exists()
    # an artefact already present costs no request to the hub
    hub.clear_requests()
    again = json_job(site.bfjobs("submit", "download-model", REPO, "--revision", seen, "--json").stdout)
    assert again["state"] == "PRESENT" and hub.requests == []


def test_unreachable_hub_lets_the_node_resolve(slurm_site, calls):
    """Nothing listens at the endpoint: a note at submit, the job runs, its reason names the endpoint."""
    with HubServer() as gone:
        url = gone.url
    site = slurm_site
    site.configure(SimpleNamespace(url=url))
    proc = site.bfjobs("submit", "download-model", REPO, "--revision", "dev", "--wait", "--json", **calls.env())
    notes = [line for line in proc.stderr.splitlines() if "not reachable from here" in line]
    assert len(notes) == 1 and url in notes[0] and notes[0].endswith("the job resolves dev on the node"), proc.stderr
    assert calls.counts()["sbatch"] == 1
    job = json_job(proc.stdout)
    assert proc.returncode == 1 and job["state"] == "FAILED"
    assert job["request"]["commit"] is None
    assert f"{REPO}@dev from {url}" in job["reason"], job["reason"]


def test_offline_mode_asks_nothing(slurm_site, hub, calls):
    """HF_HUB_OFFLINE is the user's "no requests from here": bfjobs says so and asks nothing."""
    site = slurm_site
    site.configure(hub)
    proc = site.bfjobs(
        "submit", "download-model", "bfjobs-test/no-such-model", "--json", HF_HUB_OFFLINE="1", **calls.env()
    )
    assert proc.returncode == 0, proc.stderr
    assert f"HF_HUB_OFFLINE is set: not asking {hub.url}" in proc.stderr
    assert hub.requests == [] and calls.counts()["sbatch"] == 1
    site.bfjobs("cancel", json_job(proc.stdout)["id"], check=True)


def write_list(site, name: str, text: str) -> Path:
    path = site.root / name
    path.write_text(text)
    return path


@hub_and_mirror
def test_from_file_with_one_bad_entry_refuses_all(slurm_site, hub, calls):
    site = slurm_site
    site.configure(hub)
    listing = write_list(
        site, "models.txt", f"# three models\n{REPO}@dev\n{REPO}@no-such-branch\n{REPO}@v1.0\nbfjobs-test/missing\n"
    )
    proc = site.bfjobs("submit", "download-model", "--from-file", str(listing), "--json", **calls.env())
    line = assert_nothing_submitted(site, calls, proc)
    assert "2 bad model(s)" in line and "line 3: revision 'no-such-branch' not found" in line, line
    assert "line 5: bfjobs-test/missing@main: repository not found" in line and hub.url in line
    assert "line 2" not in line and "line 4" not in line
    # fixed, the same list is one array whose elements are each pinned
    listing.write_text(f"{REPO}@dev\n{REPO}@v1.0\n")
    entries = json_jobs(
        site.bfjobs("submit", "download-model", "--from-file", str(listing), "--json", check=True).stdout
    )
    repo = hub.get_repo(REPO)
    assert [e["request"]["commit"] for e in entries] == [repo.branches["dev"], repo.tags["v1.0"]]
    waited = json_jobs(site.bfjobs("wait", *[e["id"] for e in entries], "--json", timeout=300).stdout)
    assert [j["result"]["commit"] for j in waited] == [repo.branches["dev"], repo.tags["v1.0"]]


# -- a mirror lacking an endpoint is told apart from a missing repo (issue 11, item 1) ------------------------------
def test_a_bare_404_at_submit_names_the_endpoint_not_a_missing_repo(slurm_site, calls):
    """A mirror that lacks even the revision endpoint: its plain 404 is not "repository not found"."""
    with HubServer([make_demo_repo()], minimal=True, unserved={"revision"}) as mirror:
        site = slurm_site
        site.configure(mirror)
        line = assert_nothing_submitted(site, calls, site.bfjobs("submit", "download-model", REPO, **calls.env()))
        host = urlsplit(mirror.url).netloc
    assert f"answered 404 with no reason to GET /api/models/{REPO}/revision/main on {host}" in line, line
    assert "the mirror lacks this repo or revision, or does not implement this endpoint" in line
    assert "repository not found" not in line and "not found in" not in line


def test_credentials_in_the_endpoint_never_reach_the_error_line(slurm_site, calls):
    """HF_ENDPOINT written as http://user:password@host is refused (exit 2) without echoing the password."""
    with HubServer([make_demo_repo()], minimal=True, unserved={"revision"}) as mirror:
        site = slurm_site
        site.configure()
        secret = mirror.url.replace("http://", "http://alice:s3cret-canary@")
        result = site.bfjobs("submit", "download-model", REPO, **calls.env(), HF_ENDPOINT=secret)
        host = urlsplit(mirror.url).netloc
    assert result.returncode == 2 and calls.counts()["sbatch"] == 0, result
    assert "HF_ENDPOINT: credentials in the URL are not allowed" in result.stderr and host in result.stderr
    assert "s3cret-canary" not in result.stdout + result.stderr


@hub_and_mirror
def test_a_bare_404_on_the_node_names_the_endpoint(slurm_site, hub, calls):
    """Pinned at submit, the job meets a plain 404 for the tree listing: its reason names that request."""
    site = slurm_site
    site.configure(hub)
    hub.unserved.add("tree")
    commit = hub.get_repo(REPO).branches["dev"]
    proc = site.bfjobs("submit", "download-model", REPO, "--revision", "dev", "--wait", "--json", **calls.env())
    job = json_job(proc.stdout)
    assert proc.returncode == 1 and job["state"] == "FAILED", proc.stderr
    assert job["request"]["commit"] == commit
    host = urlsplit(hub.url).netloc
    assert f"answered 404 with no reason to GET /api/models/{REPO}/tree/{commit} on {host}" in job["reason"]
    assert "\n" not in job["reason"] and "repository not found" not in job["reason"]


def node_download(hub, tmp_path: Path, revision: str | None) -> str:
    """The node side's own failure line for a download of ``revision`` (not pinned: the node resolves)."""
    from blackfish_jobs.errors import TaskError
    from blackfish_jobs.node.download import download_model
    from blackfish_jobs.node.requests import DownloadModel

    req = DownloadModel(REPO, revision, tmp_path / "models", hub.url, None, None, 2)
    with pytest.raises(TaskError) as failed:
        download_model(req)
    return str(failed.value)


@hub_and_mirror
def test_node_tells_a_missing_revision_from_a_missing_endpoint(hub, tmp_path):
    """The real client against the test hub, on the node side: the server said so, or answered a bare 404."""
    missing = node_download(hub, tmp_path, "no-such-branch")
    assert missing == f"revision 'no-such-branch' not found in {REPO} on {hub.url}"
    hub.unserved.add("revision")
    line = node_download(hub, tmp_path, None)
    assert line.startswith(f"{hub.url} answered 404 with no reason to GET /api/models/{REPO}/revision/main on "), line
    assert "the mirror lacks this repo or revision, or does not implement this endpoint" in line
