"""Where jobs run: one :class:`~.base.Backend` interface, the Slurm and local implementations.

:func:`backend_class` is the only place a backend's name (a profile's ``schema``, a job's
``backend`` column) is mapped to a class; a new backend is a new module, a line there and its
line in :mod:`blackfish_jobs.jobids` (how its job ids read).
:class:`Backends` holds one instance per name for one command, so what an instance learns (the
Slurm backend: a prestarted ``sacct``, a site without accounting) lasts exactly that long.

Importing this package is cheap (``bfjobs status`` imports :mod:`.slurmcmd` before its ``sacct``
starts): the implementations are imported when first asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..config import Profile
    from ..store import JobRow
    from .base import Backend
    from .slurmcmd import Prestarted, Runner

#: The backends bfjobs knows, by name.
NAMES = ("slurm", "local", "remote")

_CLASSES: dict[str, type[Backend]] = {}  # imported when first asked for


def backend_class(name: str) -> type[Backend]:
    """The class of the backend called ``name``."""
    found = _CLASSES.get(name)
    if found is not None:
        return found
    if name == "slurm":
        from .slurm import SlurmBackend as found_class
    elif name == "local":
        from .local import LocalBackend as found_class  # type: ignore[assignment]
    elif name == "remote":
        from .remote import RemoteBackend as found_class  # type: ignore[assignment]
    else:
        raise ValueError(f"unknown backend {name!r} (known: {', '.join(NAMES)})")
    _CLASSES[name] = found_class
    return found_class


class Backends:
    """The backends of one command, created when first used: ``runner`` runs Slurm's clients
    (tests pass a fake), ``prestarted`` is the ``sacct`` call the entry point started early."""

    def __init__(
        self, runner: Runner | None = None, prestarted: Prestarted | None = None, early: dict[str, Any] | None = None
    ) -> None:
        self.runner, self.prestarted = runner, prestarted
        self.early = early  # remote profiles' agents the entry point started (backends.remote.Agent)
        self._made: dict[str, Backend] = {}

    def named(self, name: str) -> Backend:
        """The backend called ``name`` (the same instance every time)."""
        found = self._made.get(name)
        if found is None:
            cls = backend_class(name)
            if name == "slurm":
                found = cls(self.runner, self.prestarted)  # type: ignore[call-arg]
                self.prestarted = None
            elif name == "remote":
                found = cls(self.early)  # type: ignore[call-arg]
                self.early = None
            else:
                found = cls()
            self._made[name] = found
        return found

    def of(self, row: JobRow) -> Backend:
        """The backend that runs this job."""
        return self.named(row.backend)

    def for_profile(self, profile: Profile) -> Backend:
        """The backend a profile submits to (a ``slurm`` profile naming another host: the remote one)."""
        return self.named("remote" if profile.remote else profile.schema)

    def close(self) -> None:
        """End what the backends still hold (a prestarted call nobody collected)."""
        if self.prestarted is not None:
            self.prestarted.discard()
            self.prestarted = None
        for agent in (self.early or {}).values():  # started, never asked
            agent.close()
        self.early = None
        for backend in self._made.values():
            close = getattr(backend, "close", None)
            if close is not None:
                close()


def for_profile(profile: Profile, runner: Runner | None = None) -> Backend:
    """A backend for ``profile`` (its own instance; use :class:`Backends` to share one per command)."""
    return Backends(runner).for_profile(profile)
