"""Validated requests: everything a job needs, checked before anything is rendered or submitted.

A spec is a frozen dataclass holding only validated values, built by its kind
(:mod:`blackfish_jobs.kinds`). The node-side part of a spec (what gets pickled into the job
folder) is a plain :mod:`.node.requests` dataclass, built once its values are checked; it never
contains secrets. ``--from-file`` lists are read here, for every kind.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from . import validate
from .config import JobSettings, Profile
from .errors import BadInput, show
from .node.requests import DownloadModel, PullImage  # noqa: F401  (names jobs of bfjobs 0.1 pickled: tasks.py)


@dataclass(frozen=True)
class JobSpec:
    """One job to render and submit: the profile, the resolved settings and the node request."""

    kind: str  # the kind's name (blackfish_jobs.kinds)
    profile: Profile
    settings: JobSettings
    task: Any  # the kind's node request: a node.requests dataclass with `target` and `force`
    label: str  # short human description, e.g. "docker://alpine:3.20 → /cache/images/alpine_3.20.sif"
    template: str  # the sbatch template the kind renders, e.g. "pull-image.sh.j2"
    origin: str | None = None  # where the request was written, for messages: "line 3" of a --from-file list
    where: str = "home"  # where the artefact goes: "shared" (the profile's cache_dir) or "home" (its home_dir)

    @property
    def target(self) -> Path:
        return self.task.target

    def request_record(self) -> dict[str, Any]:
        """What the DB keeps about the request (JSON-serialisable, no secrets)."""
        data = asdict(self.task)
        return {k: str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v for k, v in data.items()}


@dataclass(frozen=True)
class AlreadyPresent:
    """Nothing to do: the artefact is already where Blackfish will look for it."""

    kind: str
    path: Path
    profile: str
    commit: str | None = None  # downloads: the snapshot's commit
    where: str | None = None  # downloads: "shared" or "home"
    ref: str | None = None  # downloads: the branch/tag naming that commit, when known
    digest: str | None = None  # images: the manifest digest the tag still names (None: not pinned)

    def describe(self) -> str:
        if self.commit is None:
            from .node.records import short

            pinned = f", {short(self.digest)}, which the tag still names" if self.digest else ""
            return f"already present: {self.path}{pinned} (use --force to pull again)"
        cache = "the shared cache" if self.where == "shared" else "your home cache"
        ref = f" (ref: {self.ref})" if self.ref else ""
        return f"already available: commit {self.commit} in {cache}: {self.path}{ref}"


MAX_LIST_LINES = 10_000
MAX_LIST_BYTES = 4 * 1024 * 1024


def read_list_file(path: str) -> list[tuple[int, str]]:
    """``(line number, entry)`` for each entry of a ``--from-file`` list.

    One entry per line; blank lines and ``#`` comments (whole-line, or after whitespace) are
    skipped. The file itself is checked here; the entries by the kind's own validators.
    """
    text_path = validate.ascii_only("--from-file", path) if path != "-" else path
    try:
        if text_path == "-":
            raw = sys.stdin.buffer.read(MAX_LIST_BYTES + 1)
        else:
            with open(text_path, "rb") as fh:
                raw = fh.read(MAX_LIST_BYTES + 1)
    except OSError as exc:
        raise BadInput(f"--from-file: cannot read {show(path)}: {exc.strerror}") from None
    if len(raw) > MAX_LIST_BYTES:
        raise BadInput(f"--from-file: {show(path)} is larger than {MAX_LIST_BYTES // (1024 * 1024)} MiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput(f"--from-file: {show(path)} is not UTF-8 text") from None
    entries = []
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        comment = re.search(r"(^|\s)#", line)
        if comment:
            line = line[: comment.start()]
        if line.strip():
            entries.append((number, line.strip()))
    if not entries:
        raise BadInput(f"--from-file: {show(path)} lists nothing (one entry per line, '#' comments)")
    if len(entries) > MAX_LIST_LINES:
        raise BadInput(f"--from-file: {show(path)} lists {len(entries)} entries (at most {MAX_LIST_LINES})")
    return entries


def from_list(
    path: str, build: Callable[[str], JobSpec], what: str
) -> list[tuple[int, JobSpec]]:
    """Build one spec per entry; any bad entry refuses the whole file, naming its lines."""
    specs: list[tuple[int, JobSpec]] = []
    errors: list[str] = []
    seen: set[str] = set()
    for number, entry in read_list_file(path):
        try:
            spec = build(entry)
        except BadInput as exc:
            errors.append(f"line {number}: {exc}")
            continue
        key = spec.label
        if key in seen:
            continue  # the same artefact twice: one job
        seen.add(key)
        specs.append((number, replace(spec, origin=f"line {number}")))
    if errors:
        shown = "; ".join(errors[:5]) + (f"; and {len(errors) - 5} more" if len(errors) > 5 else "")
        raise BadInput(f"--from-file {show(path)}: {len(errors)} bad {what}(s), nothing submitted: {shown}")
    return specs
