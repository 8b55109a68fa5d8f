"""Job tracking over a backend and the store: refresh, wait, cancel, end jobs that cannot start.

No scheduler specifics live here: each row's backend (:mod:`blackfish_jobs.backends`) surveys
its jobs in one call for all of them, and this module stores what changed (each change written
only if the row still has the state it was read with), runs the completion hook once per job,
and decides when a wait is over. One :class:`~blackfish_jobs.backends.Backends` per command
carries the backends' state between calls (a prestarted ``sacct``, a site without accounting);
every function here takes it as ``backends`` (a fresh one if None).

UNKNOWN ends ``wait`` but is not final in the DB: a later refresh that learns more replaces it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

from .backends import Backends
from .backends.base import Observation, Survey
from .errors import ClusterError
from .states import CANCELLED, COMPLETED, ENDED, FINISHED, PENDING, UNKNOWN, cannot_start
from .store import Database, JobRow, utcnow


def survey(rows: Sequence[JobRow], backends: Backends, *, verify: bool = False, reasons: bool = False) -> Survey:
    """One survey per backend among ``rows`` (each one call for all its jobs), merged."""
    merged = Survey()
    by_backend = sorted(rows, key=lambda r: r.backend)
    for name, group in groupby(by_backend, key=lambda r: r.backend):
        found = backends.named(name).survey(list(group), verify=verify, reasons=reasons)
        merged.observed.update(found.observed)
        merged.problems.extend(found.problems)
        merged.reason_seen |= found.reason_seen
    return merged


# ------------------------------------------------------------------------ refresh


@dataclass
class Refreshed:
    """The fresh rows of a refresh, why some could not be observed (one line each), the ids of
    the jobs the scheduler no longer knows at all (see ``Observation.gone``), and the ids whose
    pending reason the scheduler itself gave in this refresh (``Survey.reason_seen``)."""

    rows: list[JobRow]
    problems: list[str]
    gone: set[str] = field(default_factory=set)
    reason_seen: set[str] = field(default_factory=set)


def reload(db: Database, ids: Sequence[str]) -> list[JobRow]:
    """Rows by bfjobs id, in the given order, with one query (another process may have moved them)."""
    unique = list(dict.fromkeys(ids))
    by_id = {r.id: r for r in db.get_many(unique)}
    return [by_id[i] for i in unique if i in by_id]


def refresh_report(
    db: Database,
    rows: Sequence[JobRow],
    backends: Backends | None = None,
    *,
    verify: bool = False,
    reasons: bool = False,
) -> Refreshed:
    """Refresh the rows not finished yet (one scheduler query per backend), store changes, report problems.

    Each change is written only if the row still has the state it was read with, so two
    processes refreshing at once never both record (and post-process) the same transition.
    ``verify`` and ``reasons``: see :meth:`Backend.survey <blackfish_jobs.backends.base.Backend.survey>`.
    """
    backends = backends or Backends()
    found = survey([r for r in rows if r.state not in FINISHED], backends, verify=verify, reasons=reasons)
    now = utcnow()
    changes: list[tuple[JobRow, dict[str, Any]]] = []
    observed = found.observed
    for row in rows:
        obs = observed.get(row.id)
        if obs is None or not obs.known or obs.as_stored:
            continue
        node = obs.node or row.node
        learnt = obs.native_id is not None and row.native_id is None  # never replaces a confirmed id
        # (a row's result is decoded only if the observation brings one: most rows are unchanged)
        if (
            obs.state == row.state
            and node == row.node
            and obs.reason == row.reason
            and (obs.result is None or obs.result == row.result)
            and not learnt
        ):
            if obs.touch:
                changes.append((row, {"updated_at": now}))
            continue
        values: dict[str, Any] = {"state": obs.state, "node": node, "reason": obs.reason, "updated_at": now}
        if learnt:
            values["native_id"] = obs.native_id
            if obs.folder is not None:
                values["folder"] = obs.folder
        if obs.result is not None:
            values["result"] = obs.result
        if obs.state in ENDED and (row.state not in ENDED or row.ended_at is None):
            values["ended_at"] = now
        changes.append((row, values))
    applied = db.update_many([(row.id, row.state, values) for row, values in changes])
    moved = [row.id for row, _ in changes if row.id not in applied]
    others = {r.id: r for r in reload(db, moved)}  # changed by another process meanwhile
    for row, values in changes:
        if row.id not in applied:
            continue
        for key, value in values.items():
            setattr(row, key, value)
        if "state" in values and row.state == COMPLETED:
            on_completed(db, row)
    gone = {job_id for job_id, obs in found.observed.items() if obs.gone}
    shown = [others.get(r.id, r) for r in rows] if others else list(rows)
    return Refreshed(shown, found.problems, gone, found.reason_seen)


def refresh(
    db: Database,
    rows: Sequence[JobRow],
    backends: Backends | None = None,
    *,
    verify: bool = False,
    reasons: bool = False,
) -> list[JobRow]:
    """Refresh unfinished ``rows`` (one scheduler query for all), store changes, return fresh rows."""
    return refresh_report(db, rows, backends, verify=verify, reasons=reasons).rows


def _store(db: Database, row: JobRow, values: dict[str, Any]) -> JobRow:
    """One job's change, written only if the row still has the state it was read with (as
    :func:`refresh_report` does for many): the updated row, or the row as another process left it.
    The row object gets the new ``updated_at`` too, as the stored row does: a changed row always
    carries a new stamp (the CLI's job tables tell changed rows by it)."""
    values = {"updated_at": utcnow(), **values}
    if not db.update_many([(row.id, row.state, values)]):
        return reload(db, [row.id])[0]
    for key, value in values.items():
        setattr(row, key, value)
    if row.state == COMPLETED:
        on_completed(db, row)
    return row


def on_completed(db: Database, row: JobRow) -> None:
    """Work that follows a successful job, once, when its result is first collected (its kind's
    hook: a download registers in Blackfish's model table)."""
    from . import kinds

    kinds.get(row.kind).on_completed(db, row)


def store_observation(db: Database, row: JobRow, obs: Observation) -> JobRow:
    """Store what a backend concluded about one ended job (as a refresh would)."""
    values: dict[str, Any] = {"state": obs.state, "node": obs.node, "reason": obs.reason, "ended_at": utcnow()}
    if obs.result is not None:
        values["result"] = obs.result
    return _store(db, row, values)


# ------------------------------------------------------------------------ jobs that cannot start


class Unstartable:
    """Ends the jobs that two refreshes in a row find pending for a reason that never clears.

    Such a job would stay queued behind the user's back and keep ``wait`` going for ever; the
    second sighting guards against a reason seen only for a moment. Only a reason the scheduler
    gave in that very refresh counts as a sighting (a row left as it was, say while the
    controller is unreachable, does not). ``wait`` and ``logs --follow`` pass each refresh
    through :meth:`end`.
    """

    def __init__(self, db: Database, backends: Backends | None = None) -> None:
        self.db, self.backends = db, backends or Backends()
        self.seen: set[str] = set()

    def end(self, report: Refreshed) -> list[JobRow]:
        """The report's rows, with those confirmed unable to start cancelled (see :func:`end_unstartable`)."""
        rows = report.rows
        doomed = [r for r in rows if r.state == PENDING and r.id in report.reason_seen and cannot_start(r.reason)]
        confirmed = [r for r in doomed if r.id in self.seen]
        self.seen = {r.id for r in doomed}
        if not confirmed:
            return rows
        ended = {r.id: r for r in end_unstartable(self.db, confirmed, self.backends)}
        return [ended.get(r.id, r) for r in rows]


def end_unstartable(db: Database, rows: Sequence[JobRow], backends: Backends | None = None) -> list[JobRow]:
    """Cancel pending jobs that can never start and record them CANCELLED with the reason
    ``cannot start: <scheduler's reason>: <what to change>``.

    Each backend cancels its own in one request and says which really ended; only those are
    stored CANCELLED, the others stay as they are for the next refresh. Refused ids are named in
    one error at the end.
    """
    backends = backends or Backends()
    ended: list[JobRow] = []
    failed: list[str] = []
    by_backend = sorted(rows, key=lambda r: r.backend)
    for name, group in groupby(by_backend, key=lambda r: r.backend):
        mine = list(group)
        reasons, refused = backends.named(name).end_unstartable(mine)
        failed += refused
        for row in mine:
            if row.id in reasons:
                values = {"state": CANCELLED, "reason": reasons[row.id], "ended_at": utcnow()}
                ended.append(_store(db, row, values))
    if failed:
        raise ClusterError(failed[0] + (f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""))
    order = {r.id: i for i, r in enumerate(rows)}
    return sorted(ended, key=lambda r: order[r.id])


# ------------------------------------------------------------------------ wait


def wait(
    db: Database,
    ids: Sequence[str],
    *,
    timeout: float | None = None,
    on_tick: Callable[[list[JobRow], float], None] | None = None,
    backends: Backends | None = None,
    first_delay: float = 1.0,
    max_delay: float = 30.0,
    verify_every: float = 300.0,
    give_up_after: float = 900.0,
    on_problems: Callable[[list[str]], None] | None = None,
) -> list[JobRow]:
    """Poll with back-off until every job has ended (or ``timeout`` seconds have passed).

    It always ends: jobs the scheduler forgot become UNKNOWN, records that call a job live are
    checked against the scheduler every ``verify_every`` seconds, and when it cannot be asked at
    all for ``give_up_after`` seconds it raises ClusterError. When every job's backend has its
    own poll interval (local jobs: a look at /proc and a folder), that one is used.
    ``on_problems`` hears each poll's problems (none: the scheduler answered).
    """
    backends = backends or Backends()
    started = time.monotonic()
    job_ids = list(dict.fromkeys(row.id for ref in ids for row in db.resolve_many(ref)))
    delay = first_delay
    last_verify = started
    blind_since: float | None = None
    first = True
    unstartable = Unstartable(db, backends)
    while True:
        now = time.monotonic()
        verify = now - last_verify >= verify_every
        if verify:
            last_verify = now
        report = refresh_report(db, reload(db, job_ids), backends, verify=verify, reasons=True)
        rows = unstartable.end(report)
        elapsed = time.monotonic() - started
        if on_tick:
            on_tick(rows, elapsed)
        if on_problems:
            on_problems(report.problems)
        if all(r.state in ENDED for r in rows):
            return rows
        if first:
            own = [backends.of(r).poll_delays for r in rows]
            if own and all(own):
                delay = min(delay, min(d[0] for d in own if d))
                max_delay = min(max_delay, max(d[1] for d in own if d))
        first = False
        if report.problems:
            blind_since = now if blind_since is None else blind_since
            if now - blind_since >= give_up_after:
                raise ClusterError(f"gave up after {give_up_after:g} s without an answer: {report.problems[0]}")
        else:
            blind_since = None
        if timeout is not None and elapsed >= timeout:
            return rows
        pause = delay if timeout is None else min(delay, max(0.0, timeout - elapsed))
        time.sleep(pause)
        delay = min(max_delay, delay * 1.5)


# ------------------------------------------------------------------------ cancel


@dataclass
class CancelOutcome:
    """What ``cancel`` did for one job: ``row`` is its state afterwards."""

    row: JobRow
    action: str  # "cancelled", "requested" (the scheduler not done yet), "already ended", "refused"
    message: str | None = None


def cancel(
    db: Database,
    rows: Sequence[JobRow],
    backends: Backends | None = None,
    *,
    confirm_s: float = 15.0,
    local_grace_s: float = 20.0,
) -> list[CancelOutcome]:
    """Cancel jobs: one request per backend for all its jobs.

    Jobs are refreshed first (one query), so a job already over — or a scheduler id that is no
    longer ours — is never signalled. The task removes its partial file on SIGTERM; the DB says
    CANCELLED once the scheduler does (polled for up to ``confirm_s`` seconds, controller first);
    a backend that ends its jobs itself (local) says how they ended at once.
    """
    backends = backends or Backends()
    unique = list({r.id: r for r in rows}.values())
    fresh = refresh(db, unique, backends)
    outcomes: dict[str, CancelOutcome] = {}
    live: list[JobRow] = []
    for row in fresh:
        if row.state in FINISHED:
            outcomes[row.id] = CancelOutcome(row, "already ended")
        elif row.state == UNKNOWN:
            outcomes[row.id] = CancelOutcome(row, "refused", "Slurm no longer knows this job; nothing to cancel")
        else:
            live.append(row)
    asked: list[JobRow] = []
    for name, group in groupby(sorted(live, key=lambda r: r.backend), key=lambda r: r.backend):
        mine = list(group)
        request = backends.named(name).cancel(mine, grace_s=local_grace_s)
        for row in mine:
            if row.id in request.refused:
                outcomes[row.id] = CancelOutcome(row, "refused", request.refused[row.id])
            elif row.id in request.settled:
                obs = request.settled[row.id]
                action = "cancelled" if obs.state == CANCELLED else "already ended"
                outcomes[row.id] = CancelOutcome(store_observation(db, row, obs), action)
            else:
                asked.append(row)
    deadline = time.monotonic() + confirm_s
    delay = 0.3
    pending = asked
    while pending:
        time.sleep(delay)
        report = refresh_report(db, reload(db, [r.id for r in pending]), backends, verify=True)
        done = [_dropped(db, r) if r.id in report.gone and r.state not in FINISHED else r for r in report.rows]
        for row in done:
            if row.state in ENDED:
                outcomes[row.id] = CancelOutcome(row, "cancelled" if row.state == CANCELLED else "already ended")
        pending = [r for r in done if r.state not in ENDED]
        if time.monotonic() + delay > deadline:
            break
        delay = min(2.0, delay * 1.5)
    for row in pending:
        outcomes[row.id] = CancelOutcome(row, "requested", f"Slurm still says {row.state}")
    return [outcomes[r.id] for r in fresh]


def _dropped(db: Database, row: JobRow) -> JobRow:
    """A job our cancel removed that the scheduler then forgot at once: CANCELLED, not "missing".

    Slurm keeps no trace of a pending job array element cancelled before it was split off
    (neither ``squeue -t all`` nor ``sacct`` lists it), so the refresh alone would say PENDING
    until the grace period ends, then UNKNOWN (at once for an element pending longer).
    """
    if row.node is None:
        reason = "cancelled before it started (Slurm dropped the pending job)"
    else:
        reason = "cancelled; Slurm no longer knows the job and it wrote no result"
    return _store(db, row, {"state": CANCELLED, "reason": reason, "ended_at": utcnow()})
