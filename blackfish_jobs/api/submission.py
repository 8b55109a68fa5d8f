"""Submitting: triage (present, in flight), hub pinning, job folders, arrays; used by :class:`api.Client`.

Data flows one way: a validated :mod:`specs` request is rendered (:mod:`render`), submitted
(:mod:`backends`), recorded (:mod:`store`) and later refreshed (:mod:`tracking`).
"""

from __future__ import annotations

import getpass
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from .. import constants, layout, render
from ..errors import HubRefused
from ..node.requests import DownloadModel, PullImage
from ..specs import JobSpec
from ..states import FINISHED
from ..store import Database, JobRow, utcnow

if TYPE_CHECKING:
    from ..backends.base import Submitted


@dataclass(frozen=True)
class AlreadyPresent:
    """Nothing to do: the artefact is already where Blackfish will look for it."""

    kind: str
    path: Path
    profile: str
    commit: str | None = None  # downloads: the snapshot's commit
    where: str | None = None  # downloads: "shared" or "home"
    ref: str | None = None  # downloads: the branch/tag naming that commit, when known

    def describe(self) -> str:
        if self.commit is None:
            return f"already present: {self.path} (use --force to pull again)"
        cache = "the shared cache" if self.where == "shared" else "your home cache"
        ref = f" (ref: {self.ref})" if self.ref else ""
        return f"already available: commit {self.commit} in {cache}: {self.path}{ref}"


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
    dest = spec.target.parent
    hint = ""
    if spec.kind == "pull-image" and dest.is_relative_to(spec.profile.cache_dir):
        hint = "The shared cache is read-only for users: use --to home, or ask your admins."
    if spec.kind == "download-model" and isinstance(spec.task, DownloadModel) and spec.task.shared:
        hint = "--shared is for admins of the shared cache; without it models go to your home_dir."
    layout.require_writable(dest, "the destination", hint)
    layout.require_writable(spec.profile.jobs_dir, "the job folder")


def present(spec: JobSpec) -> AlreadyPresent | None:
    """Is the artefact already where Blackfish will find it? (A few ``stat`` calls and at most one
    small JSON file per place, no walk.)

    Models: ``--shared`` looks only at the shared cache; otherwise the shared cache first, then
    the user's. With no ``--revision`` any shared snapshot is used as it is (``refs/main``'s, else
    the newest: never "latest" over a shared copy), while in home only ``refs/main``'s counts. A
    snapshot counts only if it holds every file the request's ``--include``/``--exclude`` select.
    """
    task = spec.task
    if task.force:
        return None
    if isinstance(task, PullImage):
        return image_present(spec)
    places = [("shared", layout.models_dir(spec.profile.cache_dir))]
    if not task.shared:
        places.append(("home", layout.models_dir(spec.profile.home_dir)))
    for where, models in places:
        commit = layout.find_snapshot(models, task.repo_id, task.revision, any_snapshot=where == "shared")
        repo = layout.repo_dir(models, task.repo_id)
        if commit is None or not layout.snapshot_covers(repo, commit, task.allow_patterns, task.ignore_patterns):
            continue
        if task.revision is not None and not layout.is_commit(task.revision):
            ref: str | None = task.revision
        else:
            ref = next(iter(layout.refs_to(repo, commit)), None)
        return AlreadyPresent(spec.kind, repo / "snapshots" / commit, spec.profile.name, commit, where, ref)
    return None


def image_present(spec: JobSpec) -> AlreadyPresent | None:
    """The image file is there *and* its record says it came from the URI asked (a stat and one read).

    Blackfish's names collide (``docker://myfork/x:1`` and ``docker://vllm/x:1`` are both
    ``x_1.sif``), so a file of the right name is not enough: a file from another source, or one with
    no record, raises :class:`NameCollision` (nothing is submitted; ``--name``/``--force`` resolve it).
    """
    from ..errors import NameCollision
    from ..node import records

    assert isinstance(spec.task, PullImage)
    if not spec.target.exists():
        return None
    problem = records.image_conflict(spec.target, spec.task.uri)
    if problem is not None:
        raise NameCollision(problem)
    return AlreadyPresent(spec.kind, spec.target, spec.profile.name)


@dataclass(frozen=True)
class InFlight:
    """Nothing submitted: a job for the same artefact is already pending or running."""

    row: JobRow

    def describe(self) -> str:
        from ..jobids import describe

        native = describe(self.row).removeprefix("local ")
        return f"already in flight: job {self.row.id} ({native}, {self.row.state}) for {self.row.target}"


def in_flight_many(db: Database, specs: Sequence[JobSpec]) -> dict[int, JobRow]:
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
    live = [r for r in tracking.refresh(db, rows) if r.state not in FINISHED]
    found: dict[int, JobRow] = {}
    for index, spec in enumerate(specs):
        if spec.task.force:
            continue  # --force fetches again: it waits for the running job's publish lock, then replaces
        for row in live:
            revision = spec.task.revision if isinstance(spec.task, DownloadModel) else None  # images: none
            same = row.kind == spec.kind and row.target == str(spec.target) and row.request.get("revision") == revision
            if same and isinstance(spec.task, PullImage) and row.request.get("uri") != spec.task.uri:
                from ..errors import NameCollision, show

                raise NameCollision(
                    f"name collision: job {row.id} is pulling {show(str(row.request.get('uri')))} into "
                    f"{row.target}, not {spec.task.uri}; use --name NAME.sif to pull it under a name of its own"
                )
            if same and _fetches_selection(row, spec):
                found[index] = row
                break
    return found


def _fetches_selection(row: JobRow, spec: JobSpec) -> bool:
    """Whether a running job fetches what ``spec`` selects: all files, or the very same patterns.

    A job for ``--include '*.json'`` does not fetch the weights a plain request asks for.
    """
    if not isinstance(spec.task, DownloadModel):
        return True
    allow, ignore = row.request.get("allow_patterns"), row.request.get("ignore_patterns")
    if not allow and not ignore:
        return True
    return (allow or None, ignore or None) == (
        list(spec.task.allow_patterns or []) or None,
        list(spec.task.ignore_patterns or []) or None,
    )


Outcome = JobRow | AlreadyPresent | InFlight


def _triage(db: Database, specs: Sequence[JobSpec]) -> tuple[list[Outcome | None], list[int]]:
    """Present or in flight (reported, not submitted), and the indexes left to submit."""
    outcomes: list[Outcome | None] = [present(spec) for spec in specs]
    todo = [i for i, o in enumerate(outcomes) if o is None]
    if todo:
        require_slurm_clients(specs[todo[0]])  # before the database or a job folder is touched
    running = in_flight_many(db, [specs[i] for i in todo])
    for position, index in enumerate(todo):
        if position in running:
            outcomes[index] = InFlight(running[position])
        else:
            outcomes[index] = present(specs[index])  # an in-flight job may have just published it
    todo = [i for i, o in enumerate(outcomes) if o is None]
    for spec in {specs[i].target.parent: specs[i] for i in todo}.values():  # once per directory
        check_destination(spec)
    return outcomes, todo


def require_slurm_clients(spec: JobSpec) -> None:
    """A profile whose backend needs commands this host lacks: one clear line (exit 2), nothing written."""
    from .. import backends

    backends.for_profile(spec.profile).require_clients(spec)


def preview_plan(
    db: Database, specs: Sequence[JobSpec], many: bool, note: Callable[[str], None] | None = None
) -> tuple[list[Outcome | None], str | None]:
    """What ``submit`` (``many``: ``submit_many``) would do, without submitting: the same triage,
    so each entry it would not send has its outcome (present, in flight; a destination it would
    refuse raises the same error), the same hub check (a miss raises as submit does; the script
    shows the pinned commit), and the script it would send for the rest (None: nothing)."""
    outcomes, todo = _triage(db, specs)
    if not todo:
        return outcomes, None
    chosen = pin_revisions([specs[i] for i in todo], note or _ignore)
    return outcomes, preview(chosen[0], chosen if many else None)


#: At most this many hub requests at once when a --from-file list is resolved at submit.
RESOLVE_WORKERS = 8


def _ignore(_message: str) -> None:
    pass


def pin_revisions(specs: Sequence[JobSpec], note: Callable[[str], None] = _ignore) -> list[JobSpec]:
    """Downloads pinned to the commit the hub names for their revision; other specs as given.

    Asked where bfjobs runs, with ``snapshot_download``'s own request, so a repo, branch or
    commit that does not exist costs no Slurm job: any miss raises :class:`HubRefused` naming
    every bad entry (nothing is submitted). A pinned job downloads exactly the commit seen here,
    from the same endpoint. Where the hub cannot be asked from here, ``note`` is told once per
    endpoint and those downloads are left for the node to resolve, as without this check.
    """
    todo = [i for i, s in enumerate(specs) if isinstance(s.task, DownloadModel) and s.task.commit is None]
    if not todo:
        return list(specs)
    from concurrent.futures import ThreadPoolExecutor

    from .. import hub
    from ..node.hub_errors import endpoint_url

    groups: dict[str, list[int]] = {}
    for index in todo:
        task = specs[index].task
        assert isinstance(task, DownloadModel)
        groups.setdefault(endpoint_url(task.endpoint), []).append(index)
    if constants.hub_offline_env():
        for endpoint in groups:
            note(f"bfjobs: HF_HUB_OFFLINE is set: not asking {endpoint}; {_node_resolves(specs, groups[endpoint])}")
        return list(specs)
    answers: dict[int, str | Exception] = {}
    for endpoint, indexes in groups.items():
        answers[indexes[0]] = _ask(specs[indexes[0]])  # one first: an unreachable hub costs one timeout
        if isinstance(answers[indexes[0]], hub.Unreachable):
            unreachable = indexes
        else:
            rest = indexes[1:]
            pool = ThreadPoolExecutor(max_workers=min(RESOLVE_WORKERS, len(rest) or 1))
            try:
                answers.update(zip(rest, pool.map(lambda i: _ask(specs[i]), rest), strict=True))
            finally:  # Ctrl-C: drop the queued requests instead of waiting for each of them
                pool.shutdown(wait=False, cancel_futures=True)
            unreachable = [i for i in indexes if isinstance(answers[i], hub.Unreachable)]
        if unreachable:
            why = " ".join(str(answers[unreachable[0]]).split())[:300]
            note(f"bfjobs: {endpoint} not reachable from here ({why}): {_node_resolves(specs, unreachable)}")
    misses = [(i, str(a)) for i, a in sorted(answers.items()) if isinstance(a, hub.Miss)]
    if misses:
        if len(misses) == 1 and specs[misses[0][0]].origin is None:
            raise HubRefused(f"{misses[0][1]}: nothing submitted")
        shown = "; ".join(f"{specs[i].origin or specs[i].label}: {text}" for i, text in misses[:5])
        more = f"; and {len(misses) - 5} more" if len(misses) > 5 else ""
        raise HubRefused(f"--from-file: {len(misses)} bad model(s) on the hub, nothing submitted: {shown}{more}")
    pinned = list(specs)
    for index, answer in answers.items():
        if isinstance(answer, str):
            spec = specs[index]
            assert isinstance(spec.task, DownloadModel)
            task = replace(spec.task, commit=answer, endpoint=endpoint_url(spec.task.endpoint))
            pinned[index] = replace(spec, task=task)
    return pinned


def _ask(spec: JobSpec) -> str | Exception:
    """The commit, or the hub's :class:`hub.Miss` / :class:`hub.Unreachable` (returned, not raised)."""
    from .. import hub

    task = spec.task
    assert isinstance(task, DownloadModel)
    try:
        return hub.resolve(task.repo_id, task.revision, task.endpoint)
    except (hub.Miss, hub.Unreachable) as exc:
        return exc


def _node_resolves(specs: Sequence[JobSpec], indexes: Sequence[int]) -> str:
    if len(indexes) == 1:
        task = specs[indexes[0]].task
        assert isinstance(task, DownloadModel)
        return f"the job resolves {task.revision or 'main'} on the node"
    return f"{len(indexes)} jobs resolve their revisions on the node"


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
    )


def _new_folder(spec: JobSpec, elements: Sequence[JobSpec] | None = None) -> tuple[str, Path, str | None]:
    """A fresh job folder and its sbatch script (None for a local job); the folder is created
    only once the script renders (a broken site template is refused before anything is written)."""
    job_id = new_id()
    folder = spec.profile.jobs_dir / job_id
    from .. import backends

    backend = backends.for_profile(spec.profile)
    script = backend.render(render.render, spec, folder, job_id, elements) if backend.uses_script else None
    folder.mkdir(parents=True, exist_ok=False)
    return job_id, folder, script


def submit(db: Database, spec: JobSpec, note: Callable[[str], None] = _ignore) -> Outcome:
    """Submit ``spec`` unless its artefact is already present or already being fetched.

    A download is first resolved on the hub (:func:`pin_revisions`; ``note`` hears when the hub
    cannot be asked from here).
    """
    outcomes, todo = _triage(db, [spec])
    if not todo:
        assert outcomes[0] is not None
        return outcomes[0]
    [spec] = pin_revisions([spec], note)
    db.migrate()  # fail on a bad database before anything is submitted
    return _submit_one(db, spec)


def _submit_one(db: Database, spec: JobSpec) -> JobRow:
    """Submit a spec already triaged (not present, not in flight) and record it."""
    from .. import backends

    job_id, folder, script = _new_folder(spec)
    try:
        submitted = backends.for_profile(spec.profile).submit(spec, folder, script)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # nothing was submitted: leave no trace
        raise
    row = _record(spec, job_id, folder, submitted)
    db.insert(row)
    return row


#: Slurm's default MaxArraySize is 1001 (indexes 0-1000): longer lists become several arrays.
ARRAY_CHUNK = 1000


def submit_many(db: Database, specs: Sequence[JobSpec], note: Callable[[str], None] = _ignore) -> list[Outcome]:
    """Submit many artefacts of one kind and profile: ONE Slurm job array per 1,000 of them.

    Each element is its own bfjobs job (its own id and DB row; Slurm id ``<array>_<index>``),
    with the same rules as a single submission: present or in-flight artefacts are reported,
    not submitted; downloads left to submit are resolved on the hub together, and one miss
    refuses the whole list. Local profiles start one local job per element.
    """
    outcomes, todo = _triage(db, specs)
    if not todo:
        return [o for o in outcomes if o is not None]
    specs = list(specs)
    for index, spec in zip(todo, pin_revisions([specs[i] for i in todo], note), strict=True):
        specs[index] = spec
    db.migrate()
    from .. import backends

    backend = backends.for_profile(specs[0].profile)
    if not backend.submits_arrays:
        for index in todo:  # triaged together above: each is submitted as it is
            outcomes[index] = _submit_one(db, specs[index])
        return [o for o in outcomes if o is not None]
    for start in range(0, len(todo), ARRAY_CHUNK):
        chunk = todo[start : start + ARRAY_CHUNK]
        _array_id, folder, script = _new_folder(specs[chunk[0]], [specs[i] for i in chunk])
        assert script is not None  # arrays are Slurm's
        try:
            submitted = backend.submit_array([specs[i] for i in chunk], folder, script)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        rows = [_record(specs[i], new_id(), folder, sub) for i, sub in zip(chunk, submitted, strict=True)]
        db.insert_many(rows)
        for index, row in zip(chunk, rows, strict=True):
            outcomes[index] = row
    return [o for o in outcomes if o is not None]


def _user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None
