"""Records of published artefacts in the cache (``<base>/.bfjobs``), verify by path and by folder,
and name collisions, on the real cluster with the apptainer stand-in and the test hub.

Blackfish names ``docker://myfork/vllm-openai:v0.6.3`` and ``docker://vllm/vllm-openai:v0.6.3`` both
``vllm-openai_v0.6.3.sif``: only the record of a file's pull says which one it is.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support.hub import DEMO_FOLDER, DEMO_REPO_ID
from support.site import Site, as_job, as_jobs, json_findings, profiles_cfg, slurm_profile, wait_for
from support.unprivileged import as_nobody

pytestmark = pytest.mark.slurm

VLLM = "docker://vllm/vllm-openai:v0.6.3"
FORK = "docker://myfork/vllm-openai:v0.6.3"
NAME = "vllm-openai_v0.6.3.sif"
ZERO = "sha256:" + "0" * 64
FOLDER = DEMO_FOLDER


def record_of(image: Path) -> dict:
    return json.loads((image.parent.parent / ".bfjobs" / "images" / f"{image.name}.json").read_text())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def pull(site, uri: str, *args: str, **env: str) -> dict:
    job = as_job(site.bfjobs("submit", "pull-image", uri, *args, "--wait", "--json", **env))
    assert job["state"] == "COMPLETED", job
    return job


def flip_two_bytes(path: Path) -> None:
    """Change two bytes in place: same size, other content."""
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))


def job_count(site) -> int:
    return len(as_jobs(site.bfjobs("list", "--limit", "0", "--json")))


# --------------------------------------------------------------------------- records


def test_pull_and_download_write_public_records(slurm_site, hub):
    site = slurm_site
    site.configure(hub)
    canary = "hf_CANARYrecord1234567890abcdef"
    hub.require_token = canary
    old_umask = os.umask(0o077)  # records and their folders are public whatever the umask
    try:
        image = pull(site, VLLM)
        model = as_job(site.bfjobs("submit", "download-model", DEMO_REPO_ID, "--revision", "dev", "--wait", "--json",
                                    HF_TOKEN=canary))
    finally:
        os.umask(old_umask)
    assert model["state"] == "COMPLETED", model

    path = Path(image["result"]["path"])
    record = record_of(path)
    assert record["kind"] == "image" and record["source"] == VLLM and record["digest"] is None
    assert record["sha256"] == image["result"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["size"] == path.stat().st_size
    assert record["user"] == image["user"]
    assert re.fullmatch(rf"{image['slurm_job_id']}-[0-9a-f]{{8}}", record["job"])
    when = datetime.strptime(record["created_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - when).total_seconds()) < 600
    records = site.cache_dir / ".bfjobs"
    assert [mode(d) for d in (records, records / "images")] == [0o755, 0o755]
    assert mode(records / "images" / f"{NAME}.json") == 0o644
    assert sorted(os.listdir(site.cache_dir / "images")) == [NAME]  # nothing beside the image where Blackfish reads

    result = model["result"]
    snap_record = site.home_dir / ".bfjobs" / "models" / FOLDER / f"{result['commit']}.json"
    data = json.loads(snap_record.read_text())
    snapshot = Path(result["snapshot"])
    assert data["kind"] == "snapshot" and data["source"] == hub.url
    assert (data["repo_id"], data["revision"], data["commit"]) == (DEMO_REPO_ID, "dev", result["commit"])
    expected = {p.relative_to(snapshot).as_posix(): p.stat().st_size for p in snapshot.rglob("*") if p.is_file()}
    assert data["files"] == expected and "model.safetensors" in expected and data["size"] == result["bytes"]
    assert mode(snap_record) == 0o644 and mode(snap_record.parent) == 0o755
    assert mode(site.home_dir / ".bfjobs" / "models") == 0o755
    for written in (records / "images" / f"{NAME}.json", snap_record):
        assert canary not in written.read_text()
    assert ".bfjobs" not in os.listdir(site.home_dir / "models")  # huggingface_hub's folder untouched


def test_no_record_no_image(slurm_site):
    """A pull whose record cannot be written publishes nothing (its file would have no known source)."""
    site = slurm_site
    (site.cache_dir / ".bfjobs").write_text("in the way")
    job = as_job(site.bfjobs("submit", "pull-image", VLLM, "--wait", "--json"))
    assert job["state"] == "FAILED"
    assert f"cannot write the record of {site.cache_dir / 'images' / NAME}" in job["reason"]
    assert os.listdir(site.cache_dir / "images") == []


def test_records_are_read_by_another_user(nobody_env):
    """An unprivileged user verifies root's shared image from its record, without root's database."""
    root = Path(tempfile.mkdtemp(prefix="records-", dir=nobody_env))
    root.chmod(0o755)
    admin = Site.create(root)
    admin.configure(mem="200M")
    image = Path(pull(admin, VLLM)["result"]["path"])

    app = root / "nobody-app"
    app.mkdir()
    (root / "nobody-home").mkdir()
    subprocess.run(["chown", "nobody", str(app), str(root / "nobody-home")], check=True)
    (app / "profiles.cfg").write_text(
        profiles_cfg({"cluster": slurm_profile(root / "nobody-home", admin.cache_dir, user="nobody")}))
    ok = as_nobody(nobody_env, app, "verify", str(image))
    assert ok.returncode == 0 and ok.stdout.startswith("OK "), ok.stderr
    flip_two_bytes(image)
    bad = as_nobody(nobody_env, app, "verify", str(image))
    assert bad.returncode == 1 and bad.stdout.startswith("CORRUPT "), bad.stderr


# --------------------------------------------------------------------------- verify


def test_verify_by_path_of_a_tampered_image_is_corrupt(slurm_site):
    site = slurm_site
    job = pull(site, "docker://alpine:tamper")
    path = Path(job["result"]["path"])
    assert site.bfjobs("verify", str(path)).returncode == 0
    flip_two_bytes(path)
    bad = site.bfjobs("verify", str(path))
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert bad.stdout.startswith("CORRUPT ") and "sha256" in bad.stdout
    assert bad.stderr.strip() == f"bfjobs: error: 1 of 1 artefact(s) failed verification: CORRUPT {path}"
    assert site.bfjobs("verify", job["id"]).stdout.startswith("CORRUPT ")  # the job's result agrees


def test_verify_by_path_without_record_is_unverified(cli, site, monkeypatch):
    site.write_profiles()
    images = site.cache_dir / "images"
    images.mkdir()
    path = images / "handmade_1.sif"
    path.write_bytes(b"copied here by hand")
    result = cli("verify", str(path))
    assert result.exit_code == 1
    assert result.stdout.startswith("UNVERIFIED ") and "no bfjobs record" in result.stdout
    [line] = result.stderr.splitlines()
    assert line == (
        f"bfjobs: error: 1 of 1 artefact(s) failed verification: UNVERIFIED {path}; --accept-unverified accepts it"
    )
    accepted = cli("verify", str(path), "--accept-unverified", "--json")
    assert accepted.exit_code == 0
    assert [(f["status"], f["ok"]) for f in json_findings(accepted.stdout)] == [("UNVERIFIED", False)]
    monkeypatch.chdir(site.cache_dir)  # relative paths too: "." and anything with a "/"
    for relative in (".", "./images", "images/handmade_1.sif"):
        result = cli("verify", relative)
        assert result.exit_code == 1 and result.stdout == f"UNVERIFIED image    {path} (no bfjobs record of its pull)\n"


def test_verify_a_folder_checks_everything_under_it(slurm_site, hub):
    site = slurm_site
    site.configure(hub)
    first = Path(pull(site, "docker://alpine:one")["result"]["path"])
    second = Path(pull(site, "docker://alpine:two")["result"]["path"])
    model = as_job(site.bfjobs("submit", "download-model", DEMO_REPO_ID, "--to", "shared", "--wait", "--json"))
    snapshot = Path(model["result"]["snapshot"])
    images = site.cache_dir / "images"
    (images / ".bfjobs-partial-1-deadbeef-x.sif").write_bytes(b"in flight")  # not an artefact

    whole = site.bfjobs("verify", str(site.cache_dir), "--json")
    assert whole.returncode == 0, whole.stderr
    found = {(f["kind"], f["path"], f["status"]) for f in json_findings(whole.stdout)}
    assert found == {
        ("pull-image", str(first), "OK"), ("pull-image", str(second), "OK"), ("download-model", str(snapshot), "OK")
    }
    for folder in (site.cache_dir / "models", site.cache_dir / "models" / FOLDER):
        only = json_findings(site.bfjobs("verify", str(folder), "--json").stdout)
        assert [(f["kind"], f["status"]) for f in only] == [("download-model", "OK")]

    flip_two_bytes(second)
    (images / "zz_handmade.sif").write_bytes(b"no record")
    bad = site.bfjobs("verify", str(images))
    assert bad.returncode == 1
    lines = bad.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["OK", "CORRUPT", "UNVERIFIED"]
    assert bad.stderr.strip() == f"bfjobs: error: 2 of 3 artefact(s) failed verification: CORRUPT {second}"
    # accepting UNVERIFIED does not accept CORRUPT
    assert site.bfjobs("verify", str(images), "--accept-unverified").returncode == 1
    second.unlink()
    assert site.bfjobs("verify", str(images), "--accept-unverified").returncode == 0


# --------------------------------------------------------------------------- collisions


def test_name_collision_is_not_presence(slurm_site):
    site = slurm_site
    first = pull(site, VLLM)
    target = Path(first["result"]["path"])
    jobs = job_count(site)
    proc = site.bfjobs("submit", "pull-image", FORK)
    assert proc.returncode == 1 and proc.stdout == ""
    [line] = proc.stderr.splitlines()
    assert line.startswith(f"bfjobs: error: name collision: {target} was pulled from '{VLLM}', not {FORK}")
    assert "--name" in line and "--force" in line
    assert job_count(site) == jobs  # nothing submitted
    # --name gives it a file of its own
    own = pull(site, FORK, "--name", "myfork-vllm-openai_v0.6.3.sif")
    assert record_of(Path(own["result"]["path"]))["source"] == FORK
    # the same source is present
    again = site.bfjobs("submit", "pull-image", VLLM)
    assert again.returncode == 0 and again.stdout.startswith("already present:")


def test_a_digest_must_match_the_record(slurm_site):
    site = slurm_site
    pull(site, VLLM)
    pinned = f"{VLLM}@{ZERO}"  # the tag names the file, the digest pins the content
    proc = site.bfjobs("submit", "pull-image", pinned)
    assert proc.returncode == 1
    assert f"not {pinned} (digest not recorded, asked {ZERO})" in proc.stderr
    # and the other way round: a file pulled with a digest is not the tag alone
    pull(site, pinned, "--force")
    assert record_of(site.cache_dir / "images" / NAME)["digest"] == ZERO
    proc = site.bfjobs("submit", "pull-image", VLLM)
    assert proc.returncode == 1 and f"(digest {ZERO}, asked none)" in proc.stderr
    assert site.bfjobs("submit", "pull-image", pinned).stdout.startswith("already present:")


def test_a_file_without_record_is_not_present(slurm_site):
    site = slurm_site
    images = site.cache_dir / "images"
    images.mkdir()
    (images / NAME).write_bytes(b"copied by hand")
    proc = site.bfjobs("submit", "pull-image", VLLM)
    assert proc.returncode == 1 and "already present" not in proc.stdout + proc.stderr
    assert "exists with an unknown source (no bfjobs record of its pull)" in proc.stderr
    assert "--force" in proc.stderr and "--name" in proc.stderr
    assert not (site.home_dir / "jobs").exists()


def test_force_replaces_file_and_record(slurm_site):
    site = slurm_site
    old = pull(site, VLLM)
    path = Path(old["result"]["path"])
    new = pull(site, FORK, "--force")
    assert new["result"]["already_present"] is False and new["result"]["path"] == str(path)
    record = record_of(path)
    assert record["source"] == FORK and record["sha256"] == new["result"]["sha256"] != old["result"]["sha256"]
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert site.bfjobs("verify", str(path)).returncode == 0
    assert site.bfjobs("submit", "pull-image", FORK).stdout.startswith("already present:")
    assert site.bfjobs("submit", "pull-image", VLLM).returncode == 1


def test_the_node_applies_the_same_rule(slurm_site, down):
    """A job for a name that another source took while it was pending fails; it never says present."""
    site = slurm_site
    job = as_job(site.bfjobs("submit", "pull-image", FORK, "--partition", down.name, "--json"))
    assert job["state"] == "PENDING"
    site.place_image(NAME, VLLM)  # published meanwhile, from another source
    subprocess.run(["scontrol", "update", f"PartitionName={down.name}", "State=UP"], check=True)
    done = wait_for(lambda: (s := as_job(site.bfjobs("status", job["id"], "--json")))["state"]
                    not in ("PENDING", "RUNNING") and s, timeout=120)
    assert done["state"] == "FAILED", done
    assert f"name collision: {site.cache_dir / 'images' / NAME} was pulled from '{VLLM}', not {FORK}" in done["reason"]
    assert record_of(site.cache_dir / "images" / NAME)["source"] == VLLM  # untouched
    assert site.apptainer_calls() == []  # nothing pulled


def test_a_collision_in_a_list_refuses_the_list(slurm_site):
    site = slurm_site
    site.place_image(NAME, VLLM)
    listing = site.root / "images.txt"
    listing.write_text(f"docker://alpine:fine\n{FORK}\n")
    proc = site.bfjobs("submit", "pull-image", "--from-file", str(listing))
    assert proc.returncode == 1 and "name collision" in proc.stderr and proc.stdout == ""
    assert not (site.home_dir / "jobs").exists()  # nothing submitted, not even the fine entry


def test_a_running_pull_of_another_source_is_no_answer(slurm_site, down):
    """A pending pull of VLLM into the same file name is not "in flight" for FORK; --force never waits on it."""
    site = slurm_site
    first = as_job(site.bfjobs("submit", "pull-image", VLLM, "--partition", down.name, "--json"))
    assert first["state"] == "PENDING"
    proc = site.bfjobs("submit", "pull-image", FORK, "--partition", down.name, "--json")
    assert proc.returncode == 1 and proc.stdout == ""
    [line] = proc.stderr.splitlines()
    assert line.startswith(f"bfjobs: error: name collision: job {first['id']} is pulling '{VLLM}'"), line
    assert "--name" in line
    same = as_job(site.bfjobs("submit", "pull-image", VLLM, "--partition", down.name, "--json"))
    assert same["in_flight"] is True and same["id"] == first["id"]
    forced = as_job(site.bfjobs("submit", "pull-image", VLLM, "--force", "--partition", down.name, "--json"))
    assert forced["state"] == "PENDING" and forced["id"] != first["id"]  # a job of its own
    assert site.bfjobs("cancel", first["id"], forced["id"]).returncode == 0


def test_a_failed_forced_publish_keeps_the_old_record(tmp_path):
    """The new record goes in before the file; if the file is not published, the old record comes back."""
    from blackfish_jobs.node import pull, records
    from blackfish_jobs.node.requests import PullImage

    images = tmp_path / "images"
    images.mkdir()
    req = PullImage(FORK, images, NAME, "apptainer", force=True)
    record = records.image_record_path(req.target)
    record.parent.mkdir(parents=True)
    old = records.image_record(VLLM, "0" * 64, 3, "old-job")
    records.write(record, old)
    (req.target).mkdir()  # what stands there cannot be replaced by a file: the publish fails
    (req.target / "x").write_text("x")
    partial = images / ".bfjobs-partial-1-00000000-x.sif"
    partial.write_bytes(b"new image")
    with pytest.raises(OSError):
        pull._publish_image(req, {}, partial, "1-00000000")
    assert records.read(record, "image") == old


def test_a_forced_pull_killed_between_record_and_rename_leaves_no_false_record(tmp_path):
    """The record of B, written just before B's rename over A, does not describe A even at A's size:
    it names B's modification time (a job killed in between leaves A of unknown source, not "B")."""
    from blackfish_jobs.node import records

    images = tmp_path / "images"
    images.mkdir()
    old = images / NAME
    old.write_bytes(b"image A")
    os.utime(old, (1_700_000_000, 1_700_000_000))
    record = records.image_record_path(old)
    record.parent.mkdir(parents=True)
    new_mtime = 1_700_000_100  # the partial B, written later, of the same size
    records.write(record, records.image_record(VLLM, "1" * 64, len(b"image B"), "job-b", mtime=new_mtime))
    problem = records.image_conflict(old, VLLM)
    assert problem is not None and "its bfjobs record describes another file" in problem
    os.utime(old, (new_mtime, new_mtime))  # the file the record was written for: described
    assert records.image_conflict(old, VLLM) is None
