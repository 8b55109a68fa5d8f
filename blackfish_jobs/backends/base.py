"""The interface every backend implements (submitit-style: the abstract core here, what differs in
``slurm.py`` and ``local.py``), and the small value types backends and tracking exchange.

A backend is one instance per command and profile kind: it carries what it needs between calls
(the Slurm backend its runner, a prestarted ``sacct`` and what it learned about accounting), so
nothing is cached process-wide. Tracking (:mod:`blackfish_jobs.tracking`) only ever calls these
methods; a new backend (the remote, SSH one) is a new subclass and a line in
:func:`blackfish_jobs.backends.backend_class`.

The last group of methods is what must run on the profile's machine: for the Slurm and local
backends that is this machine and they call the local functions; a remote backend runs them there.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from ..states import State

if TYPE_CHECKING:
    from ..specs import JobSpec
    from ..store import JobRow
    from ..verify import Finding

#: A kind's node function (``pull_image(request)``): passed in by the caller, who knows the kind.
Task = Callable[[Any], Any]


class Observation(NamedTuple):
    """What a survey learned about one job (``known=False``: nothing; leave the row alone).

    ``gone``: the scheduler (asked successfully) no longer knows the job and it wrote no result —
    ``cancel`` takes that as its request having removed a pending job. ``touch``: nothing changed,
    but the row's ``updated_at`` should say it was confirmed now (see the Slurm backend's reasons).
    ``native_id``, ``folder``: the scheduler's id and the job's folder, learnt now (a remote
    submission whose answer was lost). ``as_stored``: the row stands as stored, nothing to write
    (most of a long queue: a refresh then skips it without comparing); local to one process, never
    sent to another (see :func:`.protocol.encode_observation`).
    """

    state: State
    node: str | None = None
    reason: str | None = None
    result: dict[str, Any] | None = None
    known: bool = True
    gone: bool = False
    touch: bool = False
    native_id: str | None = None
    folder: str | None = None
    as_stored: bool = False


@dataclass
class Survey:
    """One survey of many jobs: observations by bfjobs id, the problems that kept some jobs
    unobserved (one line each), and the ids whose pending reason the scheduler itself gave now
    (only those count as a sighting of a job that cannot start)."""

    observed: dict[str, Observation] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    reason_seen: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Submitted:
    """What a backend tells us about a job it accepted, and how its row starts."""

    backend: str  # the backend's name, stored with the job
    native_id: str  # Slurm job id, or the local controller's pid
    state: State = State.PENDING
    node: str | None = None


class Check(NamedTuple):
    """One line of ``bfjobs doctor``: what was checked, ``ok``/``warn``/``fail``, what was found,
    and (unless ok) what to do about it."""

    name: str
    status: str
    detail: str
    fix: str | None = None


@dataclass
class CancelRequest:
    """What a backend did when asked to cancel: ``refused`` by job id (its message), and
    ``settled``: jobs already over by its own hand (no scheduler to confirm with), by job id."""

    refused: dict[str, str] = field(default_factory=dict)
    settled: dict[str, Observation] = field(default_factory=dict)


class Backend(abc.ABC):
    """Submit, survey, cancel and read jobs of one kind of scheduler."""

    #: The name stored in a job's ``backend`` column and a profile's ``schema``.
    name: ClassVar[str]
    #: What ``wait`` starts and ends its poll interval at (seconds) when all its jobs are this
    #: backend's; None: the caller's (a scheduler is not to be asked in a tight loop).
    poll_delays: ClassVar[tuple[float, float] | None] = None
    #: Does a job of this backend run an sbatch script (rendered from the templates)?
    uses_script: ClassVar[bool] = False
    #: Can many specs go in one submission (a job array)?
    submits_arrays: ClassVar[bool] = False
    #: Do its jobs' folders and artefacts live on this machine? (False: a remote cluster's, reached
    #: through the backend's own methods, never by a path read here.)
    here: ClassVar[bool] = True

    # ------------------------------------------------------------------ submit

    @classmethod
    def builtin_reason(cls) -> str:
        """Why the built-in profile of this backend was chosen, for the notice a user without
        ``profiles.cfg`` sees (a few words, no trailing period)."""
        return f"jobs run through the {cls.name} backend"

    def require_clients(self, spec: JobSpec) -> None:
        """Raise ConfigError if this host lacks what submitting ``spec`` needs (nothing by default)."""
        return None

    @abc.abstractmethod
    def submit(self, spec: JobSpec, job_folder: Path, script: str | None, task: Task) -> Submitted:
        """Submit ``task(spec.task)`` (``task``: the kind's node function; ``script``: the rendered
        sbatch text, if :attr:`uses_script`)."""

    def submit_array(self, specs: Sequence[JobSpec], job_folder: Path, script: str, task: Task) -> list[Submitted]:
        """Submit ``specs`` (same kind and profile) in ONE submission; only if :attr:`submits_arrays`."""
        raise NotImplementedError(f"the {self.name} backend submits no job arrays")

    # ------------------------------------------------------------------ track

    @abc.abstractmethod
    def survey(self, rows: Sequence[JobRow], *, verify: bool = False, reasons: bool = False) -> Survey:
        """Observe these (unfinished) jobs with as few scheduler calls as possible.

        ``verify``: double-check jobs the scheduler's record calls live (a stale record must not
        keep a wait going). ``reasons``: the caller acts on pending reasons (``wait``), so ask
        for current ones now rather than trusting recent ones.
        """

    @abc.abstractmethod
    def cancel(self, rows: Sequence[JobRow], *, grace_s: float = 20.0) -> CancelRequest:
        """Ask the scheduler to cancel these live jobs, in one request where it can."""

    def end_unstartable(self, rows: Sequence[JobRow]) -> tuple[dict[str, str], list[str]]:
        """Cancel pending jobs marked as never able to start: the reasons to store by job id of
        those really ended, and one line per job the scheduler refused to cancel."""
        return {}, []

    # ------------------------------------------------------------------ job folder (submitit's layout)

    def result_path(self, row: JobRow) -> Path | None:
        from . import folder

        return folder.result_path(row)

    def read_result(self, row: JobRow) -> tuple[str, Any] | None:
        from . import folder

        return folder.read_result(row)

    def log_path(self, row: JobRow, stream: str = "out") -> Path | None:
        from . import folder

        return folder.log_path(row, stream)

    def read_log(self, row: JobRow, stream: str, offset: int) -> bytes | None:
        """The job's ``out``/``err`` log from byte ``offset`` on (at most a few MiB; None: no log yet)."""
        path = self.log_path(row, stream)
        if path is None:
            return None
        try:
            with path.open("rb") as fh:
                fh.seek(offset)
                return fh.read(4 * 1024 * 1024)
        except FileNotFoundError:
            return None

    def log_tail(self, row: JobRow, lines: int = 1) -> str | None:
        from . import folder

        return folder.log_tail(row, lines)

    def read_progress(self, rows: Sequence[JobRow]) -> dict[str, dict[str, Any]]:
        from . import folder

        return folder.read_progress(rows)

    # ------------------------------------------------------------------ on the profile's machine

    def checks(self, profile_name: str, wanted: dict[str, set[str]]) -> list[Check]:
        """``bfjobs doctor``'s checks of the scheduler: its commands, and whether the settings'
        values exist there (``wanted``: setting -> values, e.g. ``{"partition": {"dtn"}}``),
        each asked once. None for a backend without a scheduler."""
        return []

    def present(self, path: Path) -> bool:
        """Is there something at ``path`` (an artefact, a record) on the profile's machine?"""
        return path.exists()

    def read_record(self, path: Path, kind: str) -> dict[str, Any] | None:
        """A cache record (``.bfjobs.json``) next to an artefact."""
        from ..node import records

        return records.read(path, kind)

    def list_cache(self, path: Path, images_dirs: list[Path], models_dirs: list[Path]) -> list[Path]:
        """The artefacts under a cache folder."""
        from .. import verify

        return verify.artefacts(path, images_dirs, models_dirs)

    def verify(self, path: Path) -> Finding:
        """Check one artefact against its record."""
        from .. import verify

        return verify.verify_path(path)

    def render(
        self,
        render: Callable[..., str],
        spec: JobSpec,
        job_folder: Path,
        job_id: str,
        elements: Sequence[JobSpec] | None = None,
    ) -> str:
        """The sbatch script for ``spec``, made by ``render`` (the caller's renderer) where the site
        templates are: here for Slurm and local; a remote backend runs it on the cluster."""
        return render(spec, job_folder, job_id, elements)
