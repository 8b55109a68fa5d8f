"""What a job is asked to do: plain dataclasses submitit pickles into the job folder.

No validation here (``specs`` checks every value at submit, then builds these); nothing secret
(no token: huggingface_hub reads it on the node). Their module path is part of every pickle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import layout


@dataclass(frozen=True)
class PullImage:
    """Node-side request for ``apptainer pull`` (pickled into the job folder: no secrets)."""

    uri: str
    dest_dir: Path
    filename: str
    apptainer: str
    force: bool = False
    group: str | None = None  # shared_group: publish for a group of admins (publish.group_mode)
    digest: str | None = None  # the manifest digest the tag named at submit; None: the node resolves it
    insecure: bool = False  # the registry is in insecure_registries: plain HTTP (apptainer --no-https)
    insecure_registries: tuple[str, ...] = ()  # the setting's entries (a token service may be another)

    @property
    def target(self) -> Path:
        return self.dest_dir / self.filename


@dataclass(frozen=True)
class DownloadModel:
    """Node-side request for ``snapshot_download`` (pickled into the job folder: no token here)."""

    repo_id: str
    revision: str | None  # None: the default branch
    models_dir: Path  # <cache_dir>/models or <home_dir>/models
    endpoint: str | None
    allow_patterns: tuple[str, ...] | None
    ignore_patterns: tuple[str, ...] | None
    max_workers: int
    force: bool = False
    shared: bool = False
    commit: str | None = None  # pinned at submit by the hub's answer for the revision; None: the node resolves
    group: str | None = None  # shared_group: publish for a group of admins (publish.group_mode)

    @property
    def target(self) -> Path:
        return layout.repo_dir(self.models_dir, self.repo_id)
