"""The kinds of work bfjobs runs, one module each: the ONLY list of them.

- :mod:`.base`: what a kind is (:class:`Kind`) and its options as data (:class:`Option`,
  :class:`Argument`).
- :mod:`.image`: ``pull-image``; :mod:`.model`: ``download-model``.

A third kind is one new module (a :class:`Kind` subclass) registered here with :func:`register`,
plus its template ``<name>.sh.j2``. Layers below (config, store, backends) take kind names and
values as arguments and never import this package.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BadInput
from . import image, model
from .base import Argument, Kind, Option

if TYPE_CHECKING:
    from ..config import JobSettings, Resolved

#: Every kind by name, in the order help texts and errors list them.
KINDS: dict[str, Kind] = {k.name: k for k in (image.KIND, model.KIND)}


def register(kind: Kind) -> Kind:
    """Add a kind (a module's ``KIND``); its name must be new."""
    if kind.name in KINDS:
        raise ValueError(f"kind {kind.name!r} is already registered")
    KINDS[kind.name] = kind
    return kind


def get(name: str) -> Kind:
    """The kind called ``name``; an unknown name is bad input (one line naming the kinds)."""
    try:
        return KINDS[name]
    except (KeyError, TypeError):
        raise BadInput(f"unknown kind {name!r}: one of {', '.join(KINDS)}") from None


def names() -> list[str]:
    """The kinds' names, in registry order."""
    return list(KINDS)


def defaults() -> dict[str, Mapping[str, Any]]:
    """Each kind's built-in job settings, by name: what :func:`config.load_settings` is given."""
    return {name: kind.slurm_defaults for name, kind in KINDS.items()}


def by_artefact(noun: str) -> Kind | None:
    """The kind whose artefact is called ``noun`` (``image``, ``snapshot``): verify's words."""
    return next((k for k in KINDS.values() if k.artefact == noun), None)


def registering() -> list[str]:
    """The kinds whose completed jobs register in Blackfish's ``model`` table."""
    return [name for name, kind in KINDS.items() if kind.registers]


def load_settings(profile: str, kind: str, home: Path | None = None) -> JobSettings:
    """``kind``'s job settings for ``profile``: its built-in defaults < the site file < bfjobs.toml
    (whose ``[… .<kind>]`` tables are checked against every registered kind)."""
    return resolve_settings(profile, kind, home).settings


def resolve_settings(
    profile: str,
    kind: str,
    home: Path | None = None,
    *,
    flags: Mapping[str, Any] | None = None,
    user_layers: Sequence[tuple[str, dict[str, Any]]] | None = None,
    remote: bool = False,
) -> Resolved:
    """:func:`config.resolve_settings` for ``kind``: the settings, where each came from, and
    ``flags`` (validated command-line values) on top."""
    from .. import config

    return config.resolve_settings(
        profile, get(kind).name, home, kinds=defaults(), flags=flags, user_layers=user_layers, remote=remote
    )


__all__ = [
    "KINDS",
    "Argument",
    "Kind",
    "Option",
    "by_artefact",
    "defaults",
    "get",
    "load_settings",
    "names",
    "register",
    "registering",
    "resolve_settings",
]
