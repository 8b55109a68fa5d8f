"""``bfjobs submit KIND`` and ``bfjobs render KIND``: both commands of every kind, made from the
kind's option data (:func:`blackfish_jobs.api.kinds`); nothing here knows a kind by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from .. import api
from ._output import ProgressLines, describe, echo_err, print_json
from ._utils import json_option, profile_option, slurm_options

if TYPE_CHECKING:
    from ..api import Client, Kind, SubmitResult


class KindGroup(click.Group):
    """A group with one subcommand per kind, made when named (``make``): a kind registered after
    this module was imported has its commands too."""

    def __init__(self, *args: Any, make: Callable[[Kind], click.Command], **extra: Any) -> None:
        super().__init__(*args, **extra)
        self.make = make

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *(k.name for k in api.kinds())})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        kind = next((k for k in api.kinds() if k.name == cmd_name), None)
        return self.make(kind) if kind is not None else super().get_command(ctx, cmd_name)


def kind_options(kind: Kind) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The kind's main argument, ``--profile``, its own options (in its order), the Slurm options."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn = slurm_options(fn)
        for option in reversed(kind.options):
            extra: dict[str, Any] = {"help": option.help}
            if option.is_flag:
                extra["is_flag"] = True
            if option.multiple:
                extra["multiple"] = True
            if option.choice is not None:
                extra["type"] = click.Choice(list(option.choice))
            if option.default is not None:
                extra["default"] = option.default
            if option.show_default:
                extra["show_default"] = True
            if option.metavar is not None:
                extra["metavar"] = option.metavar
            fn = click.option(*option.flags, option.dest, **extra)(fn)
        fn = profile_option(fn)
        return click.argument(kind.argument.name, required=False)(fn)

    return decorate


def list_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option(
        "--max-parallel", "max_parallel", metavar="N",
        help="With --from-file: at most N elements of the job array run at once (Slurm's %N).",
    )(fn)
    return click.option(
        "--from-file", "from_file", metavar="FILE",
        help="One entry per line ('#' comments; '-' reads stdin): one Slurm job array for all.",
    )(fn)


def _request(kind: Kind, params: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """The command's parameters as the facade's arguments: (the main argument, keyword arguments)."""
    what = params.pop(kind.argument.name)
    params["profile"] = params.pop("profile_name")
    return what, params


def _report_submitted(result: SubmitResult, as_json: bool) -> None:
    """One line per request: submitted, present or in flight (nothing with --json)."""
    if result.notice:
        echo_err(result.notice)
    if as_json:
        return
    for label, outcome in zip(result.labels, result.jobs, strict=True):
        click.echo(api.outcome_message(outcome, label))


def submit_command(kind: Kind) -> click.Command:
    """``bfjobs submit KIND``."""

    @click.command(kind.name, help=kind.help)
    @kind_options(kind)
    @list_options
    @click.option(
        "--wait", "wait_", is_flag=True, help=f"Wait for the job; exit 0 only if the {kind.artefact} is in place."
    )
    @json_option("Print one JSON object (see docs/json.md).")
    @click.pass_obj
    def submit_kind(client: Client, wait_: bool, as_json: bool, **params: Any) -> None:
        what, options = _request(kind, params)
        lines = ProgressLines(client.progress)
        shown = []

        def submitted(result: SubmitResult) -> None:
            shown.append(result)
            _report_submitted(result, as_json)

        result = client.submit(
            kind.name, what, wait=wait_, note=echo_err, on_submitted=submitted, on_tick=lines,
            on_problems=lines.problems, **options
        )
        lines.finish()
        if not shown:
            _report_submitted(result, as_json)
        if as_json:
            print_json(result)
        elif result.waited:
            for row in result.rows:
                click.echo(describe(row))
        result.raise_for_status()

    return submit_kind


def render_command(kind: Kind) -> click.Command:
    """``bfjobs render KIND``."""

    @click.command(kind.name, help=f"Print the sbatch script `bfjobs submit {kind.name}` would submit.")
    @kind_options(kind)
    @list_options
    @click.pass_obj
    def render_kind(client: Client, **params: Any) -> None:
        """``render``: submit's checks, then the script for what submit would send (nothing if none).

        What submit would not send (present, in flight) gets submit's message on stderr, so stdout
        holds only the script; a refused destination is submit's error and exit code.
        """
        what, options = _request(kind, params)
        result = client.render(kind.name, what, note=echo_err, **options)
        element = 0
        for label, outcome in zip(result.labels, result.outcomes, strict=True):
            if outcome is None:
                if result.many:
                    echo_err(f"bfjobs: array element {element}: {label}")
                element += 1
            else:
                message = api.outcome_message(outcome, label)
                echo_err(f"bfjobs: skipped {label}: {message}" if result.many else message)
        if result.script is not None:
            click.echo(result.script, nl=False)

    return render_kind


@click.group(cls=KindGroup, make=submit_command)
def submit() -> None:
    """Submit a job (pull an image, download a model)."""


@click.group(name="render", cls=KindGroup, make=render_command)
def render_group() -> None:
    """Print the exact sbatch script a submit would send."""
