"""The library behind the CLI: submit, preview, refresh and wait, usable without Click.

Data flows one way: a validated :mod:`specs` request is rendered (:mod:`render`), submitted
(:mod:`executor`), recorded (:mod:`db`) and later refreshed (:mod:`tracker`).
"""

from __future__ import annotations

import getpass
import uuid
from dataclasses import dataclass
from pathlib import Path

from . import layout, render
from .db import Database, JobRow, utcnow
from .specs import JobSpec
from .tracker import PENDING, RUNNING


@dataclass(frozen=True)
class AlreadyPresent:
    """Nothing to do: the artefact is already where Blackfish will look for it."""

    kind: str
    path: Path
    profile: str

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "state": "PRESENT", "path": str(self.path), "profile": self.profile}


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
    if dest.is_relative_to(spec.profile.cache_dir) and spec.kind == "pull-image":
        hint = "The shared cache is read-only for users: use --to home, or ask your admins."
    layout.require_writable(dest, "the destination", hint)
    layout.require_writable(spec.profile.jobs_dir, "the job folder")


def submit(db: Database, spec: JobSpec) -> JobRow | AlreadyPresent:
    """Submit ``spec`` unless its artefact is already present (one ``stat``, no cache walk)."""
    if spec.target.exists() and not spec.task.force:
        return AlreadyPresent(spec.kind, spec.target, spec.profile.name)
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
