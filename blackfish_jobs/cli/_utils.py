"""Options and parameter types shared by the command modules."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from .. import api


def profile_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--profile",
        "profile_name",
        metavar="NAME",
        help="Blackfish profile from profiles.cfg (default: Blackfish's default profile).",
    )(fn)


def json_option(help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option("--json", "as_json", is_flag=True, help=help_text)


def older_than_option(help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--older-than AGE``, read into seconds (:func:`blackfish_jobs.api.parse_age`)."""

    def seconds(_ctx: click.Context, _param: click.Parameter, value: str | None) -> float | None:
        return None if value is None else api.parse_age(value)

    return click.option("--older-than", "older_than", metavar="AGE", callback=seconds, help=help_text)


def slurm_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The Slurm flags shared by submit/render (:data:`api.SLURM_OPTION_HELP`); they override bfjobs.toml."""
    for name, help_text in reversed(api.SLURM_OPTION_HELP.items()):
        fn = click.option("--" + name.replace("_", "-"), name, help=help_text)(fn)
    return fn


class KindChoice(click.Choice):
    """``--kind``: one of the kinds' names, asked of the facade when first needed, so the commands
    that share a module with the option (``status``, ``--help``) never load the kinds."""

    def __init__(self) -> None:
        self.case_sensitive = True

    @property  # type: ignore[override]
    def choices(self) -> tuple[str, ...]:
        return tuple(k.name for k in api.kinds())


def no_nan(name: str, value: float | None) -> float | None:
    """FloatRange lets NaN through (every comparison with it is False): refuse it."""
    if value is not None and value != value:
        raise click.BadParameter("not a number", param_hint=name)
    return value


class SinceType(click.ParamType):
    """``--since``: an ISO date/time (local unless it says Z or an offset) or an age like 12h, 7d."""

    name = "DATE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return api.parse_since(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
