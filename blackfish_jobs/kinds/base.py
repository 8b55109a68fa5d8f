"""What a kind of work is: its command line (as data), how it becomes a job, and what follows it.

A kind (``pull-image``, ``download-model``) is one :class:`Kind` subclass in one module of this
package plus one template (``<name>.sh.j2``); everything else (the CLI's ``submit``/``render``
commands, the facade, submission, tracking) asks the kind through :func:`blackfish_jobs.kinds.get`
instead of comparing its name.

Importing a kind is cheap (stdlib and the base layer only): ``bfjobs list --help`` names the kinds.
The work itself (validation, configuration, the node task, the database) is imported when a hook
runs.
"""

from __future__ import annotations

import abc
import importlib
import os
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from ..config import JobSettings, Profile
    from ..specs import AlreadyPresent, JobSpec
    from ..store import Database, JobRow
    from ..verify import Finding


class Option(NamedTuple):
    """One command-line option of a kind, as data (kinds do not import Click; the CLI makes the
    Click option). ``dest`` is the keyword the facade's ``submit``/``render`` take it as.
    (Named tuples, not dataclasses: ``bfjobs list`` imports the kinds, and these cost less to define.)"""

    flags: tuple[str, ...]
    dest: str
    help: str
    is_flag: bool = False
    multiple: bool = False
    choice: tuple[str, ...] | None = None
    default: Any = None
    show_default: bool = False
    metavar: str | None = None


class Argument(NamedTuple):
    """A kind's main argument: ``name`` the CLI parameter, ``metavar`` how usage and errors show it
    (``URI``), ``entry`` what one ``--from-file`` line holds, in errors (``bad URI(s)``)."""

    name: str
    metavar: str
    entry: str


def _ignore(_message: str) -> None:
    pass


class Kind(abc.ABC):
    """One kind of work. Subclasses set the class attributes and implement :meth:`build` and
    :meth:`present`; the other hooks have the defaults most kinds want."""

    #: The kind's name: the ``submit``/``render`` subcommand, the ``kind`` column and JSON field.
    name: ClassVar[str]
    #: What a job of this kind leaves behind, in words (``image``, ``snapshot``): ``--wait``'s help
    #: and ``verify``'s findings say it.
    artefact: ClassVar[str]
    #: ``bfjobs submit <name> --help``'s text.
    help: ClassVar[str]
    argument: ClassVar[Argument]
    #: The kind's own options, in the order ``--help`` lists them (after ``--profile``, before the
    #: Slurm options).
    options: ClassVar[tuple[Option, ...]] = ()
    #: Built-in job settings (Slurm time, memory, CPUs); bfjobs.toml and flags override them.
    slurm_defaults: ClassVar[Mapping[str, Any]] = {}
    #: ``module:function`` run on the compute node with the spec's node request (imported only to
    #: submit: its module path is part of every pickle).
    task_path: ClassVar[str]
    #: Does a completed job register its artefact in Blackfish's ``model`` table?
    registers: ClassVar[bool] = False

    def __repr__(self) -> str:
        return f"<kind {self.name}>"

    @property
    def template(self) -> str:
        """The sbatch template a job of this kind renders (site templates may replace it)."""
        return f"{self.name}.sh.j2"

    def task(self) -> Callable[[Any], Any]:
        """The node-side function submitit runs with the spec's request."""
        module, _, function = self.task_path.partition(":")
        fn: Callable[[Any], Any] = getattr(importlib.import_module(module), function)
        return fn

    # ------------------------------------------------------------------ requests

    def check_params(self, params: Mapping[str, Any], *, from_file: bool) -> None:
        """Refuse option combinations before anything is read (e.g. one file name for a list)."""
        return None

    @abc.abstractmethod
    def build(
        self, entry: str, profile: Profile, settings: JobSettings, params: Mapping[str, Any], *, from_file: bool
    ) -> JobSpec:
        """A validated spec for ``entry`` (the main argument, or one ``--from-file`` line) with the
        kind's ``params`` (its options' ``dest`` keywords; absent ones mean the default)."""

    def spec(self, profile: Profile, settings: JobSettings, task: Any, label: str, *, where: str = "home") -> JobSpec:
        """A :class:`~blackfish_jobs.specs.JobSpec` of this kind, for :meth:`build` (``where``: ``shared``
        for the profile's cache_dir, ``home`` for its home_dir)."""
        from ..specs import JobSpec

        return JobSpec(self.name, profile, settings, task, label, self.template, where=where)

    def prepare(self, specs: Sequence[JobSpec], note: Callable[[str], None] = _ignore) -> list[JobSpec]:
        """The specs as they are to be submitted (or rendered), once triaged: e.g. pinned to what
        a remote service names now. ``note`` hears lines meant for stderr."""
        return list(specs)

    # ------------------------------------------------------------------ before submitting

    def ask_ahead(self, specs: Sequence[JobSpec]) -> None:
        """Ask at once whatever :meth:`present` will need to ask a remote service about these
        specs (one call each would wait in turn); nothing by default."""
        del specs

    @abc.abstractmethod
    def present(self, spec: JobSpec) -> AlreadyPresent | None:
        """Is the artefact already where Blackfish will find it (``force`` aside: the caller
        checks it)? Cheap: a few ``stat`` calls."""

    def destination_hint(self, spec: JobSpec) -> str:
        """What to do when the destination is not writable (appended to the error)."""
        return ""

    def same_request(self, row: JobRow, spec: JobSpec) -> bool:
        """Does the unfinished job ``row`` (same kind and target) fetch what ``spec`` asks for?
        May raise (e.g. another source for the same file name)."""
        return True

    # ------------------------------------------------------------------ after the job

    def revision(self, row: JobRow) -> str | None:
        """The version of the artefact the job fetches, for tables (a model's commit); None if the
        kind pins none."""
        return None

    def artefact_in_place(self, row: JobRow) -> bool:
        """After COMPLETED: is the published artefact really there?"""
        return os.path.exists(row.target)

    def on_completed(self, db: Database, row: JobRow) -> None:
        """Work that follows a successful job, once, when its result is first collected."""
        return None

    def verify(self, row: JobRow) -> Finding | None:
        """``bfjobs verify`` of a completed job's artefact (None: nothing to check)."""
        return None
