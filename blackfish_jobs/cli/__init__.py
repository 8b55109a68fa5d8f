"""The ``bfjobs`` command: Click only. Each command opens a :class:`blackfish_jobs.api.Client`,
calls one method and prints the result (:mod:`._output`).

This module only wires the group; the commands live in one module per family (:mod:`.submit`:
submit and render; :mod:`.jobs`: status, list, wait, cancel, logs, jobs prune; :mod:`.cache`: cache ls/rm/prune/verify,
verify (the old name of cache verify), sync;
:mod:`.config`: config show, doctor),
loaded lazily (Click's LazyGroup pattern), so ``bfjobs status`` imports no submit code. The console
script enters through :mod:`blackfish_jobs.entry`, which gives ``bfjobs status`` a head start on its
``sacct`` call before this package is imported.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Any

import click

from ..api import __version__, debug_env
from ..errors import BfjobsError
from ._output import echo_err

#: command name -> "module:attribute" (modules relative to this package)
LAZY_COMMANDS = {
    "cache": "cache:cache",
    "cancel": "jobs:cancel",
    "config": "config:config",
    "doctor": "config:doctor",
    "jobs": "jobs:jobs_group",
    "list": "jobs:list_",
    "logs": "jobs:logs",
    "render": "submit:render_group",
    "status": "jobs:status",
    "submit": "submit:submit",
    "sync": "cache:sync",
    "verify": "cache:verify",
    "wait": "jobs:wait",
}


class BfjobsGroup(click.Group):
    """The ``bfjobs`` group: subcommands imported when named, and every failure turned into one
    stderr line and an exit code (0 success, 1 job or cluster failure, 2 bad input).

    Overriding ``main`` (rather than wrapping the console script) keeps the behaviour identical
    under ``CliRunner``.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS and cmd_name not in self.commands:
            module, attribute = LAZY_COMMANDS[cmd_name].split(":")
            command = getattr(importlib.import_module(f"{__name__}.{module}"), attribute)
            if not isinstance(command, click.Command):
                raise TypeError(f"{LAZY_COMMANDS[cmd_name]} is not a Click command")
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, **extra: Any) -> Any:
        extra["standalone_mode"] = False
        try:
            rv = super().main(args=args, prog_name=prog_name or "bfjobs", **extra)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.Abort as exc:
            if isinstance(exc.__cause__, KeyboardInterrupt):  # Click turns Ctrl-C into Abort
                _fail("interrupted", 130)
            _fail("aborted", 1)
        except click.ClickException as exc:
            _fail(f"error: {exc.format_message()}", 2 if isinstance(exc, click.UsageError) else exc.exit_code)
        except BfjobsError as exc:
            _fail(f"error: {exc}", exc.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except Exception as exc:  # last line of defence: users never see a traceback
            if debug_env():
                raise
            _fail(f"internal error: {type(exc).__name__}: {exc} (set BFJOBS_DEBUG=1 for the traceback)", 1)
        sys.exit(rv if isinstance(rv, int) else 0)


def _fail(message: str, code: int) -> None:
    echo_err("bfjobs: " + " ".join(message.split())[:1000])
    sys.exit(code)


@click.group(cls=BfjobsGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="bfjobs")
@click.option("--db", "db_url", metavar="URL", help="Database URL [env BFJOBS_DB_URL; default Blackfish's app.sqlite].")
@click.pass_context
def cli(click_ctx: click.Context, db_url: str | None) -> None:
    """Pull Apptainer images and download models for Blackfish as Slurm jobs.

    Jobs are rendered from Jinja templates, submitted and tracked with submitit, and their
    results land in Blackfish's shared caches and app database.
    """
    from ..api import Client

    client = Client(db_url, backends=click_ctx.obj)  # main()'s backends (a prestarted sacct), if any
    click_ctx.obj = client

    def at_end() -> None:
        notice = client.unregistered_notice()
        if notice:
            echo_err(notice)
        client.close()  # the store's connection, so SQLite tidies its WAL files as a last reader does

    click_ctx.call_on_close(at_end)


def main(argv: Sequence[str] | None = None, backends: object = None) -> None:
    """Console-script entry point; ``backends``: the entry's (holding a prestarted ``sacct``), passed
    through to the :class:`~blackfish_jobs.api.Client` unopened."""
    if debug_env():  # the library's debug records (how each cluster was reached) on stderr too
        import logging

        log = logging.getLogger("blackfish_jobs")
        if not any(getattr(h, "bfjobs_cli", False) for h in log.handlers):  # once per process
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("bfjobs: debug: %(message)s"))
            handler.bfjobs_cli = True  # type: ignore[attr-defined]
            log.addHandler(handler)
            log.setLevel(logging.DEBUG)
    cli.main(args=list(argv) if argv is not None else None, prog_name="bfjobs", obj=backends)
