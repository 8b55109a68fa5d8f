"""A site kept by a group of admins (``shared_group``): the shared cache, the site file, and one
Blackfish home per real local user (``scripts/test-site.sh`` makes them, each with a Slurm association).
Used by test_shared_group.py and test_cache_slurm.py through the ``cluster`` fixture (conftest.py).
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from support.install import SiteInstall
from support.site import json_job, profiles_cfg, slurm_profile

GROUP = "bfcache"
ADMINS = ("bfadmin1", "bfadmin2")
RESEARCHER = "bfresearcher"
IMAGE = "docker://alpine:3.20"


class Cluster:
    """A site: the shared cache, the site file, and one Blackfish home per user."""

    def __init__(self, install: SiteInstall, hub_url: str) -> None:
        self.install = install
        self.root = Path(tempfile.mkdtemp(prefix="group-site-", dir=install.root))
        self.root.chmod(0o755)
        self.gid = grp.getgrnam(GROUP).gr_gid
        self.cache = self.root / "cache"
        self.cache.mkdir()
        os.chown(self.cache, 0, self.gid)  # the install guide: the cache is the admins' group's, setgid
        self.cache.chmod(0o2775)
        self.site_file = self.root / "bfjobs.toml"
        self.site_file.write_text(
            "[defaults]\n"
            f'shared_group = "{GROUP}"\ntime = "00:10:00"\nmem = "300M"\ncpus_per_task = 1\n'
            f'hf_endpoint = "{hub_url}"\n'
        )
        self.site_file.chmod(0o644)
        self.apps: dict[str, Path] = {}
        for user in (*ADMINS, RESEARCHER):
            entry = pwd.getpwnam(user)
            app, home = self.root / user / "app", self.root / user / "home"
            for d in (app.parent, app, home):
                d.mkdir()
                os.chown(d, entry.pw_uid, entry.pw_gid)
            (app / "profiles.cfg").write_text(profiles_cfg({"cluster": slurm_profile(home, self.cache, user=user)}))
            os.chown(app / "profiles.cfg", entry.pw_uid, entry.pw_gid)
            self.apps[user] = app

    def bfjobs(self, user: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return self.install.bfjobs(user, self.apps[user], *args, BFJOBS_SITE_CONFIG=str(self.site_file), **env)

    def job(self, user: str, *args: str) -> dict:
        proc = self.bfjobs(user, "submit", *args, "--wait", "--json")
        assert proc.returncode == 0, (user, args, proc.stdout, proc.stderr)
        job = json_job(proc.stdout)
        assert job["state"] == "COMPLETED" and job["user"] == user, job
        return job

    def run(self, user: str, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([shutil.which("runuser") or "runuser", "-u", user, "--", *argv],
                              capture_output=True, text=True, cwd="/", timeout=60)
