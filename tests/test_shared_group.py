"""Group mode on the real cluster: two admins keep one shared cache, a researcher reads it; the
list and status tables of their real jobs.

The users are real local users with Slurm associations (``scripts/test-site.sh``): ``bfadmin1``
and ``bfadmin2`` in group ``bfcache``, ``bfresearcher`` outside it. The site file sets
``shared_group = "bfcache"``; the cache folder is the group's, setgid, as the install guide says.
Every bfjobs call runs as its user, from a site install made as docs/install.md says
(support.install); jobs are real Slurm jobs owned by that user, downloading from the test hub.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path

import pytest
from support.group import ADMINS, GROUP, IMAGE, RESEARCHER
from support.hub import DEMO_REPO_ID
from support.site import json_job

pytestmark = pytest.mark.slurm

def _owner(path: Path) -> tuple[str, str, int]:
    st = path.lstat()
    return pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name, stat.S_IMODE(st.st_mode)


def _tree(root: Path) -> list[Path]:
    return [root, *sorted(root.rglob("*"))]


def test_two_admins_keep_one_shared_cache(cluster):
    admin1, admin2 = ADMINS
    images = cluster.cache / "images"
    image = images / "alpine_3.20.sif"

    # the first admin publishes an image and a model: folders the group's (2775), files 755
    cluster.job(admin1, "pull-image", IMAGE)
    assert _owner(images) == (admin1, GROUP, 0o2775)
    assert _owner(image) == (admin1, GROUP, 0o755)
    model = Path(cluster.job(admin1, "download-model", DEMO_REPO_ID, "--to", "shared")["target"])
    assert model.parent == cluster.cache / "models"
    for path in _tree(model):
        if path.is_symlink():
            continue
        owner, group, mode = _owner(path)
        assert (owner, group, mode) == (admin1, GROUP, 0o2775 if path.is_dir() else 0o755), path
    assert not [p for p in (cluster.cache / "models").iterdir() if p.name.startswith(".bfjobs-")]

    # admin1's job, killed outright, left a partial image and its lock file (the group's, 664, as
    # group mode makes it); the second admin's --force takes the lock over and removes the leftover
    leftover = images / ".bfjobs-partial-4242-0123abcd-alpine_3.20.sif"
    lock = images / ".bfjobs-lock-alpine_3.20.sif"
    for path, mode in ((leftover, 0o600), (lock, 0o664)):
        path.write_bytes(b"x")
        os.chown(path, pwd.getpwnam(admin1).pw_uid, cluster.gid)
        path.chmod(mode)
    cluster.job(admin2, "pull-image", IMAGE, "--force")
    assert _owner(image) == (admin2, GROUP, 0o755)
    assert not leftover.exists() and not lock.exists()

    # ... and replaces the first admin's model files, then removes the model altogether
    again = cluster.job(admin2, "download-model", DEMO_REPO_ID, "--to", "shared", "--force")
    assert again["result"]["commit"] and not again["result"]["already_present"]
    blobs = [p for p in (model / "blobs").iterdir()]
    assert blobs and all(_owner(p)[:2] == (admin2, GROUP) for p in blobs)
    removed = cluster.run(admin2, "rm", "-r", str(model))
    assert removed.returncode == 0, removed.stderr
    assert not model.exists()

    # doctor tells a member whether the cache's folders are the group's
    doctor = cluster.bfjobs(admin1, "doctor")
    assert f"you are a member; {cluster.cache} is the group's" in doctor.stdout, doctor.stdout
    images.chmod(0o755)  # as an admin's chmod -R 755 would leave it
    doctor = cluster.bfjobs(admin1, "doctor").stdout
    assert f"not the group's, setgid and group-writable: {images}" in doctor and f"chgrp {GROUP}" in doctor


def test_two_admins_pulling_the_same_image_at_once_take_turns(cluster):
    """Their jobs run at the same time; the publish lock (the group's) lets one pull, the other
    finds the image in place: one ``apptainer pull`` in all."""
    calls = cluster.root / "apptainer-calls.jsonl"
    calls.touch()
    calls.chmod(0o666)
    ids = {}
    for admin in ADMINS:
        proc = cluster.bfjobs(admin, "submit", "pull-image", "docker://alpine:race", "--json",
                              FAKE_APPTAINER_SLEEP="4", FAKE_APPTAINER_LOG=str(calls))
        assert proc.returncode == 0, proc.stderr
        ids[admin] = json_job(proc.stdout)["id"]
    done = {}
    for admin, job_id in ids.items():
        proc = cluster.bfjobs(admin, "wait", job_id, "--json", "--timeout", "120")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        done[admin] = json_job(proc.stdout)
    assert sorted(j["result"]["already_present"] for j in done.values()) == [False, True]
    assert len(calls.read_text().splitlines()) == 1
    image = cluster.cache / "images" / "alpine_race.sif"
    assert _owner(image)[1:] == (GROUP, 0o755)
    assert not [p for p in image.parent.iterdir() if p.name.startswith(".bfjobs-")]


def test_a_researcher_reads_the_shared_cache_and_writes_only_home(cluster):
    admin1 = ADMINS[0]
    image = Path(cluster.job(admin1, "pull-image", IMAGE)["target"])
    before = sorted(p.name for p in _tree(cluster.cache))

    refused = cluster.bfjobs(RESEARCHER, "submit", "pull-image", "docker://alpine:3.21")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "Only the shared cache's admins add the images Blackfish's services run" in refused.stderr
    refused = cluster.bfjobs(RESEARCHER, "submit", "download-model", DEMO_REPO_ID, "--to", "shared")
    assert refused.returncode == 2 and "--to shared is for the shared cache's admins" in refused.stderr
    assert sorted(p.name for p in _tree(cluster.cache)) == before  # nothing written

    read = cluster.run(RESEARCHER, "head", "-c", "9", str(image))
    assert read.returncode == 0 and read.stdout == "SIF_MAGIC", read.stderr
    mine = Path(cluster.job(RESEARCHER, "pull-image", "docker://alpine:3.21", "--to", "home")["target"])
    primary = grp.getgrgid(pwd.getpwnam(RESEARCHER).pw_gid).gr_name
    assert _owner(mine) == (RESEARCHER, primary, 0o755)  # group mode is for the shared cache only
    assert _owner(mine.parent) == (RESEARCHER, primary, 0o755)
    doctor = cluster.bfjobs(RESEARCHER, "doctor")
    assert f"shared_group {GROUP}" in doctor.stdout and "you are not a member" in doctor.stdout


def test_an_admin_outside_the_group_is_told_before_submitting(cluster):
    """Someone who can write the cache but is not in shared_group: one line, nothing submitted."""
    outsider = RESEARCHER
    os.chown(cluster.cache, pwd.getpwnam(outsider).pw_uid, cluster.gid)  # can write it, is not a member
    refused = cluster.bfjobs(outsider, "submit", "pull-image", IMAGE)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert f"shared_group '{GROUP}': you are not a member" in refused.stderr
    assert not (cluster.root / outsider / "home" / "jobs").exists()


def _table(stdout: str) -> dict[str, dict[str, str]]:
    """A list/status table's rows by job id, each cell cut at its header's column."""
    header, *lines = stdout.splitlines()
    names = ["ID", "KIND", "STATE", "SLURM ID", "NODE", "SUBMITTED", "PROFILE", "WHERE", "REVISION", "TARGET", "REASON"]
    starts = [header.index(name) for name in names]
    assert starts == sorted(starts), header
    rows = {}
    for line in lines:
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        rows[cells[0]] = dict(zip(names, cells, strict=True))
    return rows


def test_the_tables_of_real_jobs_show_profile_where_and_revision(cluster):
    """A researcher's model download (home) and an admin's image pull (shared), real Slurm jobs of
    each user: their own list and status tables say whose profile, which cache and which commit."""
    admin = ADMINS[0]
    submitted = {}
    for user, args in ((RESEARCHER, ("download-model", DEMO_REPO_ID)), (admin, ("pull-image", IMAGE))):
        proc = cluster.bfjobs(user, "submit", *args, "--json")
        assert proc.returncode == 0, proc.stderr
        submitted[user] = json_job(proc.stdout)["id"]  # both jobs run at once
    done = {}
    for user, job_id in submitted.items():
        proc = cluster.bfjobs(user, "wait", job_id, "--json", "--timeout", "120")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        done[user] = json_job(proc.stdout)
    model, image = done[RESEARCHER], done[admin]
    commit = model["result"]["commit"]
    assert len(commit) == 40 and model["where"] == "home" and image["where"] == "shared"
    expected = {
        RESEARCHER: {"KIND": "download-model", "PROFILE": "cluster", "WHERE": "home", "REVISION": commit[:12],
                     "TARGET": model["target"]},
        admin: {"KIND": "pull-image", "PROFILE": "cluster", "WHERE": "shared", "REVISION": "-",
                "TARGET": str(cluster.cache / "images" / "alpine_3.20.sif")},
    }
    for user, job in done.items():
        for command in (("list",), ("status", job["id"])):
            proc = cluster.bfjobs(user, *command)
            assert proc.returncode == 0, proc.stderr
            rows = _table(proc.stdout)
            assert list(rows) == [job["id"]], (command, proc.stdout)  # each user's own jobs only
            row = rows[job["id"]]
            assert {key: row[key] for key in expected[user]} == expected[user], (command, proc.stdout)
            assert row["STATE"] == "COMPLETED" and row["SLURM ID"] == job["slurm_job_id"]
    assert model["target"].startswith(str(cluster.root / RESEARCHER / "home" / "models"))
