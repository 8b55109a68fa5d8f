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
from ..errors import ConnectionLost
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
    resolved = kinds.resolve_settings(spec.profile.name, spec.kind, flags=flags)
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


def _lost_row(spec: JobSpec, job_id: str, siblings: list[str], why: str) -> JobRow:
    """A job the cluster may have submitted when the connection broke: recorded so that the next
    refresh asks the cluster (its folder says: :func:`.cluster._recover`); ``siblings``: the ids of
    the same list, whose folders an array element's may be."""
    from ..states import PENDING
    from ..store import JobRow, utcnow
    from .submission import _user

    now = utcnow()
    request = {**spec.request_record(), **({"submission": siblings} if siblings else {})}
    return JobRow(
        id=job_id,
        kind=spec.kind,
        profile=spec.profile.name,
        backend="remote",
        native_id=None,
        state=PENDING,
        reason=f"submission unconfirmed: {why}",
        folder=str(spec.profile.jobs_dir / job_id),
        target=str(spec.target),
        request=request,
        result=None,
        node=None,
        user=_user(),
        submitted_at=now,
        ended_at=None,
        updated_at=now,
        location=spec.where,
    )


def _present(raw: dict[str, Any]) -> AlreadyPresent:
    return AlreadyPresent(**{**raw, "path": Path(raw["path"])})


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
    from .cluster import decode_rows

    outcomes, todo = _not_in_flight(db, specs, backends)
    if todo:
        db.migrate()  # fail on a bad database before anything is submitted
        ids = [submission.new_id() for _ in todo]
        sent = {**args, "entries": [args["entries"][i] for i in todo], "ids": ids}
        try:
            answer = _backend(backends, specs[0]).agent(specs[0].profile.name).call("submit", sent)
        except ConnectionLost as exc:
            siblings = ids if args["many"] else []
            lost = [_lost_row(specs[i], job_id, siblings, str(exc)) for i, job_id in zip(todo, ids, strict=True)]
            db.insert_many(lost)
            raise ConnectionLost(
                f"{exc}; the cluster may have submitted job(s) {', '.join(ids[:5])}{' …' if len(ids) > 5 else ''}: "
                "`bfjobs status` asks it what became of them (nothing is submitted twice)"
            ) from None
        for line in answer["notes"]:
            note(line)
        rows: list[JobRow] = []
        for index, raw in zip(todo, answer["outcomes"], strict=True):
            if "present" in raw:
                outcomes[index] = _present(raw["present"])
            else:
                [row] = decode_rows([raw["row"]])
                row.backend = "remote"
                row.profile = specs[0].profile.name
                rows.append(row)
                outcomes[index] = row
        db.insert_many(rows)
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
    answer = _backend(backends, specs[0]).agent(specs[0].profile.name).call("submit", sent)
    for line in answer["notes"]:
        note(line)
    for index, raw in zip(todo, answer["outcomes"], strict=True):
        if raw is not None and "present" in raw:
            outcomes[index] = _present(raw["present"])
    return outcomes, answer["script"]
