"""``bfjobs submit KIND`` and ``bfjobs render KIND``: one option set per kind, both commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from ..api import Client, SubmitResult, outcome_message
from ._output import ProgressLines, describe, echo_err, print_json
from ._utils import json_option, profile_option, slurm_options


@click.group()
def submit() -> None:
    """Submit a job (pull an image, download a model)."""


@click.group(name="render")
def render_group() -> None:
    """Print the exact sbatch script a submit would send."""


def pull_image_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = slurm_options(fn)
    fn = click.option("--force", is_flag=True, help="Pull again even if the image is present.")(fn)
    fn = click.option("--name", "sif_name", metavar="FILE.sif", help="File name instead of <name>_<tag>.sif.")(fn)
    fn = click.option(
        "--to",
        type=click.Choice(["shared", "home"]),
        default="shared",
        show_default=True,
        help="shared: <cache_dir>/images (where Blackfish looks); home: <home_dir>/images.",
    )(fn)
    fn = profile_option(fn)
    return click.argument("uri", required=False)(fn)


def download_model_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = slurm_options(fn)
    fn = click.option(
        "--force", is_flag=True, help="Fetch again the files selected, into the chosen destination (others stay)."
    )(fn)
    fn = click.option("--exclude", multiple=True, metavar="GLOB", help="Skip files matching GLOB (repeatable).")(fn)
    fn = click.option("--include", multiple=True, metavar="GLOB", help="Only files matching GLOB (repeatable).")(fn)
    fn = click.option(
        "--shared", is_flag=True, help="Look only in, and write to, <cache_dir>/models (admins), not <home_dir>/models."
    )(fn)
    fn = click.option("--revision", metavar="REV", help="Branch, tag or 40-hex commit (default: the main branch).")(fn)
    fn = profile_option(fn)
    return click.argument("repo_id", required=False)(fn)


def list_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option(
        "--max-parallel", "max_parallel", metavar="N",
        help="With --from-file: at most N elements of the job array run at once (Slurm's %N).",
    )(fn)
    return click.option(
        "--from-file", "from_file", metavar="FILE",
        help="One entry per line ('#' comments; '-' reads stdin): one Slurm job array for all.",
    )(fn)


def _request(kind: str, params: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """The command's parameters as the facade's arguments: (URI or REPO_ID, keyword arguments)."""
    what = params.pop("uri" if kind == "pull-image" else "repo_id")
    params["profile"] = params.pop("profile_name")
    if "sif_name" in params:
        params["name"] = params.pop("sif_name")
    return what, params


def _report_submitted(result: SubmitResult, as_json: bool) -> None:
    """One line per request: submitted, present or in flight (nothing with --json)."""
    if result.notice:
        echo_err(result.notice)
    if as_json:
        return
    for label, outcome in zip(result.labels, result.jobs, strict=True):
        click.echo(outcome_message(outcome, label))


def _define_kind(kind: str, options: Callable[..., Any], submit_help: str, artefact: str) -> None:
    """Create ``bfjobs submit KIND`` and ``bfjobs render KIND`` from one option set."""

    @submit.command(kind, help=submit_help)
    @options
    @list_options
    @click.option("--wait", "wait_", is_flag=True, help=f"Wait for the job; exit 0 only if the {artefact} is in place.")
    @json_option("Print one JSON object (see docs/json.md).")
    @click.pass_obj
    def submit_kind(client: Client, wait_: bool, as_json: bool, **params: Any) -> None:
        what, options = _request(kind, params)
        lines = ProgressLines(client.progress)
        shown = []

        def submitted(result: SubmitResult) -> None:
            shown.append(result)
            _report_submitted(result, as_json)

        result = client.submit(kind, what, wait=wait_, note=echo_err, on_submitted=submitted, on_tick=lines, **options)
        lines.finish()
        if not shown:
            _report_submitted(result, as_json)
        if as_json:
            print_json(result)
        elif result.waited:
            for row in result.rows:
                click.echo(describe(row))
        result.raise_for_status()

    @render_group.command(kind, help=f"Print the sbatch script `bfjobs submit {kind}` would submit.")
    @options
    @list_options
    @click.pass_obj
    def render_kind(client: Client, **params: Any) -> None:
        """``render``: submit's checks, then the script for what submit would send (nothing if none).

        What submit would not send (present, in flight) gets submit's message on stderr, so stdout
        holds only the script; a refused destination is submit's error and exit code.
        """
        what, options = _request(kind, params)
        result = client.render(kind, what, note=echo_err, **options)
        element = 0
        for label, outcome in zip(result.labels, result.outcomes, strict=True):
            if outcome is None:
                if result.many:
                    echo_err(f"bfjobs: array element {element}: {label}")
                element += 1
            else:
                message = outcome_message(outcome, label)
                echo_err(f"bfjobs: skipped {label}: {message}" if result.many else message)
        if result.script is not None:
            click.echo(result.script, nl=False)


_define_kind(
    "pull-image",
    pull_image_options,
    "Pull URI (docker://, oras://, library://, shub://, https://) into Blackfish's image cache.",
    "image",
)
_define_kind(
    "download-model",
    download_model_options,
    "Download a Hugging Face model snapshot (REPO_ID = namespace/name) into Blackfish's model cache.\n\n"
    "The shared cache is checked first, then yours (with --shared only the shared cache): a snapshot holding\n"
    "every file the request selects is used as it is. Filters are additive: other files fill the same snapshot.",
    "snapshot",
)
