"""``download-model``: a Hugging Face model snapshot downloaded into Blackfish's model cache.

Repo ids, revisions and file patterns; where a snapshot already counts as present (the shared
cache, then the user's); pinning each request to the commit the hub names before submitting;
which running job fetches the same selection; registering a finished download in Blackfish's
``model`` table; and what ``verify`` checks.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import BadInput, HubRefused, show
from .base import Argument, Kind, Option

if TYPE_CHECKING:
    from ..config import JobSettings, Profile
    from ..specs import AlreadyPresent, JobSpec
    from ..store import Database, JobRow
    from ..verify import Finding

# Patterns are compiled on first use (re's own cache), not at import: ``bfjobs list`` imports the kinds.
# Hugging Face repo ids: namespace/name, each part of word characters, '.', '-'; no '--' or '..'
# (Blackfish splits folder names on '--'), no leading/trailing '.' or '-', at most 96 characters.
_REPO_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
# The node's staging folder ".bfjobs-staging-models--<ns>--<name>@<40 hex>-<job tag>" must fit in
# one 255-character file name: 86 characters go around the id, so 160 leaves a margin.
MAX_REPO_ID_LEN = 160
_REF_FORBIDDEN = r"[\x00-\x20\x7f~^:?*\[\\'\"`$;&|<>(){}!#%]"
_GLOB = r"^[A-Za-z0-9._*?/\[\]!,+@=-]{1,256}$"


def check_repo_id(value: str) -> str:
    """A Hub model id ``namespace/name`` that Blackfish can find on disk."""
    from .. import validate

    validate.ascii_only("REPO_ID", value)
    if len(value) > MAX_REPO_ID_LEN:
        raise BadInput(f"REPO_ID: too long ({len(value)} characters, at most {MAX_REPO_ID_LEN}): {show(value)}")
    parts = value.split("/")
    if len(parts) != 2:
        raise BadInput(f"REPO_ID: expected namespace/name (e.g. meta-llama/Llama-3.1-8B), got {show(value)}")
    for part in parts:
        if not re.fullmatch(_REPO_PART, part) or "--" in part or ".." in part:
            raise BadInput(
                f"REPO_ID: {show(part)} is not a valid Hub name (letters, digits, '.', '_', '-'; "
                "no '--' or '..'; at most 96 characters)"
            )
    if value.endswith(".git"):
        raise BadInput(f"REPO_ID: must not end with .git: {show(value)}")
    return value


def check_revision(value: str) -> str:
    """A branch or tag (git's ref-name rules) or a full 40-hex commit sha."""
    from .. import layout, validate

    validate.ascii_only("--revision", value)
    if layout.is_commit(value):
        return value
    bad = (
        len(value) > 200
        or re.search(_REF_FORBIDDEN, value)
        or value.startswith(("-", "/"))
        or value.endswith(("/", ".", ".lock"))
        or ".." in value
        or "//" in value
        or "@{" in value
        or value == "@"
        or any(part.startswith(".") for part in value.split("/"))
    )
    if bad:
        raise BadInput(f"--revision: not a branch, tag or 40-hex commit: {show(value)}")
    return value


def check_pattern(field: str, value: str) -> str:
    """An include/exclude glob as huggingface_hub's fnmatch takes it."""
    from .. import validate

    validate.ascii_only(field, value)
    if not re.match(_GLOB, value) or ".." in value.split("/") or value.startswith("/"):
        raise BadInput(f"{field}: not a file pattern (e.g. '*.safetensors', 'original/*'): {show(value)}")
    return value


def download_model(
    repo_id: str,
    profile: Profile,
    settings: JobSettings,
    *,
    revision: str | None = None,
    to: str = "home",
    include: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
    force: bool = False,
) -> JobSpec:
    """Validate a download request; ``to``: ``home`` (the user's models dir, the default) or
    ``shared`` (the shared cache's, for its admins)."""
    from .. import layout
    from ..node.requests import DownloadModel

    if to not in ("shared", "home"):
        raise BadInput(f"--to: expected 'shared' or 'home', got {show(to)}")
    shared = to == "shared"
    repo_id = check_repo_id(repo_id)
    revision = check_revision(revision) if revision is not None else None
    if len(include) > 64 or len(exclude) > 64:
        raise BadInput("--include/--exclude: at most 64 patterns each")
    allow = tuple(check_pattern("--include", p) for p in include) or None
    ignore = tuple(check_pattern("--exclude", p) for p in exclude) or None
    base = profile.cache_dir if shared else profile.home_dir
    task = DownloadModel(
        repo_id=repo_id,
        revision=revision,
        models_dir=layout.models_dir(base),
        endpoint=settings.hf_endpoint,
        allow_patterns=allow,
        ignore_patterns=ignore,
        max_workers=settings.max_workers or 8,
        force=force,
        shared=shared,
        group=settings.shared_group if shared else None,
    )
    at = f"@{revision}" if revision else ""
    return KIND.spec(profile, settings, task, f"{repo_id}{at} -> {task.target}", where=to)


def _destination(params: Mapping[str, Any]) -> str:
    """``--to`` with ``--shared`` as its alias (the flag models had before ``--to``)."""
    to = params.get("to")
    if params.get("shared"):
        if to == "home":
            raise BadInput("--shared means --to shared: it cannot be used with --to home")
        return "shared"
    return to or "home"


def split_repo_revision(entry: str) -> tuple[str, str | None]:
    """``namespace/name[@revision]`` from a download list."""
    repo, sep, revision = entry.partition("@")
    return repo, (revision if sep else None)


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
    from .. import constants
    from ..node.requests import DownloadModel

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
    from ..node.requests import DownloadModel

    task = spec.task
    assert isinstance(task, DownloadModel)
    try:
        return hub.resolve(task.repo_id, task.revision, task.endpoint)
    except (hub.Miss, hub.Unreachable) as exc:
        return exc


def _node_resolves(specs: Sequence[JobSpec], indexes: Sequence[int]) -> str:
    if len(indexes) == 1:
        task = specs[indexes[0]].task
        return f"the job resolves {task.revision or 'main'} on the node"
    return f"{len(indexes)} jobs resolve their revisions on the node"


def _fetches_selection(row: JobRow, spec: JobSpec) -> bool:
    """Whether a running job fetches what ``spec`` selects: all files, or the very same patterns.

    A job for ``--include '*.json'`` does not fetch the weights a plain request asks for.
    """
    allow, ignore = row.request.get("allow_patterns"), row.request.get("ignore_patterns")
    if not allow and not ignore:
        return True
    return (allow or None, ignore or None) == (
        list(spec.task.allow_patterns or []) or None,
        list(spec.task.ignore_patterns or []) or None,
    )


class DownloadModelKind(Kind):
    """A Hugging Face snapshot (``snapshot_download``) into ``<home_dir>/models`` or, for admins,
    ``<cache_dir>/models``; registered in Blackfish's ``model`` table once downloaded."""

    name: ClassVar[str] = "download-model"
    artefact: ClassVar[str] = "snapshot"
    help: ClassVar[str] = (
        "Download a Hugging Face model snapshot (REPO_ID = namespace/name) into Blackfish's model cache.\n\n"
        "The shared cache is checked first, then yours (with --to shared only the shared cache): a snapshot holding\n"
        "every file the request selects is used as it is. Filters are additive: other files fill the same snapshot."
    )
    argument: ClassVar[Argument] = Argument("repo_id", "REPO_ID", "model")
    options: ClassVar[tuple[Option, ...]] = (
        Option(
            ("--revision",), "revision", "Branch, tag or 40-hex commit (default: the main branch).", metavar="REV"
        ),
        Option(
            ("--to",),
            "to",
            "home (default): <home_dir>/models; shared: <cache_dir>/models, the shared cache (its admins), "
            "looked in alone.",
            choice=("shared", "home"),
        ),
        Option(("--shared",), "shared", "The same as --to shared.", is_flag=True),
        Option(("--include",), "include", "Only files matching GLOB (repeatable).", multiple=True, metavar="GLOB"),
        Option(("--exclude",), "exclude", "Skip files matching GLOB (repeatable).", multiple=True, metavar="GLOB"),
        Option(
            ("--force",),
            "force",
            "Fetch again the files selected, into the chosen destination (others stay).",
            is_flag=True,
        ),
    )
    #: A download of the benchmark's 2 GiB repo with 8 workers peaked at 288 MiB RSS and 1.5 CPUs
    #: (README, "Defaults").
    slurm_defaults: ClassVar[Mapping[str, Any]] = {"time": "12:00:00", "mem": "2G", "cpus_per_task": 2}
    task_path: ClassVar[str] = "blackfish_jobs.node.download:download_model"
    registers: ClassVar[bool] = True

    def check_params(self, params: Mapping[str, Any], *, from_file: bool) -> None:
        if from_file and params.get("revision") is not None:
            raise BadInput("--revision applies to one model: with --from-file write repo@revision per line")

    def build(
        self, entry: str, profile: Profile, settings: JobSettings, params: Mapping[str, Any], *, from_file: bool
    ) -> JobSpec:
        repo_id, revision = split_repo_revision(entry) if from_file else (entry, params.get("revision"))
        return download_model(
            repo_id,
            profile,
            settings,
            revision=revision,
            to=_destination(params),
            include=tuple(params.get("include") or ()),
            exclude=tuple(params.get("exclude") or ()),
            force=bool(params.get("force")),
        )

    def prepare(self, specs: Sequence[JobSpec], note: Callable[[str], None] = _ignore) -> list[JobSpec]:
        """Pinned to the hub's commit for each revision (:func:`pin_revisions`)."""
        return pin_revisions(specs, note)

    def revision(self, row: JobRow) -> str | None:
        """The commit the job was pinned to at submit (else the one its result names)."""
        return (row.request or {}).get("commit") or (row.result or {}).get("commit")

    def present(self, spec: JobSpec) -> AlreadyPresent | None:
        """``--shared`` looks only at the shared cache; otherwise the shared cache first, then the
        user's. With no ``--revision`` any shared snapshot is used as it is (``refs/main``'s, else
        the newest: never "latest" over a shared copy), while in home only ``refs/main``'s counts. A
        snapshot counts only if it holds every file the request's ``--include``/``--exclude`` select.
        (A few ``stat`` calls and at most one small JSON file per place, no walk.)
        """
        from .. import layout

        task = spec.task
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
            from ..specs import AlreadyPresent

            return AlreadyPresent(spec.kind, repo / "snapshots" / commit, spec.profile.name, commit, where, ref)
        return None

    def destination_hint(self, spec: JobSpec) -> str:
        if spec.task.shared:
            return (
                "--to shared is for the shared cache's admins; with --to home (the default) the model goes to "
                "your home_dir, where Blackfish finds it too"
            )
        return ""

    def same_request(self, row: JobRow, spec: JobSpec) -> bool:
        """The same revision, and a job fetching every file ``spec`` selects."""
        return row.request.get("revision") == spec.task.revision and _fetches_selection(row, spec)

    def artefact_in_place(self, row: JobRow) -> bool:
        snapshot = (row.result or {}).get("snapshot")
        return bool(snapshot) and os.path.isdir(snapshot)

    def on_completed(self, db: Database, row: JobRow) -> None:
        """Register the snapshot in Blackfish's ``model`` table (or leave it for ``bfjobs sync``)."""
        from ..store import blackfish as registry

        registry.register(db, row)

    def verify(self, row: JobRow) -> Finding | None:
        """The snapshot against the hub's tree listing stored beside it."""
        from .. import verify

        snapshot = (row.result or {}).get("snapshot")
        return verify.verify_snapshot(Path(snapshot), row.id) if snapshot else None


KIND = DownloadModelKind()
