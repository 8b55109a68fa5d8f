"""A site install made the way docs/install.md says, for tests that run bfjobs as other users.

Step 1 of the guide, as written: a venv of the system's ``python3.11`` in a prefix every user can
read, bfjobs ``pip install``ed into it from the source tree, ``chmod -R a+rX``. The only
difference: pip takes the dependencies (and the build backend) from the wheelhouse that
``scripts/test-site.sh`` prepared, since the tests never use the network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from support.site import REPO, STUB_BIN, skip_or_fail
from support.unprivileged import SYSTEM_PYTHON

WHEELHOUSE = REPO / ".cache" / "wheelhouse"
RUNUSER = shutil.which("runuser") or "/usr/sbin/runuser"


@dataclass
class SiteInstall:
    """``prefix``: the venv (``prefix/bin/bfjobs``); ``tools``: a world-readable copy of the
    ``apptainer`` stand-in (what a site's apptainer module puts on PATH)."""

    root: Path
    prefix: Path
    tools: Path

    def env(self, app: Path, **extra: str) -> dict[str, str]:
        """A user's environment once ``module load bfjobs`` (and apptainer) ran."""
        return {
            "PATH": f"{self.prefix / 'bin'}:{self.tools}:/usr/bin:/bin",
            "BLACKFISH_HOME_DIR": str(app),
            "HOME": str(app),
            "LANG": "C.UTF-8",
            "BFJOBS_REGISTRY_OFFLINE": "1",  # Docker Hub's names are never asked for (conftest)
            **extra,
        }

    def bfjobs(self, user: str, app: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """``bfjobs ARGS`` as ``user`` (a real local user), from the site install."""
        return subprocess.run(
            [RUNUSER, "-u", user, "--", str(self.prefix / "bin" / "bfjobs"), *args],
            capture_output=True, text=True, env=self.env(app, **env), cwd=str(app), timeout=300,
        )


def install_site() -> SiteInstall:
    """Follow the install guide's step 1 into a fresh prefix under /tmp (readable by all)."""
    if os.geteuid() != 0 or not os.access(SYSTEM_PYTHON, os.X_OK) or not Path(RUNUSER).exists():
        skip_or_fail("needs root, runuser and Debian's python3.11")
    if not (WHEELHOUSE / ".complete").exists():
        skip_or_fail(f"no wheelhouse at {WHEELHOUSE}: run scripts/test-site.sh (as root)")
    root = Path(tempfile.mkdtemp(prefix="bfjobs-apps-", dir="/tmp"))
    prefix = root / "bfjobs" / "0.1"
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", str(prefix)], check=True, capture_output=True)
    subprocess.run(
        [str(prefix / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         "--no-index", "--find-links", str(WHEELHOUSE), str(REPO)],
        check=True, capture_output=True, text=True, env={**os.environ, "PIP_CONFIG_FILE": os.devnull},
    )
    tools = root / "apptainer" / "bin"
    shutil.copytree(STUB_BIN, tools)
    subprocess.run(["chmod", "-R", "a+rX", str(root)], check=True)
    root.chmod(0o755)
    return SiteInstall(root, prefix, tools)
