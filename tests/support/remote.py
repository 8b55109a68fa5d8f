"""A researcher's laptop and their cluster, as tests/test_remote.py uses them.

scripts/sshd-up.sh made the parts: user ``bflaptop`` (the laptop; its ``~/.ssh/config`` names the
cluster ``bfcluster``, with its key and the host key) and user ``bfcluster`` (the cluster account,
with a Slurm association), between them a real sshd on 127.0.0.1. Each test gets its own folders
on both sides, a laptop PATH holding nothing but an ``ssh`` that counts its invocations (so no
Slurm command can be used on the laptop), and its own ssh master, ended afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

from support.install import RUNUSER, SiteInstall
from support.site import skip_or_fail

SSHD_DIR = Path("/etc/bfjobs-test-sshd")
LAPTOP, CLUSTER, ALIAS = "bflaptop", "bfcluster", "bfcluster"


def _home(user: str) -> Path:
    import pwd

    return Path(pwd.getpwnam(user).pw_dir)


def sshd_ready() -> None:
    """Skip (fail in CI) unless scripts/sshd-up.sh's sshd runs."""
    pid_file = SSHD_DIR / "sshd.pid"
    try:
        pid = int(pid_file.read_text())
        os.kill(pid, 0)
        _home(LAPTOP), _home(CLUSTER)
    except (OSError, ValueError, KeyError):
        skip_or_fail("the test sshd is not running: run scripts/test-site.sh (it calls scripts/sshd-up.sh)")


def cluster_login_profile(*exports: str) -> None:
    """Write the cluster user's ``~/.bash_profile`` (read by the agent's ``bash -lc``): its
    ``~/.profile`` plus ``exports`` (``NAME=value``); none: remove it. The tests' cluster reaches
    no public registry, as an air-gapped site's: ``BFJOBS_REGISTRY_OFFLINE=1`` (conftest)."""
    path = _home(CLUSTER) / ".bash_profile"
    if not exports:
        path.unlink(missing_ok=True)
        return
    lines = ['[ -f "$HOME/.profile" ] && . "$HOME/.profile"', *(f"export {e}" for e in exports)]
    path.write_text("\n".join(lines) + "\n")
    subprocess.run(["chown", f"{CLUSTER}:{CLUSTER}", str(path)], check=True)


def _chown(path: Path, user: str) -> None:
    subprocess.run(["chown", "-R", f"{user}:{user}", str(path)], check=True)


class Laptop:
    """One test's laptop app dir (Blackfish's BLACKFISH_HOME_DIR) and cluster folders."""

    def __init__(self, laptop: SiteInstall, cluster: SiteInstall) -> None:
        tag = uuid.uuid4().hex[:8]
        self.laptop_install, self.cluster_install = laptop, cluster
        self.root = _home(LAPTOP) / f"t-{tag}"
        self.app = self.root / "app"
        self.bin = self.root / "bin"
        self.control = self.root / "cm"
        self.calls_log = self.root / "ssh-calls.log"
        self.cluster_root = _home(CLUSTER) / f"t-{tag}"
        self.home_dir = self.cluster_root / "home"
        self.cache_dir = self.cluster_root / "cache"
        for path in (self.app, self.bin):
            path.mkdir(parents=True)
        self.control.mkdir(mode=0o700)
        for path in (self.home_dir, self.cache_dir / "images", self.cache_dir / "models"):
            path.mkdir(parents=True)
        ssh = self.bin / "ssh"  # the system client, counting its invocations
        ssh.write_text(f'#!/bin/sh\necho "$*" >> {self.calls_log}\nexec /usr/bin/ssh "$@"\n')
        ssh.chmod(0o755)
        self.write_profiles()
        self.write_settings()
        _chown(self.root, LAPTOP)
        _chown(self.cluster_root, CLUSTER)

    def write_profiles(self, **keys: str) -> None:
        values = {"schema": "slurm", "host": ALIAS, "user": CLUSTER, "home_dir": str(self.home_dir),
                  "cache_dir": str(self.cache_dir), **keys}
        text = "[cluster]\n" + "".join(f"{k} = {v}\n" for k, v in values.items())
        (self.app / "profiles.cfg").write_text(text)

    def write_settings(self, *lines: str, remote_python: str | None = None, session: int | None = 0) -> None:
        """The laptop's bfjobs.toml. ``session``: ``remote_session`` (None: unset, the default of
        holding sessions). 0 unless asked: most tests count each request's ssh call, which a held
        session (tests/test_remote_session.py) would answer instead."""
        python = remote_python or str(self.cluster_install.prefix / "bin" / "python")
        apptainer = self.cluster_install.tools / "apptainer"
        held = "" if session is None else f"remote_session = {session}\n"
        text = f'[profiles.cluster]\nremote_python = "{python}"\napptainer = "{apptainer}"\n{held}' + "\n".join(lines)
        (self.app / "bfjobs.toml").write_text(text + "\n")

    def write_list(self, name: str, entries: list[str]) -> Path:
        """A ``--from-file`` list in the laptop's app dir, the laptop user's."""
        path = self.app / name
        path.write_text("\n".join(entries) + "\n")
        shutil.chown(path, LAPTOP, LAPTOP)
        return path

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "PATH": str(self.bin),  # ssh only: the laptop has no Slurm (nor anything else) on PATH
            "HOME": str(_home(LAPTOP)),
            "BLACKFISH_HOME_DIR": str(self.app),
            "BFJOBS_SSH_CONTROL_DIR": str(self.control),
            "LANG": "C.UTF-8",
            **extra,
        }

    def bfjobs(self, *args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
        """``bfjobs ARGS`` on the laptop, as the laptop user."""
        return subprocess.run(
            [RUNUSER, "-u", LAPTOP, "--", str(self.laptop_install.prefix / "bin" / "bfjobs"), *args],
            capture_output=True, text=True, env=self.env(**env), cwd=str(self.app), timeout=timeout,
        )

    def ssh_calls(self) -> int:
        """ssh invocations so far (each is one round trip to the cluster)."""
        try:
            return len(self.calls_log.read_text().splitlines())
        except FileNotFoundError:
            return 0

    def close(self) -> None:
        for socket in self.control.iterdir() if self.control.exists() else ():
            if socket.name.startswith("held-"):
                continue  # a session holder's: it goes with its master's session
            subprocess.run(
                [RUNUSER, "-u", LAPTOP, "--", "/usr/bin/ssh", "-o", f"ControlPath={socket}", "-O", "exit", ALIAS],
                capture_output=True, timeout=30,
            )
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.cluster_root, ignore_errors=True)
