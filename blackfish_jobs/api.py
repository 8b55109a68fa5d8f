"""The library behind the CLI: submit, preview, refresh and wait, usable without Click.

Data flows one way: a validated :mod:`specs` request is rendered (:mod:`render`), submitted
(:mod:`executor`), recorded (:mod:`db`) and later refreshed (:mod:`tracker`).
"""

from __future__ import annotations

import getpass
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import layout, render
from .db import Database, JobRow, utcnow
from .specs import DownloadModel, JobSpec, PullImage
from .tracker import PENDING, RUNNING

if TYPE_CHECKING:
    from .verify import Finding


@dataclass(frozen=True)
class AlreadyPresent:
    """Nothing to do: the artefact is already where Blackfish will look for it."""

    kind: str
    path: Path
    profile: str
    commit: str | None = None  # downloads: the snapshot's commit
    where: str | None = None  # downloads: "shared" or "home"

    def describe(self) -> str:
        if self.commit is None:
            return f"already present: {self.path} (use --force to pull again)"
        cache = "the shared cache" if self.where == "shared" else "your home cache"
        return f"already available: commit {self.commit} in {cache}: {self.path}"

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {"kind": self.kind, "state": "PRESENT", "path": str(self.path)}
        data["profile"] = self.profile
        if self.commit is not None:
            data.update(commit=self.commit, where=self.where, model_dir=str(self.path.parent.parent))
        return data


def new_id() -> str:
    """A bfjobs job id: 12 hex digits, unique enough and short enough to type."""
    return uuid.uuid4().hex[:12]


def preview(spec: JobSpec) -> str:
    """Exactly the script ``submit`` would send, with a placeholder id and job folder.

    For a local profile this is the script a Slurm profile would submit (local jobs run the
    same task without sbatch).
    """
    folder = spec.profile.jobs_dir / render.PREVIEW_ID
    return render.render(spec, folder, render.PREVIEW_ID)


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
    """Is the artefact already where Blackfish will find it? (A few ``stat`` calls, no walk.)

    Models follow Blackfish's admin guide: the shared cache first, then the user's; with no
    ``--revision`` a shared snapshot is used as it is (never "latest" over a shared copy).
    """
    task = spec.task
    if task.force:
        return None
    if isinstance(task, PullImage):
        return AlreadyPresent(spec.kind, spec.target, spec.profile.name) if spec.target.exists() else None
    places = [("shared", layout.models_dir(spec.profile.cache_dir)), ("home", layout.models_dir(spec.profile.home_dir))]
    for where, models in places:
        commit = layout.find_snapshot(models, task.repo_id, task.revision)
        if commit is not None:
            snapshot = layout.repo_dir(models, task.repo_id) / "snapshots" / commit
            return AlreadyPresent(spec.kind, snapshot, spec.profile.name, commit, where)
    return None


@dataclass(frozen=True)
class InFlight:
    """Nothing submitted: a job for the same artefact is already pending or running."""

    row: JobRow

    def describe(self) -> str:
        native = f"Slurm job {self.row.native_id}" if self.row.backend == "slurm" else f"pid {self.row.native_id}"
        return f"already in flight: job {self.row.id} ({native}, {self.row.state}) for {self.row.target}"

    def to_json(self) -> dict[str, object]:
        return {**self.row.to_json(), "in_flight": True}


def in_flight(db: Database, spec: JobSpec) -> JobRow | None:
    """An unfinished job for the same image, or the same repo@revision, if there is one.

    One indexed DB query; the candidates (usually none) are refreshed with one Slurm call so a
    job that just ended does not block a new request.
    """
    import sqlalchemy as sa

    from . import tracker
    from .constants import FINISHED_STATES
    from .db import jobs

    stmt = sa.select(jobs).where(
        jobs.c.target == str(spec.target), jobs.c.kind == spec.kind, jobs.c.state.not_in(sorted(FINISHED_STATES))
    )
    rows = db.query(stmt)
    if isinstance(spec.task, DownloadModel):
        rows = [r for r in rows if r.request.get("revision") == spec.task.revision]
    if not rows:
        return None
    live = [r for r in tracker.refresh(db, rows) if r.state not in FINISHED_STATES]
    return live[0] if live else None


def submit(db: Database, spec: JobSpec) -> JobRow | AlreadyPresent | InFlight:
    """Submit ``spec`` unless its artefact is already present or already being fetched."""
    found = present(spec)
    if found is not None:
        return found
    running = in_flight(db, spec)
    if running is not None:
        return InFlight(running)
    found = present(spec)  # the in-flight job may have just published it
    if found is not None:
        return found
    check_destination(spec)
    db.migrate()  # fail on a bad database before anything is submitted
    from . import executor

    job_id = new_id()
    folder = spec.profile.jobs_dir / job_id
    folder.mkdir(parents=True, exist_ok=False)
    try:
        submitted, _job = executor.submit(spec, folder, job_id)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # nothing was submitted: leave no trace
        raise
    now = utcnow()
    row = JobRow(
        id=job_id,
        kind=spec.kind,
        profile=spec.profile.name,
        backend=submitted.backend,
        native_id=submitted.native_id,
        state=PENDING if submitted.backend == "slurm" else RUNNING,
        reason=None,
        folder=str(folder),
        target=str(spec.target),
        request=spec.request_record(),
        result=None,
        node=None if submitted.backend == "slurm" else "localhost",
        user=_user(),
        submitted_at=now,
        ended_at=None,
        updated_at=now,
    )
    db.insert(row)
    return row


def _user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


def artefact_in_place(row: JobRow) -> bool:
    """After COMPLETED: is the published artefact really there (the image, or the snapshot)?"""
    if row.kind == "download-model":
        snapshot = (row.result or {}).get("snapshot")
        return bool(snapshot) and os.path.isdir(snapshot)
    return os.path.exists(row.target)


def verify(db: Database, refs: list[str], profile: str | None = None) -> list[Finding]:
    """Verify artefacts: given job ids or paths, else the latest completed job per artefact."""
    from . import verify as checks

    rows: list[JobRow] = []
    findings: list[Finding] = []
    for ref in refs:
        if ref.startswith("/"):
            findings.append(checks.verify_path(Path(ref)))
        else:
            rows.append(db.resolve(ref))
    if not refs:
        latest: dict[str, JobRow] = {}
        for row in db.listing(states=["COMPLETED"], profile=profile):
            latest.setdefault(row.target + "@" + str((row.result or {}).get("commit")), row)
        rows = list(latest.values())
    for row in rows:
        result = row.result or {}
        if row.kind == "pull-image":
            findings.append(checks.verify_image(Path(row.target), result.get("sha256"), result.get("size"), row.id))
        elif result.get("snapshot"):
            findings.append(checks.verify_snapshot(Path(result["snapshot"]), row.id))
    return findings
