"""``bfjobs cache`` and ``bfjobs jobs prune`` on the real cluster's caches, as real users: two admins
in the shared cache's group and a researcher (the site of test_shared_group.py). What is listed,
removed and pruned was put there by real Slurm jobs downloading from the test hub.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from support.group import ADMINS, RESEARCHER, Cluster
from support.hub import DEMO_REPO_ID
from support.site import json_job

pytestmark = pytest.mark.slurm

FOLDER = "models--" + DEMO_REPO_ID.replace("/", "--")


def _picture(root: Path) -> dict[str, tuple[int, int]]:
    found = {}
    for dirpath, dirnames, names in os.walk(root):
        for name in dirnames + names:
            st = os.lstat(os.path.join(dirpath, name))
            found[os.path.join(dirpath, name)] = (st.st_size, st.st_mtime_ns)
    return found


def _json(proc) -> dict:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def test_admins_tidy_the_shared_cache_and_a_researcher_cannot(cluster: Cluster):
    admin1, admin2 = ADMINS
    main = cluster.job(admin1, "download-model", DEMO_REPO_ID, "--to", "shared")
    v1 = cluster.job(admin1, "download-model", DEMO_REPO_ID, "--revision", "v1.0", "--to", "shared")
    cluster.job(admin1, "pull-image", "docker://alpine:3.20")
    repo = cluster.cache / "models" / FOLDER

    listed = _json(cluster.bfjobs(RESEARCHER, "cache", "ls", "--json"))
    shared = {(a["kind"], a["commit"] or a["name"]) for a in listed["artefacts"] if a["where"] == "shared"}
    assert shared == {("model", v1["result"]["commit"]), ("model", main["result"]["commit"]),
                      ("image", "alpine_3.20.sif")}

    before = _picture(cluster.cache)
    for args in (("cache", "rm", DEMO_REPO_ID, "--shared"), ("cache", "prune", "--shared")):
        refused = cluster.bfjobs(RESEARCHER, *args)
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
        assert "not writable by you" in refused.stderr and "only its admins" in refused.stderr
    home = cluster.bfjobs(RESEARCHER, "cache", "rm", DEMO_REPO_ID)
    assert home.returncode == 2 and "is not in the home cache" in home.stderr
    assert _picture(cluster.cache) == before

    # the second admin removes what the first published (group mode), one revision, then the image
    gone = _json(cluster.bfjobs(admin2, "cache", "rm", f"{DEMO_REPO_ID}@v1.0", "--shared", "--json"))
    assert gone["removed"][0]["commits"] == [v1["result"]["commit"]] and gone["bytes"] > 0
    assert not (repo / "snapshots" / v1["result"]["commit"]).exists()
    checked = cluster.bfjobs(admin2, "cache", "verify", str(repo / "snapshots" / main["result"]["commit"]))
    assert checked.returncode == 0 and checked.stdout.startswith("OK"), checked.stdout + checked.stderr
    assert _json(cluster.bfjobs(admin2, "cache", "rm", "alpine_3.20.sif", "--shared", "--json"))["bytes"] > 0
    assert not (cluster.cache / "images" / "alpine_3.20.sif").exists()
    assert _json(cluster.bfjobs(admin1, "cache", "prune", "--shared", "--json"))["leftovers"] == []

    # the first admin's job folders: every job ended, so every folder goes; the rows stay
    pruned = _json(cluster.bfjobs(admin1, "jobs", "prune", "--json"))
    jobs = json.loads(cluster.bfjobs(admin1, "list", "--json").stdout)["jobs"]
    assert len(jobs) == 3 and {f["path"] for f in pruned["folders"]} == {j["folder"] for j in jobs}
    assert not Path(v1["folder"]).exists() and not Path(main["folder"]).exists()


def test_a_pending_download_is_refused_by_its_id_and_keeps_its_folder(cluster: Cluster, down):
    admin = ADMINS[0]
    done = cluster.job(admin, "download-model", DEMO_REPO_ID, "--to", "shared")
    proc = cluster.bfjobs(admin, "submit", "download-model", DEMO_REPO_ID, "--revision", "dev", "--to", "shared",
                          "--partition", down.name, "--json")
    assert proc.returncode == 0, proc.stderr
    pending = json_job(proc.stdout)
    try:
        refused = cluster.bfjobs(admin, "cache", "rm", DEMO_REPO_ID, "--shared")
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert f"being fetched by job {pending['id']} (PENDING)" in refused.stderr
        assert (cluster.cache / "models" / FOLDER / "snapshots" / done["result"]["commit"]).is_dir()
        pruned = _json(cluster.bfjobs(admin, "jobs", "prune", "--json"))
        assert [f["path"] for f in pruned["folders"]] == [done["folder"]] and pruned["kept_live"] == 1
        assert Path(pending["folder"]).is_dir() and not Path(done["folder"]).exists()
    finally:
        cluster.bfjobs(admin, "cancel", pending["id"])
