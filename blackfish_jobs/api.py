"""The library behind the CLI: submit, preview, refresh and wait, usable without Click.

Data flows one way: a validated :mod:`specs` request is rendered (:mod:`render`), submitted
(:mod:`executor`), recorded (:mod:`db`) and later refreshed (:mod:`tracker`).
"""

from __future__ import annotations

import getpass
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from . import layout, render
from .db import Database, JobRow, utcnow
from .specs import DownloadModel, JobSpec, PullImage
from .tracker import PENDING, RUNNING


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


def submit(db: Database, spec: JobSpec) -> JobRow | AlreadyPresent:
    """Submit ``spec`` unless its artefact is already present."""
    found = present(spec)
    if found is not None:
        return found
    check_destination(spec)
    db.migrate()  # fail on a bad database before anything is submitted
    from . import executor

    job_id = new_id()
    folder = spec.profile.jobs_dir / job_id
    folder.mkdir(parents=True, exist_ok=False)
    submitted, _job = executor.submit(spec, folder, job_id)
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
