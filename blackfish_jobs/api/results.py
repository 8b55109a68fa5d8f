"""What the facade's calls return: result objects with ONE JSON serialisation (``to_json``).

Every ``--json`` output of ``bfjobs`` is ``result.to_json()``: one object ``{"version": 1, ...}``
whose items have the same keys for the same things everywhere (documented in docs/json.md).
A result also says whether the call succeeded (:meth:`Result.failure`) and so which exit
code it implies, so the CLI and a Python caller apply the same rules.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Union

from ..errors import BfjobsError, ClusterError, JobFailed

if TYPE_CHECKING:
    from ..backends.base import Check
    from ..caches import Entry, Leftover, Removal, Space
    from ..specs import AlreadyPresent
    from ..store import JobRow
    from ..verify import Finding
    from .submission import InFlight

#: The version of the JSON shape: bumped only when a key is removed or changes meaning
#: (adding a key is not a new version; see docs/json.md).
JSON_VERSION = 1

#: A job as a submit reports it: submitted (its row), already present, or already in flight.
Outcome = Union["JobRow", "AlreadyPresent", "InFlight"]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") + "Z" if value else None


def _array_index(native_id: str | None) -> int | None:
    """An array element's index (``3269_7`` -> 7); None for a job that is not an element."""
    _, sep, index = (native_id or "").rpartition("_")
    return int(index) if sep and index.isdigit() else None


def _result_json(result: dict[str, Any] | None) -> dict[str, Any] | None:
    """A job's result as stored, with ``mode`` as octal digits ("755"; older rows stored "0o755")."""
    if result is None or not isinstance(result.get("mode"), str):
        return result
    return {**result, "mode": result["mode"].removeprefix("0o")}


def job_json(row: JobRow, progress: dict[str, Any] | None = None, *, in_flight: bool = False) -> dict[str, Any]:
    """One job in the shared shape (see docs/json.md)."""
    from .. import jobids

    native = row.native_id
    slurm = jobids.runs_arrays(row)
    log = f"{row.folder}/{native}_0_log." if native else None
    return {
        "id": row.id,
        "kind": row.kind,
        "state": row.state,
        "in_flight": in_flight,
        "reason": row.reason,
        "profile": row.profile,
        "where": row.location,
        "backend": row.backend,
        **jobids.id_fields(row),
        "array_index": _array_index(native) if slurm else None,
        "target": row.target,
        "request": row.request,
        "result": _result_json(row.result),
        "node": row.node,
        "user": row.user,
        "folder": row.folder,
        "stdout": log and log + "out",
        "stderr": log and log + "err",
        "submitted_at": _iso(row.submitted_at),
        "ended_at": _iso(row.ended_at),
        "updated_at": _iso(row.updated_at),
        "registered_at": _iso(row.registered_at),
        "progress": progress,
    }


def revision_column(row: JobRow) -> str:
    """The REVISION cell: the first 12 characters of the version the job's kind pins (a model's
    commit), else ``-``."""
    revision = _revision_reader(row.kind)(row)
    return revision[:12] if revision else "-"


@functools.cache
def _revision_reader(kind_name: str) -> Callable[[JobRow], str | None]:
    """The kind's ``revision`` (looked up once per kind: a table may print 10,000 rows)."""
    from ..kinds import KINDS

    kind = KINDS.get(kind_name)
    return kind.revision if kind is not None else _no_revision


def _no_revision(_row: JobRow) -> None:
    return None


def present_json(present: AlreadyPresent) -> dict[str, Any]:
    """An artefact already in place, with a job's keys: no id, state PRESENT, a result like a job's."""
    if present.commit is None:
        target = str(present.path)
        result: dict[str, Any] = {"path": target}
    else:
        target = str(present.path.parent.parent)  # the repo folder, as a download job's target
        result = {
            "snapshot": str(present.path),
            "commit": present.commit,
            "model_dir": str(present.path.parent.parent),
            "where": present.where,
            "ref": present.ref,
        }
    empty = dict.fromkeys(("reason", "backend", "slurm_job_id", "local_pid", "array_index", "request", "node"))
    more = dict.fromkeys(("user", "folder", "stdout", "stderr", "submitted_at", "ended_at", "updated_at"))
    return {
        "id": None,
        "kind": present.kind,
        "state": "PRESENT",
        "in_flight": False,
        **empty,
        "profile": present.profile,
        "where": present.where,
        "target": target,
        "result": result,
        **more,
        "registered_at": None,
        "progress": None,
    }


def outcome_json(outcome: Outcome, progress: Mapping[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """A submitted job, an in-flight one (its job, ``in_flight`` true) or a present artefact."""
    from ..specs import AlreadyPresent
    from .submission import InFlight

    if isinstance(outcome, AlreadyPresent):
        return present_json(outcome)
    if isinstance(outcome, InFlight):
        return job_json(outcome.row, (progress or {}).get(outcome.row.id), in_flight=True)
    return job_json(outcome, (progress or {}).get(outcome.id))


class Result:
    """Base of every result: ``failure()`` is the error the outcome implies (None: success)."""

    def failure(self) -> BfjobsError | None:
        return None

    @property
    def exit_code(self) -> int:
        """0 on success, else the failure's code (1 a job or cluster failure, 2 bad input)."""
        failure = self.failure()
        return 0 if failure is None else failure.exit_code

    def raise_for_status(self) -> None:
        """Raise the failure, if any (the CLI prints it as one stderr line and exits with its code)."""
        failure = self.failure()
        if failure is not None:
            raise failure

    def to_json(self) -> dict[str, Any]:
        raise NotImplementedError


@dataclass(repr=False, eq=False)  # fewer generated methods: the module loads with every command
class JobsResult(Result):
    """Jobs as ``status``, ``list``, ``wait``, ``submit`` and ``cancel`` report them.

    ``jobs``: job rows, or (``submit``) outcomes, in order; ``progress``: progress records by
    job id (None: not read, e.g. ``list``); ``problems``: jobs Slurm could not be asked about;
    ``error``: why the call did not succeed (a timeout, a failed job, a refused cancel).
    """

    jobs: list[Any]
    progress: dict[str, dict[str, Any]] | None = None
    problems: list[str] = field(default_factory=list)
    error: BfjobsError | None = None
    in_flight: set[str] = field(default_factory=set)

    def failure(self) -> BfjobsError | None:
        if self.error is not None:
            return self.error
        if self.problems:
            return ClusterError(f"some jobs were not refreshed: {self.problems[0]}")
        return None

    @property
    def rows(self) -> list[JobRow]:
        """The jobs that are jobs (no present artefacts); in-flight ones as their job."""
        from ..specs import AlreadyPresent
        from .submission import InFlight

        return [o.row if isinstance(o, InFlight) else o for o in self.jobs if not isinstance(o, AlreadyPresent)]

    def to_json(self) -> dict[str, Any]:
        from ..store import JobRow

        progress = self.progress or {}
        flying = self.in_flight
        items = [
            job_json(o, progress.get(o.id), in_flight=o.id in flying) if isinstance(o, JobRow) else outcome_json(o)
            for o in self.jobs
        ]
        return {"version": JSON_VERSION, "jobs": items}


@dataclass(repr=False, eq=False)  # fewer generated methods: the module loads with every command
class SubmitResult(JobsResult):
    """``submit``: one outcome per request (``labels`` say what each asked for); with ``wait``,
    present artefacts first, then the jobs as they ended. ``notice``: a line for stderr (the
    built-in profile in use), ``waited``: whether it waited."""

    labels: list[str] = field(default_factory=list)
    notice: str | None = None
    waited: bool = False


@dataclass(repr=False, eq=False)  # fewer generated methods: the module loads with every command
class RenderResult(Result):
    """``render``: the script submit would send (None: nothing to send), and per request its
    outcome (None: an element of the script; else present / in flight)."""

    script: str | None
    outcomes: list[Outcome | None]
    labels: list[str]
    many: bool
    notices: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        skipped = [outcome_json(o) for o in self.outcomes if o is not None]
        return {"version": JSON_VERSION, "script": self.script, "jobs": skipped}


@dataclass(repr=False, eq=False)  # fewer generated methods: the module loads with every command
class CancelResult(JobsResult):
    """``cancel``: each job's state afterwards and what was done (``actions`` by job id:
    "cancelled", "requested", "already ended", "refused"; ``messages`` why)."""

    actions: dict[str, str] = field(default_factory=dict)
    messages: dict[str, str | None] = field(default_factory=dict)


@dataclass(repr=False, eq=False)  # fewer generated methods: the module loads with every command
class LogsResult(Result):
    """``logs``: the job as last seen; ``notice`` a line for stderr; ``error`` with ``--follow``
    when the job did not complete."""

    row: JobRow
    notice: str | None = None
    error: BfjobsError | None = None

    def failure(self) -> BfjobsError | None:
        return self.error

    def to_json(self) -> dict[str, Any]:
        return {"version": JSON_VERSION, "jobs": [job_json(self.row)]}


@dataclass(repr=False, eq=False)  # fewer generated methods: the module loads with every command
class VerifyResult(Result):
    """``verify``: one finding per artefact; fails unless each is OK (or UNVERIFIED, accepted)."""

    findings: list[Finding]
    accept_unverified: bool = False

    def bad(self) -> list[Finding]:
        return [f for f in self.findings if not f.ok and not (self.accept_unverified and f.status == "UNVERIFIED")]

    def failure(self) -> BfjobsError | None:
        bad = self.bad()
        if not bad:
            return None
        first = bad[0]
        hint = "; --accept-unverified accepts it" if first.status == "UNVERIFIED" else ""
        return JobFailed(
            f"{len(bad)} of {len(self.findings)} artefact(s) failed verification: {first.status} {first.path}{hint}"
        )

    def to_json(self) -> dict[str, Any]:
        return {"version": JSON_VERSION, "findings": [finding_json(f) for f in self.findings]}


def finding_json(finding: Finding) -> dict[str, Any]:
    """One verdict: ``id`` the job that made the artefact (None for a path), ``kind`` as a job's
    (verify calls artefacts by what they are: the kind whose artefact that is)."""
    from .. import kinds

    kind = kinds.by_artefact(finding.kind)
    return {
        "id": finding.job_id,
        "kind": kind.name if kind is not None else finding.kind,
        "path": finding.path,
        "status": finding.status,
        "ok": finding.ok,
        "problem": finding.problem,
        "checked_files": finding.checked_files,
    }


@dataclass(repr=False, eq=False)
class CacheListResult(Result):
    """``cache ls``: every snapshot and image in a profile's two caches, and each cache's free space."""

    profile: str
    entries: list[Entry]
    spaces: list[Space]

    def to_json(self) -> dict[str, Any]:
        return {
            "version": JSON_VERSION,
            "profile": self.profile,
            "artefacts": [e.to_json() for e in self.entries],
            "caches": [s.to_json() for s in self.spaces],
        }


@dataclass(repr=False, eq=False)
class CacheRemoveResult(Result):
    """``cache rm``: what went (or would, ``dry_run``), and the Blackfish ``model`` rows that went with it."""

    profile: str
    removals: list[Removal]
    dry_run: bool
    blackfish_rows: int = 0

    @property
    def freed(self) -> int:
        return sum(r.bytes for r in self.removals)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": JSON_VERSION,
            "profile": self.profile,
            "dry_run": self.dry_run,
            "removed": [r.to_json() for r in self.removals],
            "bytes": self.freed,
            "blackfish_rows": self.blackfish_rows,
        }


@dataclass(repr=False, eq=False)
class CachePruneResult(Result):
    """``cache prune``: leftovers removed (or found, ``dry_run``; or left, with why) and Blackfish
    ``model`` rows whose snapshot is gone (deleted unless ``dry_run``)."""

    profile: str
    leftovers: list[Leftover]
    gone_rows: list[tuple[str, str, str]]
    dry_run: bool

    @property
    def freed(self) -> int:
        return sum(x.bytes for x in self.leftovers if x.removed or (self.dry_run and not x.skipped))

    def to_json(self) -> dict[str, Any]:
        return {
            "version": JSON_VERSION,
            "profile": self.profile,
            "dry_run": self.dry_run,
            "leftovers": [x.to_json() for x in self.leftovers],
            "bytes": self.freed,
            "blackfish_rows": [
                {"repo_id": repo, "commit": commit, "model_dir": model_dir}
                for repo, commit, model_dir in self.gone_rows
            ],
        }


@dataclass(repr=False, eq=False)
class JobsPruneResult(Result):
    """``jobs prune``: the job folders of finished jobs removed (or that would be), and those kept."""

    folders: list[dict[str, Any]]
    kept_live: int
    dry_run: bool

    @property
    def freed(self) -> int:
        return sum(int(f["bytes"]) for f in self.folders if f["removed"] or (self.dry_run and not f["skipped"]))

    def to_json(self) -> dict[str, Any]:
        return {
            "version": JSON_VERSION,
            "dry_run": self.dry_run,
            "folders": self.folders,
            "bytes": self.freed,
            "kept_live": self.kept_live,
        }


@dataclass(repr=False, eq=False)  # fewer generated methods: the module loads with every command
class SyncResult(Result):
    """``sync``: downloads registered in Blackfish's model table now, and those still waiting
    for the table (``notice`` says why, for stderr)."""

    registered: int
    waiting: int
    notice: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"version": JSON_VERSION, "registered": self.registered, "waiting": self.waiting}


@dataclass(repr=False, eq=False)
class ConfigResult(Result):
    """``config show``: a profile's merged job settings per kind, and where each came from.

    ``settings``: kind -> setting -> (value, source); a source is a file's table
    (``/etc/bfjobs/bfjobs.toml [defaults]``), an environment variable, or ``default``.
    """

    profile: str
    profile_source: str
    site_file: str
    site_file_exists: bool
    user_file: str
    user_file_exists: bool
    fixed: tuple[str, ...]
    ignored_site_profiles: list[str]
    settings: dict[str, dict[str, tuple[Any, str]]]

    def to_json(self) -> dict[str, Any]:
        return {
            "version": JSON_VERSION,
            "profile": self.profile,
            "profile_source": self.profile_source,
            "site_file": {"path": self.site_file, "exists": self.site_file_exists},
            "user_file": {"path": self.user_file, "exists": self.user_file_exists},
            "fixed": list(self.fixed),
            "ignored_site_profiles": self.ignored_site_profiles,
            "kinds": {
                kind: {key: {"value": _setting_json(value), "from": source} for key, (value, source) in values.items()}
                for kind, values in self.settings.items()
            },
        }


@dataclass(repr=False, eq=False)
class DoctorResult(Result):
    """``doctor``: each check of the profile, in order; fails (exit 1) if any check failed."""

    profile: str | None
    checks: list[Check]

    def failure(self) -> BfjobsError | None:
        failed = [c.name for c in self.checks if c.status == "fail"]
        if failed:
            return JobFailed(f"{len(failed)} check(s) failed: {', '.join(failed)}")
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "version": JSON_VERSION,
            "profile": self.profile,
            "checks": [{"name": c.name, "status": c.status, "detail": c.detail, "fix": c.fix} for c in self.checks],
        }


def _setting_json(value: Any) -> Any:
    """A setting as JSON: paths as text, module and setup lists as arrays."""
    if isinstance(value, tuple | list):
        return [str(v) for v in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


def outcome_message(outcome: Outcome, label: str) -> str:
    """What a submit did with one request, in one line (``label``: what the request asked for)."""
    from ..specs import AlreadyPresent
    from .submission import InFlight

    if isinstance(outcome, AlreadyPresent | InFlight):
        return outcome.describe()
    from .. import jobids

    native = jobids.describe(outcome)
    message = f"submitted {outcome.id} ({native}): {label}"
    if outcome.request.get("commit"):
        message += f" (commit {outcome.request['commit']})"
    return message
