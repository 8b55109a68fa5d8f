"""bfjobs as user ``nobody``: a world-readable copy of exactly the modules bfjobs imports, run by
Debian's own ``python3.11`` (same ABI), since the test interpreter may live where ``nobody``
cannot read it (``/root/.pyenv``)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from support.site import REPO, STUB_BIN, skip_or_fail

SYSTEM_PYTHON = "/usr/bin/python3.11"


def copy_bfjobs_for_nobody() -> Path:
    """A fresh folder under /tmp holding ``lib/`` (bfjobs and its imports) and ``bin/`` (the stand-ins),
    all world-readable; skipped (failed under ``BFJOBS_REQUIRE_SLURM``) where it cannot run."""
    if os.geteuid() != 0 or shutil.which("runuser") is None or not os.access(SYSTEM_PYTHON, os.X_OK):
        skip_or_fail("needs root, runuser and Debian's python3.11")
    root = Path(tempfile.mkdtemp(prefix="bfjobs-nobody-", dir="/tmp"))
    root.chmod(0o755)
    lib = root / "lib"
    lib.mkdir()
    # the top-level packages bfjobs imports, copied where nobody can read them
    code = (
        "import sys, blackfish_jobs.cli, blackfish_jobs.api, blackfish_jobs.backends.executors, "
        "blackfish_jobs.backends.slurm, blackfish_jobs.node.download, blackfish_jobs.node.pull, "
        "blackfish_jobs.tracking, blackfish_jobs.store.blackfish, alembic.command, alembic.config, "
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
    return root


def nobody_site(root: Path) -> tuple[Path, Path, Path]:
    """A fresh site folder under ``root`` (readable by all): ``app`` and ``home`` made and
    ``nobody``'s, and the path of ``cache``, not made (each test gives it its owner and modes)."""
    nobody = pwd.getpwnam("nobody")
    site = Path(tempfile.mkdtemp(prefix="site-", dir=root))
    site.chmod(0o755)
    app, home, cache = site / "app", site / "home", site / "cache"
    for folder in (app, home):
        folder.mkdir()
        os.chown(folder, nobody.pw_uid, nobody.pw_gid)
    return app, home, cache


def as_nobody(root: Path, app: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": f"{root / 'bin'}:/usr/bin:/bin",
        "PYTHONPATH": str(root / "lib"),
        "BLACKFISH_HOME_DIR": str(app),
        "HOME": str(app),
        "LANG": "C.UTF-8",
        "BFJOBS_REGISTRY_OFFLINE": "1",  # Docker Hub's names are never asked for (conftest)
    }
    return subprocess.run(
        [shutil.which("runuser") or "runuser", "-u", "nobody", "--", SYSTEM_PYTHON, "-m", "blackfish_jobs", *args],
        capture_output=True, text=True, env=env, cwd=str(app), timeout=300,
    )
