"""Submitting: triage (present, in flight), hub pinning, job folders, arrays; used by :class:`api.Client`.

Data flows one way: a validated :mod:`specs` request is rendered (:mod:`render`), submitted
(:mod:`backends`), recorded (:mod:`store`) and later refreshed (:mod:`tracking`).
"""

from __future__ import annotations

import getpass
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .. import kinds, layout, render
from ..backends.protocol import IDS_FILE
from ..specs import AlreadyPresent, JobSpec
from ..states import FINISHED
from ..store import Database, JobRow, utcnow

if TYPE_CHECKING:
    from ..backends import Backends
    from ..backends.base import Submitted


def new_id() -> str:
    """A bfjobs job id: 12 hex digits, unique enough and short enough to type."""
    return uuid.uuid4().hex[:12]


def preview(spec: JobSpec, elements: Sequence[JobSpec] | None = None) -> str:
    """Exactly the script ``submit`` would send, with a placeholder id and job folder.

    For a local profile this is the script a Slurm profile would submit (local jobs run the
    same task without sbatch).
    """
    folder = spec.profile.jobs_dir / render.PREVIEW_ID
    return render.render(spec, folder, render.PREVIEW_ID, elements)


def check_destination(spec: JobSpec) -> None:
    """Refuse before submitting when the caller could not publish the artefact."""
    hint = kinds.get(spec.kind).destination_hint(spec)
    layout.require_writable(spec.target.parent, "the destination", hint)
    group = getattr(spec.task, "group", None)  # a task that publishes for shared_group carries it
    if group is not None:  # the job gives what it publishes to the group: its submitter must be in it
        layout.require_member(group)
    layout.require_writable(spec.profile.jobs_dir, "the job folder")


def present(spec: JobSpec) -> AlreadyPresent | None:
    """Is the artefact already where Blackfish will find it (unless ``--force``)? Its kind says."""
    if spec.task.force:
        return None
    return kinds.get(spec.kind).present(spec)


@dataclass(frozen=True)
class InFlight:
    """Nothing submitted: a job for the same artefact is already pending or running."""

    row: JobRow

    def describe(self) -> str:
        from ..jobids import describe

        native = describe(self.row).removeprefix("local ")
        return f"already in flight: job {self.row.id} ({native}, {self.row.state}) for {self.row.target}"


def in_flight_many(db: Database, specs: Sequence[JobSpec], backends: Backends | None = None) -> dict[int, JobRow]:
    """For each spec (by index), an unfinished job for the same image or repo@revision.

    One indexed DB query for all; the candidates (usually none) are refreshed with one Slurm
    call so a job that has just ended does not block a new request.
    """
    if not specs:
        return {}
    from .. import tracking

    rows = db.unfinished(targets=sorted({str(s.target) for s in specs}))
    if not rows:
        return {}
    live = [r for r in tracking.refresh(db, rows, backends) if r.state not in FINISHED]
    found: dict[int, JobRow] = {}
    for index, spec in enumerate(specs):
        if spec.task.force:
            continue  # --force fetches again: it waits for the running job's publish lock, then replaces
        kind = kinds.get(spec.kind)
        for row in live:
            if row.kind == spec.kind and row.target == str(spec.target) and kind.same_request(row, spec):
                found[index] = row
                break
    return found


Outcome = JobRow | AlreadyPresent | InFlight


def _triage(db: Database, specs: Sequence[JobSpec], backends: Backends) -> tuple[list[Outcome | None], list[int]]:
    """Present or in flight (reported, not submitted), and the indexes left to submit."""
    if len(specs) > 1:
        kinds.get(specs[0].kind).ask_ahead([s for s in specs if not s.task.force])
    outcomes: list[Outcome | None] = [present(spec) for spec in specs]
    todo = [i for i, o in enumerate(outcomes) if o is None]
    if todo:  # before the database or a job folder is touched
        backends.for_profile(specs[todo[0]].profile).require_clients(specs[todo[0]])
    running = in_flight_many(db, [specs[i] for i in todo], backends)
    for position, index in enumerate(todo):
        if position in running:
            outcomes[index] = InFlight(running[position])
        else:
            outcomes[index] = present(specs[index])  # an in-flight job may have just published it
    todo = [i for i, o in enumerate(outcomes) if o is None]
    for spec in {specs[i].target.parent: specs[i] for i in todo}.values():  # once per directory
        check_destination(spec)
    return outcomes, todo


def preview_plan(
    db: Database,
    specs: Sequence[JobSpec],
    many: bool,
    note: Callable[[str], None] | None = None,
    backends: Backends | None = None,
) -> tuple[list[Outcome | None], str | None]:
    """What ``submit`` (``many``: ``submit_many``) would do, without submitting: the same triage,
    so each entry it would not send has its outcome (present, in flight; a destination it would
    refuse raises the same error), the same hub check (a miss raises as submit does; the script
    shows the pinned commit), and the script it would send for the rest (None: nothing)."""
    outcomes, todo = _triage(db, specs, _backends(backends))
    if not todo:
        return outcomes, None
    chosen = prepare([specs[i] for i in todo], note or _ignore)
    return outcomes, preview(chosen[0], chosen if many else None)


def _ignore(_message: str) -> None:
    pass


def _backends(given: Backends | None) -> Backends:
    """The caller's backends (the facade's, one per command), else a fresh set."""
    if given is not None:
        return given
    from ..backends import Backends

    return Backends()


def prepare(specs: Sequence[JobSpec], note: Callable[[str], None] = _ignore) -> list[JobSpec]:
    """The triaged specs (of one kind) as they are to be sent: their kind's :meth:`~kinds.Kind.prepare`
    (downloads are pinned to the hub's commit; a miss raises)."""
    return kinds.get(specs[0].kind).prepare(specs, note) if specs else []


def _record(spec: JobSpec, job_id: str, folder: Path, submitted: Submitted) -> JobRow:
    now = utcnow()
    return JobRow(
        id=job_id,
        kind=spec.kind,
        profile=spec.profile.name,
        backend=submitted.backend,
        native_id=submitted.native_id,
        state=submitted.state,
        reason=None,
        folder=str(folder),
        target=str(spec.target),
        request=spec.request_record(),
        result=None,
        node=submitted.node,
        user=_user(),
        submitted_at=now,
        ended_at=None,
        updated_at=now,
        location=spec.where,
    )


def _new_folder(
    spec: JobSpec, backends: Backends, elements: Sequence[JobSpec] | None = None, job_id: str | None = None
) -> tuple[str, Path, str | None]:
    """A fresh job folder (named ``job_id``, else a new id) and its sbatch script (None for a local
    job); the folder is created only once the script renders (a broken site template is refused
    before anything is written)."""
    job_id = job_id or new_id()
    folder = spec.profile.jobs_dir / job_id
    backend = backends.for_profile(spec.profile)
    script = backend.render(render.render, spec, folder, job_id, elements) if backend.uses_script else None
    folder.mkdir(parents=True, exist_ok=False)
    return job_id, folder, script



def _write_ids(folder: Path, ids: Sequence[str]) -> None:
    """``{bfjobs id: element index}``: a submitter that lost the answer (a remote profile's
    dropped connection) finds its jobs' Slurm ids from this and submitit's ``*_submitted.pkl``."""
    import json

    (folder / IDS_FILE).write_text(json.dumps({job_id: index for index, job_id in enumerate(ids)}))


def submit(
    db: Database,
    spec: JobSpec,
    note: Callable[[str], None] = _ignore,
    backends: Backends | None = None,
    job_id: str | None = None,
) -> Outcome:
    """Submit ``spec`` unless its artefact is already present or already being fetched.

    A download is first resolved on the hub (:func:`prepare`; ``note`` hears when the hub
    cannot be asked from here). ``job_id``: the id to give the job (a remote profile's laptop
    chose it), else a new one.
    """
    backends = _backends(backends)
    outcomes, todo = _triage(db, [spec], backends)
    if not todo:
        assert outcomes[0] is not None
        return outcomes[0]
    [spec] = prepare([spec], note)
    db.migrate()  # fail on a bad database before anything is submitted
    return _submit_one(db, spec, backends, job_id)


def _submit_one(db: Database, spec: JobSpec, backends: Backends, job_id: str | None = None) -> JobRow:
    """Submit a spec already triaged (not present, not in flight) and record it."""
    chosen = job_id is not None
    job_id, folder, script = _new_folder(spec, backends, job_id=job_id)
    try:
        if chosen:  # by a remote profile's laptop, which may lose the answer
            _write_ids(folder, [job_id])
        submitted = backends.for_profile(spec.profile).submit(spec, folder, script, kinds.get(spec.kind).task())
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # nothing was submitted: leave no trace
        raise
    row = _record(spec, job_id, folder, submitted)
    db.insert(row)
    return row


#: Slurm's default MaxArraySize is 1001 (indexes 0-1000): longer lists become several arrays.
ARRAY_CHUNK = 1000


def submit_many(
    db: Database,
    specs: Sequence[JobSpec],
    note: Callable[[str], None] = _ignore,
    backends: Backends | None = None,
    ids: Sequence[str] | None = None,
) -> list[Outcome]:
    """Submit many artefacts of one kind and profile: ONE Slurm job array per 1,000 of them.

    Each element is its own bfjobs job (its own id and DB row; Slurm id ``<array>_<index>``),
    with the same rules as a single submission: present or in-flight artefacts are reported,
    not submitted; downloads left to submit are resolved on the hub together, and one miss
    refuses the whole list. Local profiles start one local job per element.
    """
    backends = _backends(backends)
    outcomes, todo = _triage(db, specs, backends)
    if not todo:
        return [o for o in outcomes if o is not None]
    specs = list(specs)
    for index, spec in zip(todo, prepare([specs[i] for i in todo], note), strict=True):
        specs[index] = spec
    db.migrate()
    backend = backends.for_profile(specs[0].profile)
    if not backend.submits_arrays:
        for index in todo:  # triaged together above: each is submitted as it is
            outcomes[index] = _submit_one(db, specs[index], backends, ids[index] if ids is not None else None)
        return [o for o in outcomes if o is not None]
    given = list(ids) if ids is not None else [new_id() for _ in specs]
    for start in range(0, len(todo), ARRAY_CHUNK):
        chunk = todo[start : start + ARRAY_CHUNK]
        elements = [specs[i] for i in chunk]
        _array_id, folder, script = _new_folder(elements[0], backends, elements, job_id=given[chunk[0]])
        assert script is not None  # arrays are Slurm's
        try:
            if ids is not None:  # chosen by a remote profile's laptop, which may lose the answer
                _write_ids(folder, [given[i] for i in chunk])
            task = kinds.get(specs[chunk[0]].kind).task()
            submitted = backend.submit_array([specs[i] for i in chunk], folder, script, task)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        rows = [_record(specs[i], given[i], folder, sub) for i, sub in zip(chunk, submitted, strict=True)]
        db.insert_many(rows)
        for index, row in zip(chunk, rows, strict=True):
            outcomes[index] = row
    return [o for o in outcomes if o is not None]


def _user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None
