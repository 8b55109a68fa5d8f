"""Submitting and rendering for a remote profile, from the laptop (see :mod:`..backends.remote`).

The laptop builds the specs first (its checks: a typo is refused before any connection), keeps
the in-flight rule against its own history, and sends the requests themselves (entries, options,
the user's settings) to the cluster, which rebuilds the specs with its site file and templates,
applies the seed rule against its caches, pins, renders and submits: one round trip and, for a
list, one sbatch. The rows it answers with are stored here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import config, kinds
from ..backends.protocol import one_line
from ..backends.remote import ERROR_TYPES
from ..errors import BfjobsError, ClusterError, ConnectionLost, MalformedAnswer
from ..specs import AlreadyPresent, JobSpec

if TYPE_CHECKING:
    from ..backends import Backends
    from ..backends.remote import RemoteBackend
    from ..store import Database, JobRow
    from .submission import Outcome


def request_args(
    specs: Sequence[JobSpec],
    entries: Sequence[tuple[str | None, str]],
    params: dict[str, Any],
    flags: dict[str, Any],
    many: bool,
) -> dict[str, Any]:
    """What the cluster needs to rebuild ``specs``: the profile's folders, the entries, the kind's
    options and the user's settings (their file's and flags' values)."""
    spec = specs[0]
    resolved = kinds.resolve_settings(spec.profile.name, spec.kind, flags=flags, remote=True)
    shown = {k: list(v) if isinstance(v, tuple) else v for k, v in params.items() if v is not None}
    return {
        "profile": {
            "name": spec.profile.name,
            "home_dir": str(spec.profile.home_dir),
            "cache_dir": str(spec.profile.cache_dir),
        },
        "kind": spec.kind,
        "entries": [list(e) for e in entries],
        "params": shown,
        "layers": config.sent_layers(resolved),
        "many": many,
    }


def _backend(backends: Backends, spec: JobSpec) -> RemoteBackend:
    backend = backends.for_profile(spec.profile)
    assert not backend.here
    return backend  # type: ignore[return-value]


def _lost_row(spec: JobSpec, job_id: str, key: str) -> JobRow:
    """A job sent to the cluster and not confirmed yet: recorded so that, if the answer never
    comes, the next refresh asks the cluster what became of it (:func:`.cluster._recover`).
    ``key``: the submission's (its first job's id), under which the cluster notes the request."""
    from ..states import PENDING
    from ..store import JobRow, utcnow
    from .submission import _user

    now = utcnow()
    return JobRow(
        id=job_id,
        kind=spec.kind,
        profile=spec.profile.name,
        backend="remote",
        native_id=None,
        state=PENDING,
        reason=UNCONFIRMED,
        folder=str(spec.profile.jobs_dir / job_id),
        target=str(spec.target),
        request={**spec.request_record(), "submission": key},
        result=None,
        node=None,
        user=_user(),
        submitted_at=now,
        ended_at=None,
        updated_at=now,
        location=spec.where,
    )


#: A remote job's reason until the cluster confirmed it (the answer to its submission, or a refresh).
UNCONFIRMED = "submitted over ssh; not confirmed by the cluster yet"


def _present(raw: dict[str, Any]) -> AlreadyPresent:
    fields = {k: raw.get(k) for k in ("kind", "path", "profile", "commit", "where", "ref", "digest")}
    if not all(v is None or isinstance(v, str) for v in fields.values()) or not fields["path"]:
        raise TypeError("present")
    return AlreadyPresent(**{**{k: v for k, v in fields.items() if v is not None}, "path": Path(fields["path"])})


def _confirmed(raw: Any, ids: set[str], spec: JobSpec) -> JobRow:
    """A job the cluster says it submitted before a failure: one of ours, of this kind."""
    row = _outcome({"row": raw}, str(raw.get("id")), spec)
    if row.id not in ids:
        raise ValueError("not a job asked for")
    return row  # type: ignore[return-value]


def _outcome(raw: dict[str, Any], job_id: str, spec: JobSpec) -> AlreadyPresent | JobRow:
    """One entry of the cluster's answer to a submission: present, or the job it submitted (which
    must be the job asked for: its id, kind, a Slurm id)."""
    from ..backends.protocol import SLURM_ID
    from .cluster import decode_rows

    if "present" in raw:
        return _present(raw["present"])
    [row] = decode_rows([raw["row"]])
    if row.id != job_id or row.kind != spec.kind or not SLURM_ID.fullmatch(str(row.native_id)):
        raise ValueError("not the job asked for")
    if row.state != "PENDING" or row.target != str(spec.target):
        raise ValueError("not a new job for this artefact")
    if not all(isinstance(v, str) for v in (row.folder, row.target, row.state)) or not isinstance(row.request, dict):
        raise TypeError("row")
    row.backend = "remote"
    row.profile = spec.profile.name
    row.reason = None if row.reason is None else one_line(str(row.reason))
    row.folder = one_line(row.folder)
    row.user = None if row.user is None else one_line(str(row.user))
    row.node = None if row.node is None else one_line(str(row.node))
    return row


def _not_in_flight(
    db: Database, specs: Sequence[JobSpec], backends: Backends
) -> tuple[list[Outcome | None], list[int]]:
    """The in-flight rule, against the laptop's history: those outcomes, and the indexes left to send."""
    from . import submission

    running = submission.in_flight_many(db, specs, backends)
    outcomes: list[Outcome | None] = [
        submission.InFlight(running[i]) if i in running else None for i in range(len(specs))
    ]
    return outcomes, [i for i, o in enumerate(outcomes) if o is None]


def submit(
    db: Database,
    specs: Sequence[JobSpec],
    args: dict[str, Any],
    note: Callable[[str], None],
    backends: Backends,
) -> list[Outcome]:
    """Submit on the cluster what is not in flight here; store the rows it answers with."""
    from . import submission

    outcomes, todo = _not_in_flight(db, specs, backends)
    if todo:
        db.migrate()  # fail on a bad database before anything is submitted
        ids = [submission.new_id() for _ in todo]
        sent = {**args, "entries": [args["entries"][i] for i in todo], "ids": ids}
        agent = _backend(backends, specs[0]).agent(specs[0].profile.name)
        # Recorded before the request is sent (write-ahead): whatever happens to the answer (a
        # dropped connection, Ctrl-C, a malformed line), no job the cluster submits goes unrecorded.
        db.insert_many([_lost_row(specs[i], job_id, ids[0]) for i, job_id in zip(todo, ids, strict=True)])
        try:
            answer = agent.call("submit", sent)
            with agent.reading("submit"):
                notes = [one_line(str(line)) for line in answer["notes"]]
                if answer.get("partial") is not None:  # some arrays were submitted before one failed
                    done = [_confirmed(raw, set(ids), specs[0]) for raw in answer["partial"]]
                    failure: BfjobsError | None = ERROR_TYPES.get(str(answer.get("type")), ClusterError)(
                        f"on {agent.target.host}: {one_line(str(answer['error']))} "
                        f"({len(done)} job(s) of the list were submitted before it: see `bfjobs list`)"
                    )
                else:
                    failure = None
                    got = [
                        _outcome(raw, job_id, specs[i])
                        for i, job_id, raw in zip(todo, ids, answer["outcomes"], strict=True)
                    ]
        except (ConnectionLost, MalformedAnswer) as exc:
            raise type(exc)(
                f"{exc}; the cluster may have submitted job(s) {', '.join(ids[:5])}{' …' if len(ids) > 5 else ''}: "
                "`bfjobs status` asks it what became of them (nothing is submitted twice)"
            ) from None
        except BfjobsError:  # nothing was sent (unreachable), or the cluster refused before any sbatch
            db.replace_unconfirmed(ids, [])
            raise
        if failure is not None:
            db.replace_unconfirmed(ids, done)
            raise failure
        for line in notes:
            note(line)
        rows: list[JobRow] = []
        for index, outcome in zip(todo, got, strict=True):
            outcomes[index] = outcome
            if not isinstance(outcome, AlreadyPresent):
                rows.append(outcome)
        db.replace_unconfirmed(ids, rows)
    return [o for o in outcomes if o is not None]


def render(
    db: Database,
    specs: Sequence[JobSpec],
    args: dict[str, Any],
    note: Callable[[str], None],
    backends: Backends,
) -> tuple[list[Outcome | None], str | None]:
    """What the cluster would submit (its templates and settings), after the same checks."""
    outcomes, todo = _not_in_flight(db, specs, backends)
    if not todo:
        return outcomes, None
    sent = {**args, "entries": [args["entries"][i] for i in todo], "render": True}
    agent = _backend(backends, specs[0]).agent(specs[0].profile.name)
    answer = agent.call("submit", sent)
    with agent.reading("render"):
        notes = [one_line(str(line)) for line in answer["notes"]]
        for index, raw in zip(todo, answer["outcomes"], strict=True):
            if raw is not None and "present" in raw:
                outcomes[index] = _present(raw["present"])
        script = answer["script"]
        if script is not None and not isinstance(script, str):
            raise TypeError("script")
    for line in notes:
        note(line)
    return outcomes, script
