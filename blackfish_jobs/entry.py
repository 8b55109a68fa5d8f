"""The ``bfjobs`` console script: start a plain ``bfjobs status``' one ``sacct`` call, then run the CLI.

Why before Click: a Python CLI's start-up (interpreter, Click, bfjobs' modules) takes about as
long as the ``sacct`` call itself on a quiet cluster, and ``status`` waits for both. For
``bfjobs [--db URL] status [--json] [--profile NAME]`` this reads the unfinished Slurm jobs' ids
with the stdlib (:mod:`store`, a few ms), starts exactly the ``sacct`` command
the tracker will ask for (:func:`slurmcmd.prestart`) and only then imports the CLI, which runs as
always: its ``sacct`` call collects the running one, so there is still one call.

Everything else goes straight to the CLI: other commands, job ids, unknown options, other
databases, a database not yet at the head schema, any error here (the CLI meets it again and
reports it). Only the standard library and bfjobs' import-light modules are imported here.
"""

from __future__ import annotations

import gc
import os
import sys

from .constants import TYPE_CHECKING

if TYPE_CHECKING:  # typing and collections.abc would be imported before sacct starts
    from collections.abc import Sequence
    from typing import NoReturn


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (``bfjobs`` and ``python -m blackfish_jobs``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    request = plain_status(args)
    own_process = argv is None  # the bfjobs command itself, not a Python caller of main()
    if request is not None and own_process:
        # One refresh, then exit: its garbage is bounded by the rows it shows, while a collection
        # pass over every imported module's objects lands after sacct answers (~1 ms per 1,000 jobs).
        gc.disable()
    on_sqlite = _prestart_sacct(*request) if request is not None else False
    from .cli import main as cli_main

    try:
        cli_main(args)
    except SystemExit as done:
        if on_sqlite and own_process and _plain_exit(done.code):
            _exit_now(done.code or 0)
        raise
    finally:
        # Interpreter shutdown runs the cyclic GC over every object of every module imported
        # (~7 ms with Click and bfjobs loaded, on the 2-CPU test VM); it skips frozen objects,
        # and nothing in this process is needed any more (atexit handlers still run).
        gc.freeze()


def _plain_exit(code: object) -> bool:
    """An exit code, and no profiler or tracer (cProfile, coverage, a debugger) waiting to finish."""
    return (code is None or isinstance(code, int)) and sys.getprofile() is None and sys.gettrace() is None


def _exit_now(code: int) -> NoReturn:
    """End the ``bfjobs status`` process without the interpreter's teardown.

    Tearing down Click's and bfjobs' modules and the rows just shown takes 2-3 ms once the
    table is out, as long as all of status' own work after ``sacct`` answers. Nothing on this
    path needs it: the standard streams are flushed here, atexit callbacks still run (the
    reaper of an unused prestarted ``sacct``), the database is a SQLite file whose writes are
    committed as they are made (autocommit) and no thread is left. Only the console script's
    own process exits so, and only with no profiler or tracer attached: a caller of
    :func:`main` from Python gets its SystemExit.
    """
    import atexit

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: as Python's own exit would say
            code = code or 120
    atexit._run_exitfuncs()
    os._exit(code)


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


def _prestart_sacct(db_url: str | None, profile: str | None) -> bool:
    """Start the ``sacct`` call ``status`` will make for the unfinished Slurm jobs (same argv).

    True if the database is a SQLite file at the head schema (the stdlib path serves it).
    """
    from . import constants, slurmcmd, store

    try:
        path = store.sqlite_path(db_url or constants.default_db_url())
        if path is None or not os.path.isfile(path):
            return False
        conn = store.connect(path)
        try:
            if not store.at_head(conn):
                return False
            ids, oldest = store.slurm_unfinished(conn, profile or None)
        finally:
            conn.close()
        if oldest is not None:
            argv = slurmcmd.sacct_argv([sid or "" for sid in ids], slurmcmd.sacct_since([oldest]))
            if argv is not None:
                slurmcmd.prestart(argv)
        return True
    except Exception:  # only a head start: the CLI meets the same problem and reports it
        return False
