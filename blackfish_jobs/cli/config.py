"""``bfjobs config show`` (the settings a job would get, and which file, variable or default set each) and
``bfjobs doctor`` (whether a profile can run jobs from here)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from ._output import print_json
from ._utils import json_option, profile_option

if TYPE_CHECKING:
    from ..api import Client, ConfigResult


@click.group()
def config() -> None:
    """Inspect bfjobs' settings (the site file, your bfjobs.toml, environment variables)."""


@config.command()
@profile_option
@json_option("Print one JSON object: each kind's settings with their value and source (see docs/json.md).")
@click.pass_obj
def show(client: Client, profile_name: str | None, as_json: bool) -> None:
    """Show the merged job settings of a profile for each kind, and where each came from: the site
    file (/etc/bfjobs/bfjobs.toml or $BFJOBS_SITE_CONFIG), your bfjobs.toml, HF_ENDPOINT or
    BFJOBS_TEMPLATES_DIR, or the built-in default. Flags given to submit/render go on top."""
    result = client.config(profile=profile_name)
    if as_json:
        print_json(result)
        return
    for line in _lines(result):
        click.echo(line)


def _lines(result: ConfigResult) -> list[str]:
    def state(exists: bool) -> str:
        return "" if exists else " (absent)"

    lines = [
        f"profile:   {result.profile} ({result.profile_source})",
        f"site file: {result.site_file}{state(result.site_file_exists)}",
        f"user file: {result.user_file}{state(result.user_file_exists)}",
    ]
    if result.fixed:
        lines.append(f"fixed by the site: {', '.join(result.fixed)}")
    if result.ignored_site_profiles:
        lines.append(f"site profiles you do not have (ignored): {', '.join(result.ignored_site_profiles)}")
    for kind, values in result.settings.items():
        lines.append("")
        lines.append(f"[{kind}]")
        shown = {key: _value(value) for key, (value, _source) in values.items()}
        key_width = max(map(len, shown))
        value_width = max(map(len, shown.values()))
        for key, (_, source) in values.items():
            mark = " (fixed)" if key in result.fixed else ""
            lines.append(f"  {key:<{key_width}}  {shown[key]:<{value_width}}  {source}{mark}")
    return lines


def _value(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(str(v) for v in value) + "]" if value else "[]"
    return str(value)


@click.command()
@profile_option
@json_option("Print one JSON object: each check's name, status, detail and fix (see docs/json.md).")
@click.pass_obj
def doctor(client: Client, profile_name: str | None, as_json: bool) -> None:
    """Check, in one screen, whether your profile can run bfjobs jobs from here: the profile and
    settings, Slurm's commands, the partition and QOS (asked once), the caches' permissions, the hub
    endpoint and the interpreter the jobs run; each problem with its fix. Exit 1 if a check failed."""
    result = client.doctor(profile=profile_name)
    if as_json:
        print_json(result)
    else:
        width = max(len(c.name) for c in result.checks)
        for check in result.checks:
            click.echo(f"{check.status.upper():<5} {check.name:<{width}}  {check.detail}")
            if check.fix:
                click.echo(f"{'':<5} {'':<{width}}  fix: {check.fix}")
    result.raise_for_status()
