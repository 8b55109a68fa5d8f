"""bfjobs as an unprivileged user (``nobody``) on the real cluster.

A user who cannot write ``cache_dir`` gets a clear refusal before anything is submitted, and the
same user's own pull (``--to home``) runs as a Slurm job owned by them.

The test interpreter may live where ``nobody`` cannot read it (``/root/.pyenv``), so the test
runs Debian's own ``python3.11`` (same ABI) with a world-readable copy of exactly the modules
bfjobs imports. Nothing is mocked: the real code, the real cluster, a real unprivileged user.
"""

from __future__ import annotations

import os
import pwd
import subprocess

import pytest
from support.site import json_job, profiles_cfg, slurm_profile, wait_for
from support.unprivileged import as_nobody, nobody_site

pytestmark = pytest.mark.slurm


def test_nobody_refused_on_shared_cache_and_pulls_to_home(nobody_env):
    root = nobody_env
    nobody = pwd.getpwnam("nobody")
    app, home, cache = nobody_site(root)
    (cache / "images").mkdir(parents=True)
    subprocess.run(["chmod", "-R", "755", str(cache)], check=True)  # root's shared cache: read-only for users
    (app / "profiles.cfg").write_text(profiles_cfg({"cluster": slurm_profile(home, cache, user="nobody")}))
    (app / "bfjobs.toml").write_text('[defaults]\nmem = "200M"\ntime = "00:10:00"\ncpus_per_task = 1\n')

    refused = as_nobody(root, app, "submit", "pull-image", "docker://alpine:3.20")
    assert refused.returncode == 2, refused.stderr
    [line] = refused.stderr.strip().splitlines()
    assert f"cannot write to the destination {cache}/images" in line and "--to home" in line
    assert "Only the shared cache's admins add the images Blackfish's services run" in line
    assert not (home / "jobs").exists()
    assert os.listdir(cache / "images") == []
    for flag in (["--shared"], ["--to", "shared"]):
        refused = as_nobody(root, app, "submit", "download-model", "org/model", *flag)
        assert refused.returncode == 2 and "cannot write to the destination" in refused.stderr
        assert "--to shared is for the shared cache's admins" in refused.stderr and refused.stderr.count("\n") == 1

    proc = as_nobody(root, app, "submit", "pull-image", "docker://alpine:3.20", "--to", "home", "--json")
    assert proc.returncode == 0, proc.stderr
    job = json_job(proc.stdout)
    assert job["user"] == "nobody"
    done = wait_for(
        lambda: (s := json_job(as_nobody(root, app, "status", job["id"], "--json").stdout))["state"]
        not in ("PENDING", "RUNNING") and s,
        timeout=120,
    )
    assert done["state"] == "COMPLETED", done
    image = home / "images" / "alpine_3.20.sif"
    assert image.stat().st_uid == nobody.pw_uid
    owner = subprocess.run(["sacct", "-X", "-n", "-P", "-j", job["slurm_job_id"], "-o", "User"],
                           capture_output=True, text=True, check=True).stdout.split()
    assert owner == ["nobody"]
