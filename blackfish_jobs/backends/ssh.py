"""The system OpenSSH client, as bfjobs reaches a remote profile's cluster.

``ssh`` itself, not a Python SSH library: it honours the user's ``~/.ssh/config`` (Port,
ProxyJump, IdentityFile, Kerberos, Duo). One multiplexed master per cluster
(``ControlMaster=auto``, ``ControlPersist``) so a site with 2FA prompts once per few minutes,
not once per call. No ``BatchMode`` (it breaks keyboard-interactive and Kerberos logins, as
Blackfish found), but no call can hang: a connect timeout, keep-alives and a timeout on every
call. Host keys are checked strictly and never accepted automatically.

Every remote command line is made by :func:`remote_line` (``shlex.join``): the remote login
shell parses the line ssh sends, so this is the one place quoting happens.
"""

from __future__ import annotations

import os
import shlex
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from .. import constants
from ..errors import ConfigError
from .protocol import one_line

CONNECT_TIMEOUT_S = 15
#: a master outlives the command by this much: the next command (a ``wait`` loop) reuses it
CONTROL_PERSIST_S = 300


def remote_line(argv: Sequence[str]) -> str:
    """``argv`` as one line for the remote shell: each word quoted, so none is parsed as shell."""
    return shlex.join(argv)


def control_dir() -> Path:
    """The folder of the masters' sockets: created private, and refused unless it is ours and
    private (in ``/tmp`` another user could have made it first)."""
    path = constants.ssh_control_dir()
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        info = path.lstat()
    except OSError as exc:
        raise ConfigError(f"ssh control folder {path}: {exc.strerror or exc} (BFJOBS_SSH_CONTROL_DIR)") from None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise ConfigError(
            f"ssh control folder {path} is not a private folder of yours (mode {oct(info.st_mode & 0o777)}): "
            "remove it, or set BFJOBS_SSH_CONTROL_DIR"
        )
    return path


class Target(NamedTuple):
    """One cluster as a profile names it (``host``, ``user``: validated ssh words). A NamedTuple,
    not a dataclass: ``status`` reaches this module before it tells a held session its job ids,
    and ``dataclasses`` (with ``inspect``) costs ~6 ms there (benchmarks/README.md)."""

    profile: str
    host: str
    user: str | None

    def argv(self, remote: Sequence[str], *, master: bool = True, batch: bool = False) -> list[str]:
        """The ssh command running ``remote`` (quoted by :func:`remote_line`) on the cluster;
        ``batch``: never prompt (a detached session holder, with nobody to answer)."""
        options = [
            "-o",
            f"ConnectTimeout={CONNECT_TIMEOUT_S}",
            "-o",
            "ServerAliveInterval=15",
            "-o",
            "ServerAliveCountMax=3",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "ForwardAgent=no",
            "-o",
            "ForwardX11=no",
            "-o",
            "ClearAllForwardings=yes",
            "-o",
            "RequestTTY=no",
            "-o",
            "LogLevel=ERROR",
        ]
        if master:
            options += [
                "-o",
                "ControlMaster=auto",
                "-o",
                f"ControlPath={control_dir()}/%C",
                "-o",
                f"ControlPersist={CONTROL_PERSIST_S}",
            ]
        if batch:
            options += ["-o", "BatchMode=yes"]
        if self.user:
            options += ["-l", self.user]
        return [constants.ssh_command(), *options, "--", self.host, remote_line(remote)]

    def where(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host


def describe_failure(target: Target, stderr: str) -> str:
    """ssh's own failure (exit 255) in one line naming the profile and the host."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    text = one_line(" ".join(lines)[-300:]) if lines else "ssh failed without a message"  # the far side's words
    lowered = text.lower()
    if "host key verification failed" in lowered or "remote host identification has changed" in lowered:
        why = "its host key is unknown or has CHANGED (check it with the site, then fix ~/.ssh/known_hosts)"
    elif "permission denied" in lowered:
        why = "the login was refused (key, password or 2FA)"
    elif "could not resolve" in lowered or "connection refused" in lowered or "timed out" in lowered:
        why = "the host cannot be reached"
    else:
        why = "ssh failed"
    return f"profile {target.profile!r}: {why}: ssh {target.where()}: {text}"
