"""The ``bfjobs`` console script: start a plain ``bfjobs status``' one ``sacct`` call, then run the CLI.

Why before Click: a Python CLI's start-up (interpreter, Click, bfjobs' modules) takes about as
long as the ``sacct`` call itself on a quiet cluster, and ``status`` waits for both (what starting
it here saves: benchmarks/README.md). For ``bfjobs [--db URL] status [--json] [--profile NAME]`` this reads the
unfinished Slurm jobs' ids with the stdlib (:mod:`store`, a few ms), starts exactly the
``sacct`` command the Slurm backend will ask for (:func:`backends.slurmcmd.prestart`, a plain
``subprocess.Popen``) and only then imports the CLI, handing it the running call: the backend's
first identical call collects it, so there is still one call. SQLAlchemy and Click are not
imported before it starts.

Everything else goes straight to the CLI: other commands, job ids, unknown options, other
databases, a database not yet at the head schema, any error here (the CLI meets it again and
reports it).
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from .backends import Backends

if TYPE_CHECKING:
    from .backends.session import Held
    from .backends.slurmcmd import Prestarted


def run() -> None:
    """The console script (``bfjobs``, ``python -m blackfish_jobs``): :func:`main`, then an exit
    that skips collecting what the imports made.

    The one start-up/exit measure kept (benchmarks/README.md, "Issue 12"): the interpreter's exit
    garbage-collects every object the imports made, ~6 ms of a 50 ms ``--help`` or ``list``;
    frozen objects are skipped. Only here, where the process ends next: a Python caller of
    :func:`main` keeps its collector whole. Exit itself is the normal one (atexit, flushing).
    """
    try:
        main()
    finally:
        gc.freeze()


def main(argv: Sequence[str] | None = None) -> None:
    """Run one bfjobs command (``argv``: the words after ``bfjobs``; default ``sys.argv[1:]``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    request = plain_status(args)
    live = _read_live(*request) if request is not None else None
    backends = Backends(prestarted=_prestart_sacct(live), early=_prestart_remote(live))
    from .cli import main as cli_main

    try:
        cli_main(args, backends=backends)
    finally:
        backends.close()  # a prestarted call nobody collected is killed, not left running


def plain_status(args: Sequence[str]) -> tuple[str | None, str | None] | None:
    """``(--db value, --profile value)`` if ``args`` is ``[--db URL] status [--json] [--profile NAME]``.

    Deliberately strict (each option at most once, values not starting with ``-``): whatever
    else Click would accept simply runs without the head start.
    """
    if "status" not in args:
        return None
    at = args.index("status")
    group = _options(args[:at], valued=("--db",), flags=())
    command = _options(args[at + 1 :], valued=("--profile",), flags=("--json",))
    if group is None or command is None:
        return None
    return group.get("--db"), command.get("--profile")


def _options(tokens: Sequence[str], valued: Sequence[str], flags: Sequence[str]) -> dict[str, str] | None:
    found: dict[str, str] = {}
    i = 0
    while i < len(tokens):
        name, eq, value = tokens[i].partition("=")
        if (name in flags and not eq) or (name in valued and eq):  # --json, --db=URL
            i += 1
        elif name in valued and i + 1 < len(tokens):  # --db URL
            value = tokens[i + 1]
            i += 2
        else:
            return None
        if name in found or value.startswith("-"):
            return None
        found[name] = value
    return found


class _Live(NamedTuple):
    """What ``status`` will ask about, read from the store before the CLI loads."""

    slurm_ids: list[str]
    oldest: datetime | None
    remote_profiles: list[str]
    remote_ids: list[str]  # the Slurm ids of the one remote profile's unfinished jobs (for its hint)
    remote_oldest: datetime | None


def _read_live(db_url: str | None, profile: str | None) -> _Live | None:
    """The unfinished Slurm jobs' ids (and the oldest submit time) and the remote profiles with
    unfinished jobs; None when the database is not a SQLite file at the head schema (or any error:
    the CLI meets it again and reports it)."""
    from . import constants, store
    from .backends import slurmcmd

    try:
        path = store.sqlite_path(db_url or constants.default_db_url())
        if path is None or not os.path.isfile(path):
            return None
        conn = store.connect(path)
        try:
            if not store.at_head(conn):
                return None
            ids, oldest = store.live_native_ids(conn, slurmcmd.BACKEND, profile or None)
            remote = store.live_profiles(conn, "remote", profile or None)
            far, far_oldest = store.live_native_ids(conn, "remote", remote[0]) if len(remote) == 1 else ([], None)
            return _Live(ids, oldest, remote, far, far_oldest)
        finally:
            conn.close()
    except Exception:
        return None


def _prestart_remote(live: _Live | None) -> dict[str, Any] | None:
    """Start asking the remote profile's cluster that ``status`` will ask. With a held session
    (:mod:`.backends.session`): tell it the jobs' ids before reading any configuration, so that
    its ``sacct`` call starts now. Otherwise start the connection: the login, the interpreter and
    bfjobs' imports there overlap the CLI's start-up here; the request itself is sent by the
    remote backend once it has the rows. Nothing is sent to an agent nobody asks: it is killed
    when the command ends."""
    if live is None or len(live.remote_profiles) != 1:
        return None  # several clusters: one at a time, so that two logins never prompt at once
    name = live.remote_profiles[0]
    held = _hint_held(name, live)  # first: the cluster's sacct starts while the rest loads here
    from .backends import remote

    if held is not None:
        try:
            agent = remote.agent_for(name)
        except Exception:  # the CLI meets the same problem and reports it
            held.close()
            return None
        agent.adopt(held)
        if not agent.session_s:  # held sessions since turned off (remote_session = 0): the plain way
            with contextlib.suppress(Exception):  # only a head start: the CLI meets it and reports it
                agent.prestart()
        return {name: agent}
    agents: dict[str, Any] = {}
    try:
        for name in live.remote_profiles:
            agents[name] = remote.agent_for(name)
            agents[name].prestart()
    except Exception:  # only a head start: the CLI meets the same problem and reports it
        for agent in agents.values():
            agent.close()
        return None
    return agents


def _hint_held(name: str, live: _Live) -> Held | None:
    """The profile's held session, told which jobs this ``status`` will ask about; None if none."""
    from .backends import session, ssh

    held = None
    try:  # the control folder checked as the backend checks it: private, the user's own
        held = session.connect(ssh.control_dir(), name)
        if held is not None:
            held.hint(live.remote_ids, live.remote_oldest)
        return held
    except Exception:  # only a head start
        if held is not None:
            held.close()
        return None


def _prestart_sacct(live: _Live | None) -> Prestarted | None:
    """Start the ``sacct`` call ``status`` will make for the unfinished Slurm jobs (same argv)."""
    if live is None or live.oldest is None:
        return None
    from .backends import slurmcmd

    try:
        return slurmcmd.prestart_sacct(live.slurm_ids, slurmcmd.sacct_since([live.oldest]))
    except Exception:  # only a head start: the CLI meets the same problem and reports it
        return None
