"""bfjobs as an unprivileged user (``nobody``) on the real cluster.

A user who cannot write ``cache_dir`` gets a clear refusal before anything is submitted, and the
same user's own pull (``--to home``) runs as a Slurm job owned by them.

The test interpreter may live where ``nobody`` cannot read it (``/root/.pyenv``), so the test
runs Debian's own ``python3.11`` (same ABI) with a world-readable copy of exactly the modules
bfjobs imports. Nothing is mocked: the real code, the real cluster, a real unprivileged user.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from conftest import REPO, STUB_BIN, skip_or_fail, wait_for

pytestmark = pytest.mark.slurm

SYSTEM_PYTHON = "/usr/bin/python3.11"


@pytest.fixture(scope="module")
def nobody_env():
    if os.geteuid() != 0 or shutil.which("runuser") is None or not os.access(SYSTEM_PYTHON, os.X_OK):
        skip_or_fail("needs root, runuser and Debian's python3.11")
    root = Path(tempfile.mkdtemp(prefix="bfjobs-nobody-", dir="/tmp"))
    root.chmod(0o755)
    lib = root / "lib"
    lib.mkdir()
    # the top-level packages bfjobs imports, copied where nobody can read them
    code = (
        "import sys, blackfish_jobs.cli, blackfish_jobs.api, blackfish_jobs.backends.executors, blackfish_jobs.tasks, "
        "blackfish_jobs.tracking, blackfish_jobs.registry, blackfish_jobs.db, alembic.command, alembic.config, "
        "jinja2, submitit, sqlalchemy.dialects.sqlite, mako.template\n"
        "import os\n"
        "seen = set()\n"
        "for m in list(sys.modules.values()):\n"
        "    f = getattr(m, '__file__', None) or ''\n"
        "    if 'site-packages' in f:\n"
        "        top = f.split('site-packages/', 1)[1].split('/', 1)[0]\n"
        "        seen.add(f.split('site-packages/', 1)[0] + 'site-packages/' + top)\n"
        "print('\\n'.join(sorted(seen)))"
    )
    paths = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    for path in map(Path, paths):
        if path.is_dir():
            shutil.copytree(path, lib / path.name, ignore=shutil.ignore_patterns("__pycache__"))
        elif path.suffix in (".py", ".so"):
            shutil.copy2(path, lib / path.name)
    # the project itself (an editable install points into the source tree, which may be private)
    shutil.copytree(REPO / "blackfish_jobs", lib / "blackfish_jobs", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "templates", lib / "blackfish_jobs" / "templates")
    shutil.copytree(STUB_BIN, root / "bin")
    subprocess.run(["chmod", "-R", "a+rX", str(root)], check=True)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def as_nobody(root: Path, app: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": f"{root / 'bin'}:/usr/bin:/bin",
        "PYTHONPATH": str(root / "lib"),
        "BLACKFISH_HOME_DIR": str(app),
        "HOME": str(app),
        "LANG": "C.UTF-8",
    }
    return subprocess.run(
        [shutil.which("runuser") or "runuser", "-u", "nobody", "--", SYSTEM_PYTHON, "-m", "blackfish_jobs", *args],
        capture_output=True, text=True, env=env, cwd=str(app), timeout=300,
    )


def test_nobody_refused_on_shared_cache_and_pulls_to_home(nobody_env):
    root = nobody_env
    nobody = pwd.getpwnam("nobody")
    site = Path(tempfile.mkdtemp(prefix="site-", dir=root))
    site.chmod(0o755)
    app, home, cache = site / "app", site / "home", site / "cache"
    for d in (app, home):
        d.mkdir()
        os.chown(d, nobody.pw_uid, nobody.pw_gid)
    (cache / "images").mkdir(parents=True)
    subprocess.run(["chmod", "-R", "755", str(cache)], check=True)  # root's shared cache: read-only for users
    (app / "profiles.cfg").write_text(textwrap.dedent(f"""
        [cluster]
        schema = slurm
        host = localhost
        user = nobody
        home_dir = {home}
        cache_dir = {cache}
        """))
    (app / "bfjobs.toml").write_text('[defaults]\nmem = "200M"\ntime = "00:10:00"\ncpus_per_task = 1\n')

    refused = as_nobody(root, app, "submit", "pull-image", "docker://alpine:3.20")
    assert refused.returncode == 2, refused.stderr
    [line] = refused.stderr.strip().splitlines()
    assert f"cannot write to the destination {cache}/images" in line and "--to home" in line
    assert not (home / "jobs").exists()
    assert os.listdir(cache / "images") == []
    refused = as_nobody(root, app, "submit", "download-model", "org/model", "--shared")
    assert refused.returncode == 2 and "cannot write to the destination" in refused.stderr

    proc = as_nobody(root, app, "submit", "pull-image", "docker://alpine:3.20", "--to", "home", "--json")
    assert proc.returncode == 0, proc.stderr
    job = json.loads(proc.stdout)
    assert job["user"] == "nobody"
    done = wait_for(
        lambda: (s := json.loads(as_nobody(root, app, "status", job["id"], "--json").stdout))["state"]
        not in ("PENDING", "RUNNING") and s,
        timeout=120,
    )
    assert done["state"] == "COMPLETED", done
    image = home / "images" / "alpine_3.20.sif"
    assert image.stat().st_uid == nobody.pw_uid
    owner = subprocess.run(["sacct", "-X", "-n", "-P", "-j", job["slurm_job_id"], "-o", "User"],
                           capture_output=True, text=True, check=True).stdout.split()
    assert owner == ["nobody"]
