"""``bfjobs verify`` and ``bfjobs sync``: the artefacts in the caches and Blackfish's model table."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from ._output import echo_err, print_json
from ._utils import json_option, profile_option

if TYPE_CHECKING:
    from ..api import Client


@click.command()
@click.argument("refs", nargs=-1, metavar="[JOB_ID|PATH]...")
@profile_option
@json_option("Print one JSON object of findings (see docs/json.md).")
@click.option(
    "--accept-unverified", is_flag=True, help="Exit 0 for artefacts with nothing to check against (UNVERIFIED)."
)
@click.pass_obj
def verify(
    client: Client, refs: tuple[str, ...], profile_name: str | None, as_json: bool, accept_unverified: bool
) -> None:
    """Check artefacts for corruption: images against the sha256 recorded when they were pulled
    (in the cache's .bfjobs folder, or the job's result), snapshots against the hub's tree listing.
    A PATH may be an image, a snapshot, or a folder of them (everything under it is checked).
    Without arguments: every artefact of a completed job. Exit 0 only if every artefact is OK
    (or UNVERIFIED, with --accept-unverified). Reads every byte: run it on a data-transfer node."""
    result = client.verify(list(refs), profile=profile_name, accept_unverified=accept_unverified)
    if as_json:
        print_json(result)
    else:
        for f in result.findings:
            note = f" ({f.problem})" if f.problem else ""
            click.echo(f"{f.status:<10} {f.kind:<8} {f.path}{note}")
    result.raise_for_status()


@click.command()
@json_option("Print one JSON object: registered and waiting counts (see docs/json.md).")
@click.pass_obj
def sync(client: Client, as_json: bool) -> None:
    """Register finished downloads in Blackfish's model table (after Blackfish created it)."""
    result = client.sync()
    if as_json:
        print_json(result)
    else:
        click.echo(f"registered {result.registered} model(s) in Blackfish's model table; {result.waiting} waiting")
    if result.notice:
        echo_err(result.notice)
