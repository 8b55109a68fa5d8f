"""docs/install.md followed from scratch, and the install used by another user on the real cluster.

Step 1 (a venv in a shared prefix, readable by all) is support.install; step 2 puts the example
site file in place; the example module file (Environment Modules, Debian's environment-modules)
is installed with its prefix filled in. Then a researcher who has configured nothing (no
profiles.cfg, no bfjobs.toml: step 3) logs in, loads the module, runs ``bfjobs doctor`` and
pulls an image: a real Slurm job owned by them, on the site's partition, loading the site's
apptainer module on the node, run by the shared install's interpreter.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shlex
import subprocess
import tempfile
from pathlib import Path

import pytest
from support.install import RUNUSER, SiteInstall
from support.site import REPO, json_job, skip_or_fail, wait_for

pytestmark = pytest.mark.slurm

USER = "bfresearcher"
EXAMPLES = REPO / "examples" / "site-install"
MODULES_INIT = Path("/etc/profile.d/modules.sh")


class Login:
    """A fresh login shell of ``USER`` with an empty home, where ``module`` works as at a site."""

    def __init__(self, install: SiteInstall, modulepath: Path) -> None:
        entry = pwd.getpwnam(USER)
        self.home = Path(tempfile.mkdtemp(prefix="home-", dir=install.root))
        os.chown(self.home, entry.pw_uid, entry.pw_gid)
        self.modulepath = modulepath

    def run(self, command: str) -> subprocess.CompletedProcess[str]:
        script = f"module use {shlex.quote(str(self.modulepath))} && module load bfjobs && {command}"
        return subprocess.run(
            [RUNUSER, "-u", USER, "--", "env", "-i", f"HOME={self.home}", "PATH=/usr/bin:/bin", "LANG=C.UTF-8",
             "BFJOBS_REGISTRY_OFFLINE=1", "bash", "-lc", script],
            capture_output=True, text=True, cwd="/", timeout=300,
        )


def _site_file(install: SiteInstall, hub_url: str) -> Path:
    """The example site file, with what this cluster needs added to its [defaults] (small jobs, the test hub)."""
    text = (EXAMPLES / "etc-bfjobs.toml").read_text()
    small = f'time = "00:10:00"\nmem = "200M"\ncpus_per_task = 1\nhf_endpoint = "{hub_url}"\n'
    text = text.replace("[defaults]\n", "[defaults]\n" + small, 1)
    path = install.root / "etc" / "bfjobs.toml"
    path.parent.mkdir()
    path.write_text(text)
    path.chmod(0o644)
    path.parent.chmod(0o755)
    return path


def _module_files(install: SiteInstall, site_file: Path) -> Path:
    """The example module file with the install's prefix and site file; and the site's apptainer module."""
    modulepath = install.root / "modulefiles"
    (modulepath / "bfjobs").mkdir(parents=True)
    text = (EXAMPLES / "bfjobs.tcl").read_text()
    text = re.sub(r"(?m)^set root .*$", f"set root {install.prefix}", text)
    text = re.sub(r"(?m)^# (setenv BFJOBS_SITE_CONFIG) .*$", rf"\1 {site_file}", text)
    (modulepath / "bfjobs" / "0.1").write_text(text)
    [module] = re.findall(r'"(apptainer/[^"]+)"', (EXAMPLES / "etc-bfjobs.toml").read_text())
    apptainer = modulepath / module
    apptainer.parent.mkdir(parents=True)
    apptainer.write_text(f"#%Module1.0\nprepend-path PATH {install.tools}\n")
    os.system(f"chmod -R a+rX {shlex.quote(str(modulepath))}")
    return modulepath


def test_install_guide_from_scratch_used_by_a_researcher(site_install, hub):
    if not MODULES_INIT.exists():
        skip_or_fail("needs Environment Modules: run scripts/test-site.sh (as root)")
    try:
        pwd.getpwnam(USER)
    except KeyError:
        skip_or_fail("needs the site's test users: run scripts/test-site.sh (as root)")
    site_file = _site_file(site_install, hub.url)
    login = Login(site_install, _module_files(site_install, site_file))

    found = login.run("command -v bfjobs")
    assert found.returncode == 0 and found.stdout.strip() == str(site_install.prefix / "bin" / "bfjobs"), found

    doctor = login.run("bfjobs doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    for name in ("profile", "slurm commands", "partition", "hub", "interpreter"):
        assert re.search(rf"(?m)^OK\s+{name} ", doctor.stdout), doctor.stdout

    shown = login.run("bfjobs config show --json")
    assert shown.returncode == 0, shown.stderr
    settings = json.loads(shown.stdout)["kinds"]["pull-image"]
    assert settings["partition"] == {"value": "datamover", "from": f"{site_file} [defaults]"}
    assert "partition" in json.loads(shown.stdout)["fixed"]

    fixed = login.run("bfjobs submit pull-image docker://alpine:3.20 --partition small")
    assert fixed.returncode == 2 and fixed.stderr.count("\n") == 1 and "partition" in fixed.stderr, fixed.stderr

    proc = login.run("bfjobs submit pull-image docker://alpine:3.20 --wait --json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    job = json_job(proc.stdout)
    assert job["state"] == "COMPLETED" and job["user"] == USER, job
    image = Path(job["result"]["path"])
    assert image == login.home / ".blackfish" / "images" / "alpine_3.20.sif" and image.stat().st_size > 0
    def accounted() -> list[str] | None:  # slurmdbd may lag the job's end by a moment
        out = subprocess.run(["sacct", "-X", "-n", "-P", "-j", job["slurm_job_id"], "-o", "User,Partition"],
                             capture_output=True, text=True, check=True).stdout.split()
        return out if out and not out[0].endswith("|") else None

    assert wait_for(accounted, timeout=30) == [f"{USER}|datamover"]
    script = login.run("bfjobs render pull-image docker://alpine:3.21").stdout
    assert "module load apptainer/1.3.4" in script and str(site_install.prefix / "bin" / "python") in script
