"""`--from-file`: many artefacts as ONE Slurm job array, each element its own bfjobs job."""

from __future__ import annotations

import os
import textwrap

import pytest
from conftest import hub_and_mirror
from support.hub import DEMO_REPO_ID
from support.site import json_jobs
from support.slurm import make_call_log

pytestmark = pytest.mark.slurm


def write_list(site, name: str, text: str):
    path = site.root / name
    path.write_text(textwrap.dedent(text))
    return path


def test_pull_list_is_one_array(slurm_site):
    site = slurm_site
    site.configure()
    images = site.cache_dir / "images"
    site.place_image("alpine_present.sif", "docker://alpine:present", b"already here")
    listing = write_list(site, "images.txt", """\
        # images for the new cluster
        docker://alpine:one
        docker://alpine:two   # a trailing comment

        docker://alpine:present
        docker://alpine:broken
        docker://alpine:one
        oras://ghcr.io/org/tool:3.1
        """)
    calls = make_call_log(site.root)
    rendered = site.bfjobs("render", "pull-image", "--from-file", str(listing), "--max-parallel", "2", check=True)
    assert "#SBATCH --array=0-3%2" in rendered.stdout  # present and duplicate lines are not elements
    assert "%A_%a_0_log.out" in rendered.stdout
    proc = site.bfjobs("submit", "pull-image", "--from-file", str(listing), "--max-parallel", "2", "--json",
                       FAKE_APPTAINER_FAIL_ON="broken", **calls.env())
    assert proc.returncode == 0, proc.stderr
    entries = json_jobs(proc.stdout)
    assert [e["state"] for e in entries] == ["PENDING", "PENDING", "PRESENT", "PENDING", "PENDING"]
    assert calls.counts()["sbatch"] == 1  # one sbatch call for the whole list
    jobs = [e for e in entries if e["state"] == "PENDING"]
    array = jobs[0]["slurm_job_id"].split("_")[0]
    assert [j["slurm_job_id"] for j in jobs] == [f"{array}_{i}" for i in range(4)]
    assert len({j["id"] for j in jobs}) == 4 and len({j["folder"] for j in jobs}) == 1
    # each element is a bfjobs job of its own: wait, status, logs
    waited = site.bfjobs("wait", *[j["id"] for j in jobs], "--json", timeout=300)
    assert waited.returncode == 1  # one element failed
    final = {j["request"]["uri"]: j for j in json_jobs(waited.stdout)}
    assert final["docker://alpine:broken"]["state"] == "FAILED"
    assert "requested failure" in final["docker://alpine:broken"]["reason"]
    for uri in ("docker://alpine:one", "docker://alpine:two", "oras://ghcr.io/org/tool:3.1"):
        assert final[uri]["state"] == "COMPLETED", final[uri]
        assert final[uri]["result"]["path"] == final[uri]["target"]
        assert final[uri]["result"]["sha256"]
    assert sorted(os.listdir(images)) == ["alpine_one.sif", "alpine_present.sif", "alpine_two.sif", "tool_3.1.sif"]
    one = final["docker://alpine:one"]
    logs = site.bfjobs("logs", one["id"], check=True)
    assert "Converting OCI blobs to SIF format (stand-in) for docker://alpine:one" in logs.stdout
    # the throttle reached Slurm
    script = (site.home_dir / "jobs" / "bfjobs" / os.path.basename(one["folder"]) / f"{array}_submission.sh")
    assert "#SBATCH --array=0-3%2" in script.read_text()


def test_hostile_line_refuses_the_whole_file(slurm_site):
    site = slurm_site
    site.configure()
    listing = write_list(site, "bad.txt", "docker://alpine:fine\ndocker://alpine;touch /tmp/x\n\nnot-a-uri\n")
    calls = make_call_log(site.root)
    proc = site.bfjobs("submit", "pull-image", "--from-file", str(listing), **calls.env())
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert "2 bad URI(s), nothing submitted" in line and "line 2:" in line and "line 4:" in line
    assert calls.counts()["sbatch"] == 0
    assert not (site.home_dir / "jobs").exists()


@hub_and_mirror
def test_download_list_and_cancel_one_element(slurm_site, hub):
    site = slurm_site
    site.configure(hub)
    repo = hub.get_repo(DEMO_REPO_ID)
    listing = write_list(site, "models.txt", f"""\
        {DEMO_REPO_ID}@dev
        {DEMO_REPO_ID}@v1.0
        {DEMO_REPO_ID}@{repo.branches["main"]}
        """)
    hub.delay_per_chunk = 0.05
    entries = json_jobs(site.bfjobs("submit", "download-model", "--from-file", str(listing), "--json",
                                     check=True).stdout)
    assert len(entries) == 3 and all(e["kind"] == "download-model" for e in entries)
    cancelled = site.bfjobs("cancel", entries[2]["id"])
    assert cancelled.returncode == 0, cancelled.stderr
    waited = site.bfjobs("wait", *[e["id"] for e in entries], "--json", timeout=300)
    final = {j["id"]: j for j in json_jobs(waited.stdout)}
    assert final[entries[0]["id"]]["result"]["commit"] == repo.branches["dev"]
    assert final[entries[1]["id"]]["result"]["commit"] == repo.tags["v1.0"]
    assert final[entries[2]["id"]]["state"] in ("CANCELLED", "COMPLETED")  # it may have finished first
    snapshots = site.home_dir / "models" / "models--bfjobs-test--tiny-model" / "snapshots"
    expected = {repo.branches["dev"], repo.tags["v1.0"]}
    assert expected <= set(os.listdir(snapshots))
    # a second submission of the same list: everything is present (or still in flight), nothing new
    again = json_jobs(site.bfjobs("submit", "download-model", "--from-file", str(listing), "--json",
                                   check=True).stdout)
    assert [e["state"] for e in again[:2]] == ["PRESENT", "PRESENT"]


def test_argument_and_file_are_exclusive(site, cli):
    site.write_profiles()
    listing = site.root / "l.txt"
    listing.write_text("docker://alpine:1\n")
    for args in (["docker://alpine:1", "--from-file", str(listing)], []):
        result = cli("submit", "pull-image", *args)
        assert result.exit_code == 2 and "exactly one" in result.stderr
    result = cli("submit", "pull-image", "--from-file", str(listing), "--name", "x.sif")
    assert result.exit_code == 2 and "--name" in result.stderr
    result = cli("submit", "pull-image", "--from-file", str(site.root / "missing.txt"))
    assert result.exit_code == 2 and "cannot read" in result.stderr
    result = cli("submit", "download-model", "--from-file", str(listing), "--revision", "main")
    assert result.exit_code == 2 and "repo@revision" in result.stderr
