"""The Slurm backend: sbatch through submitit, and one ``sacct`` (at most one ``squeue``) per survey.

How a survey of Slurm jobs decides:

1. ``sacct`` (bounded by the oldest submit time, each record checked against its job's own
   submit time) gives the state of every job accounting knows.
2. Jobs it does not list (too new for accounting, or no accounting at all: ``sacct`` failed or
   says it is disabled) are asked of ``squeue -t all`` in one call; the controller also keeps
   finished jobs for ``MinJobAge`` seconds.
3. A finished job is settled against its own result file (``COMPLETED`` whose result is an
   error is FAILED with the error as reason; no result gives the log tail as reason).
4. A job neither knows: its result file decides; without one it is UNKNOWN, with the reason,
   once it is older than a grace period (it cannot be "too new" any more). If ``squeue`` itself
   failed nothing is concluded and the survey reports the problem instead.
5. NODE_FAIL and PREEMPTED from accounting are confirmed with the controller in that same
   ``squeue`` call: Slurm requeues such a job when it can, and the controller then already
   calls it PENDING again, while accounting may still show the failed run for a moment.
6. Pending reasons: accounting keeps the reason it recorded at submit ("None", or "JobHeldUser")
   while the controller's is current, and a reason that never clears (:mod:`.reasons`) is what
   ends such a job. The controller is asked for them in that same ``squeue`` call only where
   it pays: always when the caller acts on reasons (``wait``, ``logs --follow``); otherwise
   (``status``) only for a pending job with no reason known yet, or whose row was last confirmed
   more than :data:`REASON_TTL` ago. Otherwise the stored reason stands: a ``status`` over a long
   queue makes one ``sacct`` call and no ``squeue``, and a job that can never start is still
   shown as such within a refresh or two. If the controller does not answer, or does not list
   the job, accounting's word stands.

UNKNOWN ends ``wait`` but is not final in the DB: a later refresh that learns more (accounting
back, a result file that appears late on a shared filesystem) replaces it.
"""

from __future__ import annotations

import functools
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from ..errors import ClusterError, ConfigError
from ..states import (
    CANCELLED,
    CANNOT_START,
    COMPLETED,
    FINISHED,
    MAY_BE_REQUEUED,
    PENDING,
    RUNNING,
    UNKNOWN,
    State,
    cannot_start,
    from_slurm,
    reason_word,
)
from . import reasons, slurmcli, slurmcmd
from .base import Backend, CancelRequest, Check, Observation, Submitted, Survey, Task
from .folder import one_line, read_result, settle

if TYPE_CHECKING:
    from ..specs import JobSpec
    from ..store import JobRow

#: A job Slurm does not know yet may be this new before it counts as vanished (sacct lag,
#: a controller restarting); also the clock skew allowed between login node and controller.
GRACE = timedelta(seconds=60)
SKEW = slurmcmd.CLOCK_SKEW
#: A job Slurm calls COMPLETED may be this long without a visible result file (shared
#: filesystems cache directory entries) before it counts as "ended without a result".
RESULT_GRACE = timedelta(seconds=30)
#: How long a pending job's stored reason is trusted by a survey that does not act on reasons.
REASON_TTL = timedelta(minutes=5)
#: Accounting a site does not have is not asked again by the same backend for this long (a wait
#: loop would otherwise start a failing sacct on every poll).
NO_ACCOUNTING_TTL_S = 600.0

#: What submitting to Slurm needs on PATH: sbatch submits, submitit's SlurmExecutor requires srun.
SLURM_CLIENTS = ("sbatch", "srun")


@dataclass
class _Asked:
    """What the Slurm calls of one survey said overall."""

    accounting_error: slurmcli.AccountingUnavailable | None = None
    queue_asked: set[str] = field(default_factory=set)
    stale: set[str] = field(default_factory=set)  # accounting says live, the controller does not know it


class SlurmBackend(Backend):
    """Slurm through its client commands; ``runner`` runs them (tests pass a fake), ``prestarted``
    is a call ``bfjobs status`` started before the CLI was loaded (collected by the first
    identical call)."""

    name: ClassVar[str] = slurmcmd.BACKEND
    uses_script: ClassVar[bool] = True
    submits_arrays: ClassVar[bool] = True

    def __init__(self, runner: slurmcmd.Runner | None = None, prestarted: slurmcmd.Prestarted | None = None) -> None:
        self.runner = runner or slurmcmd.run
        self.prestarted = prestarted
        self._no_accounting: tuple[float, str] | None = None

    def run(self, argv: list[str]) -> str:
        """One Slurm client call: the prestarted one if it is this very command, else the runner."""
        early = self.prestarted
        if early is not None and early.argv == argv and not early.used:
            self.prestarted = None
            return early.collect()
        return self.runner(argv)

    def close(self) -> None:
        """Kill a prestarted call nobody asked for (the jobs changed meanwhile)."""
        if self.prestarted is not None:
            self.prestarted.discard()
            self.prestarted = None

    # ------------------------------------------------------------------ submit

    @classmethod
    def builtin_reason(cls) -> str:
        return "sbatch is on PATH: jobs are submitted to Slurm from this host"

    def require_clients(self, spec: JobSpec) -> None:
        """A Slurm profile on a host without Slurm's commands: one clear line (exit 2), nothing written."""
        from .. import constants

        missing = [command for command in SLURM_CLIENTS if constants.which(command) is None]
        if missing:
            raise ConfigError(
                f"profile {spec.profile.name!r} submits to Slurm, but {' and '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} not on PATH: run bfjobs on a login node of the "
                "cluster (or load its Slurm module), or choose a local profile"
            )

    def checks(self, profile_name: str, wanted: dict[str, set[str]]) -> list[Check]:
        """Slurm's commands on PATH; the settings' partitions among those this user may submit to
        (one ``sinfo``) and QOS among those their associations allow (one ``sacctmgr``): each
        asked once, and only when a setting names one."""
        from .. import constants

        needed = (*SLURM_CLIENTS, "squeue", "sacct", "scancel", "sinfo")
        missing = [c for c in needed if constants.which(c) is None]
        found = [
            Check("slurm commands", "ok", f"{', '.join(needed)} on PATH")
            if not missing
            else Check(
                "slurm commands", "fail", f"{', '.join(missing)} not on PATH",
                f"profile {profile_name!r} submits to Slurm: run bfjobs on a login node of the cluster (or load "
                "its Slurm module), or choose a local profile",
            )
        ]
        for key in ("partition", "qos"):
            values = sorted(wanted.get(key, ()))
            if not values:
                found.append(Check(key, "ok", f"none set: Slurm's default {key} is used"))
            elif key == "partition":
                found.append(_listed(key, values, slurmcli.partitions(self.run), "partitions here",
                                     "set partition (bfjobs.toml or --partition) to one of them"))
            else:
                found.append(self._qos_check(values))
        return found

    def _qos_check(self, values: list[str]) -> Check:
        """May this user submit with these QOS? Their associations say (one ``sacctmgr``): a QOS
        that exists but is not theirs is refused at submit just as one that does not exist."""
        import os
        import pwd

        try:
            user = pwd.getpwuid(os.geteuid()).pw_name
        except KeyError:
            return Check("qos", "warn", f"{', '.join(values)}: no user name for uid {os.geteuid()} to ask Slurm about")
        allowed = slurmcli.user_qos(user, self.run)
        if allowed == []:  # accounting answered: no association of this user's
            return Check("qos", "warn", f"{', '.join(values)}: Slurm's accounting has no association for {user}",
                         f"ask the site to add {user} to a Slurm account (sacctmgr add user)")
        return _listed("qos", values, allowed, f"QOS {user}'s Slurm associations allow",
                       "set qos (bfjobs.toml or --qos) to one of them, or ask the site to add it to your association")

    def submit(self, spec: JobSpec, job_folder: Path, script: str | None, task: Task) -> Submitted:
        from . import executors

        if script is None:
            raise ClusterError("internal: a Slurm job needs its rendered script")
        executor = executors.TemplatedSlurmExecutor(job_folder, spec, script)
        with executors.submission_errors("the job"):
            job = executor.submit(task, spec.task)
        return Submitted(self.name, str(job.job_id), PENDING, None)

    def submit_array(self, specs: Sequence[JobSpec], job_folder: Path, script: str, task: Task) -> list[Submitted]:
        """ONE Slurm job array, one sbatch call: element ``i`` is Slurm job ``<array id>_<i>``,
        with its own submitted pickle and result file in ``job_folder``."""
        import functools

        from . import executors

        executor = executors.TemplatedSlurmExecutor(job_folder, specs[0], script, elements=specs)
        with executors.submission_errors("the job array"):
            jobs = executor.submit_array([functools.partial(task, spec.task) for spec in specs])
        return [Submitted(self.name, str(job.job_id), PENDING, None) for job in jobs]

    # ------------------------------------------------------------------ survey

    def survey(self, rows: Sequence[JobRow], *, verify: bool = False, reasons: bool = False) -> Survey:
        """Observations with one ``sacct`` and at most one ``squeue`` call (see the module docstring).

        What each row needs from the answer is worked out before ``sacct`` is asked (``status``'
        call is usually still running then, started by the entry point): at 10,000 live jobs that
        is a third of the survey, done while the process would otherwise wait.
        """
        done = Survey()
        if not rows:
            return done
        asked = _Asked()
        # each row's record must be submitted no earlier than the row (less skew); a pending row
        # whose stored reason was confirmed within REASON_TTL keeps it (_reason_due judges the
        # others, against the time after sacct answered: a TTL ending during the call counts next time)
        confirmed_since = _utcnow() - REASON_TTL
        plan = [
            (
                row,
                row.native_id,
                row.submitted_at - SKEW,
                row.state == UNKNOWN,
                row.state == PENDING
                and row.reason is not None
                and row.updated_at is not None
                and row.updated_at > confirmed_since,
            )
            for row in rows
        ]
        accounting: dict[str, list[slurmcli.Record]] | None = None
        memo = self._no_accounting
        if memo and time.monotonic() - memo[0] < NO_ACCOUNTING_TTL_S:
            asked.accounting_error = slurmcli.AccountingUnavailable(memo[1], disabled=True)
        else:
            since = slurmcmd.sacct_since(r.submitted_at for r in rows)
            try:
                accounting = slurmcli.sacct([r.native_id or "" for r in rows], since, self.run)
            except slurmcli.AccountingUnavailable as exc:
                asked.accounting_error = exc
                if exc.disabled:
                    self._no_accounting = (time.monotonic(), str(exc))
        now = _utcnow()
        found: dict[str, slurmcli.Record] = {}
        ask_queue: list[JobRow] = []
        reason_only: set[str] = set()  # pending in accounting: the controller is asked for the reason alone
        reason_stands: set[str] = set()  # pending rows whose reason squeue could not give: the stored one
        as_stored: dict[str, Observation] = {}  # one per stored reason (observations are immutable)
        rest: list[JobRow] = []  # the rows not decided in this first pass, in order
        for row, sid, floor, unknown, fresh in plan:
            records = accounting.get(sid) if accounting is not None and sid else None
            if not records:
                record = None
            elif len(records) == 1 and not unknown:  # _match's answer for one record, inline
                record = records[0] if records[0].submit is None or records[0].submit >= floor else None
            else:
                record = _match(row, records)
            if record is None:
                rest.append(row)
                if sid:
                    ask_queue.append(row)
                continue
            state = from_slurm(record.raw_state)
            if _ask_controller(state, verify):
                ask_queue.append(row)
            elif state == PENDING:
                if reasons or (not fresh and _reason_due(row, record, now)):
                    ask_queue.append(row)
                    reason_only.add(row.id)
                elif row.state == PENDING and row.reason is not None and record.node is None:
                    # the common case of a long queue: as stored, decided now
                    reason = row.reason
                    obs = as_stored.get(reason)
                    if obs is None:
                        obs = as_stored[reason] = Observation(PENDING, None, reason, as_stored=True)
                    done.observed[row.id] = obs
                    continue
            found[row.id] = record
            rest.append(row)
        if ask_queue:
            try:
                queue = slurmcli.squeue([r.native_id or "" for r in ask_queue], self.run)
            except slurmcli.SlurmUnavailable as exc:
                needed = sum(r.id not in reason_only for r in ask_queue)  # accounting answered for the rest
                if needed:
                    done.problems.append(f"cannot ask Slurm about {needed} job(s): {exc}")
                reason_stands.update(
                    r.id for r in ask_queue if r.id in reason_only and r.state == PENDING and r.reason is not None
                )
            else:
                for row in ask_queue:
                    asked.queue_asked.add(row.id)
                    record = _match(row, [queue[row.native_id]] if row.native_id in queue else [])
                    if record is not None:
                        found[row.id] = record  # the controller's view is the freshest
                        done.reason_seen.add(row.id)
                    elif row.id in reason_only:
                        pass  # accounting's word stands (only ``verify`` judges such a record stale)
                    elif row.id in found and from_slurm(found[row.id].raw_state) not in FINISHED:
                        asked.stale.add(row.id)  # accounting calls it live; the controller does not know it
                        del found[row.id]
        observed = done.observed
        for row in rest:
            record = found.get(row.id)
            if record is None:
                observed[row.id] = _vanished(row, asked, now)
                continue
            if row.id in reason_stands and record.node is None:  # accounting's submit-time reason is older
                observed[row.id] = Observation(PENDING, None, row.reason)
                continue
            obs = _from_record(row, record, now)
            if obs.state == PENDING and row.id in done.reason_seen and _stale(row, now):
                obs = obs._replace(touch=True)  # confirmed now: trusted for another REASON_TTL
            observed[row.id] = obs
        return done

    # ------------------------------------------------------------------ cancel

    def cancel(self, rows: Sequence[JobRow], *, grace_s: float = 20.0) -> CancelRequest:
        """One ``scancel`` for all; the caller confirms with later surveys."""
        try:
            refused = slurmcli.scancel([r.native_id or "" for r in rows], self.run)
        except slurmcli.SlurmUnavailable as exc:
            raise ClusterError(f"scancel failed: {exc}") from None
        return CancelRequest(refused={r.id: refused[r.native_id or ""] for r in rows if r.native_id in refused})

    def end_unstartable(self, rows: Sequence[JobRow]) -> tuple[dict[str, str], list[str]]:
        """Cancel pending jobs that can never start: reasons ``cannot start: <Slurm's reason>: <what
        to change>`` (:func:`reasons.explain`) for those the controller then calls cancelled or gone.

        One ``scancel --state=PENDING`` (a job that started meanwhile is left running), then one
        ``squeue`` whose answer both says which are really gone or cancelled and what each asked
        for (the advice); only those are ended, the others stay as they are for the next refresh.
        """
        why = {r.id: cannot_start(r.reason) or "" for r in rows}
        ids = [r.native_id or "" for r in rows]
        try:
            refused = slurmcli.scancel(ids, self.run, pending_only=True)
        except slurmcli.SlurmUnavailable as exc:
            raise ClusterError(f"could not cancel jobs that cannot start ({', '.join(ids)}): {exc}") from None
        live = reasons.ask_jobs(ids, self.run)
        advice = reasons.explain([(sid, why[r.id]) for sid, r in zip(ids, rows, strict=True)], live or {}, self.run)
        ended: dict[str, str] = {}
        failed: list[str] = []
        for row, sid in zip(rows, ids, strict=True):
            reason = f"{CANNOT_START}{why[row.id]}: {advice.get(sid, 'change the request')}"
            if sid in refused:
                failed.append(f"job {row.id} (Slurm job {sid}) {reason}; scancel failed: {refused[sid]}")
                continue
            if live is None:
                continue  # unknown: store nothing now, the next refresh decides
            job = live.get(sid)
            if job is not None and not job.state.startswith(CANCELLED):
                continue  # still pending or started meanwhile: not ours to call cancelled
            ended[row.id] = one_line(reason)
        return ended, failed


def _utcnow() -> datetime:
    """Now as naive UTC, as the DB stores times."""
    return datetime.now(UTC).replace(tzinfo=None)


def _stale(row: JobRow, now: datetime) -> bool:
    """Was this row last confirmed more than :data:`REASON_TTL` ago?"""
    return row.updated_at is None or now - row.updated_at >= REASON_TTL


def _reason_due(row: JobRow, record: slurmcli.Record, now: datetime) -> bool:
    """Should a survey that does not act on reasons ask the controller for this pending job's?

    Yes while none is known (neither stored nor in accounting), or once the stored one is older
    than :data:`REASON_TTL`; a confirmed reason is stamped (``touch``) so it is not asked again
    on every ``status``.
    """
    if row.state != PENDING:
        return record.reason is None
    if row.reason is None:
        return record.reason is None
    return _stale(row, now)


def _end_detail(record: slurmcli.Record) -> str | None:
    """How Slurm says a job ended, in words: "by uid 0", "exit code 137 (SIGKILL?)"."""
    parts: list[str] = []
    words = record.raw_state.split()
    if len(words) >= 3 and words[1] == "by":
        parts.append(f"by uid {words[2]}")
    if record.exit_code and ":" in record.exit_code:
        code, _, sig = record.exit_code.partition(":")
        if sig.isdigit() and int(sig):
            parts.append(f"killed by signal {sig}{_signame(int(sig))}")
        elif code.isdigit() and int(code):
            text = f"exit code {code}"
            if 128 < int(code) < 160:
                text += f" (128+{int(code) - 128}{_signame(int(code) - 128)}?)"
            parts.append(text)
    if record.reason and words and words[0] not in ("COMPLETED", "CANCELLED"):
        parts.append(f"Slurm reason {record.reason}")
    return ", ".join(parts) or None


def _signame(number: int) -> str:
    try:
        return f" = {signal.Signals(number).name}"
    except ValueError:
        return ""


def _match(row: JobRow, records: Sequence[slurmcli.Record]) -> slurmcli.Record | None:
    """The record that is this job's: submitted no earlier than the job (less clock skew).

    A requeued job gets a new submit time, so there is no upper bound — except for a job we
    already call UNKNOWN: a much newer record under its id is another job reusing the id.
    Records come oldest first: the newest that fits wins.
    """
    floor = row.submitted_at - SKEW
    ceiling = row.submitted_at + SKEW if row.state == UNKNOWN else None
    for r in reversed(records):
        if r.submit is None:
            if ceiling is None:
                return r
        elif r.submit >= floor and (ceiling is None or r.submit <= ceiling):
            return r
    return None


def _ask_controller(state: State, verify: bool) -> bool:
    """Does an accounting record in this state need the controller's word too (see the module docstring)?"""
    return state in MAY_BE_REQUEUED or (verify and state not in FINISHED)


def _from_record(row: JobRow, record: slurmcli.Record, now: datetime) -> Observation:
    state = from_slurm(record.raw_state)
    node = record.node or row.node
    if state == UNKNOWN:  # a Slurm state we have no word for: keep polling, say what Slurm said
        keep = row.state if row.state in (PENDING, RUNNING) else RUNNING
        return Observation(keep, node, one_line(f"Slurm state {record.raw_state}"))
    if state == PENDING and record.source == "sacct" and (record.node or row.state == RUNNING):
        # accounting lags the controller: it records the allocation before the state, and a job
        # the controller already called RUNNING does not go back to PENDING on sacct's word
        state = RUNNING
    if state == PENDING:
        return Observation(PENDING, record.node, _pending_reason(record.reason))
    if state not in FINISHED:
        return Observation(state, node)
    outcome = read_result(row)
    if state == COMPLETED and outcome is None and record.end and now - record.end < RESULT_GRACE:
        return Observation(row.state, row.node, row.reason, known=False)  # the result may still be in flight
    return settle(row, state, outcome, record.node if state == CANCELLED else node, _end_detail(record))


@functools.lru_cache(maxsize=1024)
def _pending_reason(reason: str | None) -> str | None:
    """Slurm's reason, marked ``cannot start: <reason>`` when it never clears by itself (a
    queue's jobs share a few reasons: each is judged once)."""
    return f"{CANNOT_START}{reason_word(reason)}" if reasons.never_clears(reason) else reason


def _vanished(row: JobRow, asked: _Asked, now: datetime) -> Observation:
    """Neither accounting nor the controller knows the job: its folder, else UNKNOWN."""
    from ..states import FAILED

    outcome = read_result(row)
    if outcome is not None:
        return settle(row, COMPLETED if outcome[0] == "success" else FAILED, outcome, row.node)
    keep = Observation(row.state, row.node, row.reason, known=False)
    if not row.native_id:
        return Observation(UNKNOWN, row.node, "no Slurm job id was recorded for this job")
    sid = row.native_id
    if row.id not in asked.queue_asked:  # squeue failed: nothing can be concluded now
        return keep
    if now - row.submitted_at < GRACE:  # too new to be missing (accounting lag, a controller coming back)
        return Observation(row.state, row.node, row.reason, known=False, gone=True)
    if row.id in asked.stale:
        reason = (
            f"accounting still calls Slurm job {sid} live but the controller no longer knows it "
            "(an unclosed accounting record), and it wrote no result"
        )
    elif asked.accounting_error is None:
        reason = f"Slurm job {sid} is known neither to accounting nor to the controller, and wrote no result"
    else:
        reason = (
            f"no accounting ({asked.accounting_error}); the controller no longer knows Slurm job {sid} "
            "(ended more than MinJobAge ago, or lost), and it wrote no result"
        )
    return Observation(UNKNOWN, row.node, one_line(reason), gone=True)


def _listed(key: str, values: list[str], known: list[str] | None, what: str, fix: str) -> Check:
    """doctor's check that each of ``values`` is among the ``known`` ones Slurm listed (None: it could not)."""
    if known is None:
        return Check(key, "warn", f"{', '.join(values)}: Slurm could not list the {what}",
                     "check that the controller and accounting answer (sinfo, sacctmgr)")
    unknown = [v for v in values if v not in known]
    if unknown:
        return Check(key, "fail", f"{', '.join(unknown)} not among the {what} ({', '.join(known)})", fix)
    return Check(key, "ok", f"{', '.join(values)} ({what}: {', '.join(known)})")
