"""Tracker rules for what a real cluster cannot do on demand: a dead controller, a runaway
accounting record, a result file late on a shared filesystem, a reused Slurm id, scancel
refusals. Each fake here stands in for one Slurm client answer; the real path of every rule is
exercised in test_tracking.py and test_scale.py.
"""

from __future__ import annotations

import os
import pickle
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.rows import insert_rows, job_row

from blackfish_jobs import tracking
from blackfish_jobs.api import parse_since
from blackfish_jobs.backends import Backends, reasons
from blackfish_jobs.backends import slurmcli as slurm
from blackfish_jobs.backends.slurm import _end_detail
from blackfish_jobs.errors import ClusterError
from blackfish_jobs.states import from_slurm
from blackfish_jobs.store import Database, JobRow, utcnow

UNREACHABLE = "slurm_load_jobs error: Unable to contact slurm controller (connect failure)"


def epoch(moment: datetime) -> str:
    return str(int(moment.replace(tzinfo=UTC).timestamp()))


class FakeSlurm:
    """Answers sacct/squeue/scancel from tables; ``None`` means the command fails."""

    def __init__(self, sacct: list[str] | None = None, squeue: list[str] | None = None) -> None:
        self.sacct = sacct
        self.squeue = squeue
        self.scancel_stderr = ""
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str]) -> str:
        self.calls.append(argv)
        name = argv[0]
        if name == "scancel":
            if self.scancel_stderr:
                raise subprocess.CalledProcessError(1, argv, "", self.scancel_stderr)
            return ""
        lines = getattr(self, name)
        if lines is None:
            raise subprocess.CalledProcessError(1, argv, "", f"{name}: error: {UNREACHABLE}")
        return "".join(line + "\n" for line in lines)


@pytest.fixture
def db(tmp_path: Path) -> Database:
    return Database(f"sqlite:///{tmp_path / 'app.sqlite'}")


def add_row(db: Database, tmp_path: Path, native_id: str, *, age: float = 600, state: str = "RUNNING",
            result: object = None) -> JobRow:
    folder = tmp_path / f"job{native_id}"
    folder.mkdir()
    if result is not None:
        with open(folder / f"{native_id}_0_result.pkl", "wb") as fh:
            pickle.dump(result, fh)
    [row] = insert_rows(db, [job_row(
        int(native_id), native_id=native_id, state=state, folder=str(folder), target=str(tmp_path / "x.sif"),
        request={}, user="me", submitted_at=utcnow() - timedelta(seconds=age),
    )])
    return row


def sacct_line(row: JobRow, state: str, *, node: str = "n1", submit: datetime | None = None,
               end: datetime | None = None, exit_code: str = "0:0") -> str:
    submitted = epoch(submit or row.submitted_at)
    ended = epoch(end) if end else "Unknown"
    return f"{row.native_id}|{row.native_id}|{state}|{node}|{submitted}|{ended}|{exit_code}|None"


def test_controller_unreachable_keeps_state_reports_and_wait_gives_up(db, tmp_path):
    row = add_row(db, tmp_path, "101")
    done = add_row(db, tmp_path, "102", result=("success", {"path": "/x.sif"}))
    fake = FakeSlurm(sacct=None, squeue=None)
    report = tracking.refresh_report(db, [row, done], Backends(fake))
    assert [r.state for r in report.rows] == ["RUNNING", "COMPLETED"]  # the result file still decides
    assert len(report.problems) == 1 and "Unable to contact slurm controller" in report.problems[0]
    assert db.get(row.id).state == "RUNNING"  # nothing concluded, nothing written
    with pytest.raises(ClusterError, match=r"gave up after 0\.3 s"):
        tracking.wait(db, [row.id], backends=Backends(fake), first_delay=0.05, give_up_after=0.3)


def test_runaway_accounting_record_ends_when_verified(db, tmp_path):
    row = add_row(db, tmp_path, "201")
    fake = FakeSlurm(sacct=[sacct_line(row, "RUNNING")], squeue=[])
    assert tracking.refresh(db, [row], Backends(fake))[0].state == "RUNNING"
    assert [c[0] for c in fake.calls] == ["sacct"]  # sacct knew it: no squeue on a plain refresh
    fake.calls.clear()
    rows = tracking.wait(db, [row.id], backends=Backends(fake), first_delay=0.01, verify_every=0, timeout=5)
    assert rows[0].state == "UNKNOWN" and "unclosed accounting record" in rows[0].reason
    assert [c[0] for c in fake.calls] == ["sacct", "squeue"]


def test_node_fail_or_preemption_is_confirmed_with_the_controller(db, tmp_path):
    """Slurm requeues such jobs: accounting's NODE_FAIL is final only if the controller agrees."""
    requeued = add_row(db, tmp_path, "251")
    failed = add_row(db, tmp_path, "252")
    preempted = add_row(db, tmp_path, "253")
    later = epoch(utcnow())
    fake = FakeSlurm(
        sacct=[sacct_line(requeued, "NODE_FAIL", end=utcnow()), sacct_line(failed, "NODE_FAIL", end=utcnow()),
               sacct_line(preempted, "PREEMPTED", end=utcnow())],
        squeue=[f"251|PENDING|(null)|{later}|Unknown|BeginTime",  # requeued: waiting to start again
                f"253|PREEMPTED|n1|{epoch(preempted.submitted_at)}|{later}|None"],  # 252: past MinJobAge
    )
    rows = tracking.refresh(db, [requeued, failed, preempted], Backends(fake))
    assert [c[0] for c in fake.calls] == ["sacct", "squeue"]  # one call each, whatever the number of jobs
    assert fake.calls[1][-1] == "251,252,253"
    assert (rows[0].state, rows[0].reason) == ("PENDING", "BeginTime")
    assert rows[1].state == "NODE_FAIL" and rows[2].state == "PREEMPTED"
    # the controller unreachable: accounting's word stands, and the problem is reported
    fake = FakeSlurm(sacct=[sacct_line(requeued, "NODE_FAIL", end=utcnow())], squeue=None)
    report = tracking.refresh_report(db, [db.get(requeued.id)], Backends(fake))
    assert report.rows[0].state == "NODE_FAIL" and len(report.problems) == 1


def test_completed_without_result_waits_for_a_late_result_file(db, tmp_path):
    row = add_row(db, tmp_path, "301")
    just_now = utcnow() - timedelta(seconds=2)
    fake = FakeSlurm(sacct=[sacct_line(row, "COMPLETED", end=just_now)], squeue=[])
    # not FAILED yet: the file may be in flight
    assert tracking.refresh(db, [row], Backends(fake))[0].state == "RUNNING"
    fake.sacct = [sacct_line(row, "COMPLETED", end=utcnow() - timedelta(seconds=60))]
    failed = tracking.refresh(db, [row], Backends(fake))[0]
    assert failed.state == "FAILED" and "without writing a result" in failed.reason


def test_record_of_a_reused_id_is_not_this_job(db, tmp_path):
    row = add_row(db, tmp_path, "401", age=120)
    old = sacct_line(row, "COMPLETED", submit=row.submitted_at - timedelta(days=3))
    fake = FakeSlurm(sacct=[old], squeue=[f"401|RUNNING|n1|{epoch(row.submitted_at)}|NONE|None"])
    fresh = tracking.refresh(db, [row], Backends(fake))[0]
    assert fresh.state == "RUNNING" and [c[0] for c in fake.calls] == ["sacct", "squeue"]
    # a job already UNKNOWN does not adopt a much newer job that reuses its id
    gone = add_row(db, tmp_path, "402", state="UNKNOWN")
    newer = sacct_line(gone, "RUNNING", submit=gone.submitted_at + timedelta(days=1))
    fake = FakeSlurm(sacct=[newer], squeue=[])
    assert tracking.refresh(db, [gone], Backends(fake))[0].state == "UNKNOWN"


def test_vanished_rules(db, tmp_path):
    new = add_row(db, tmp_path, "501", age=5, state="PENDING")
    old = add_row(db, tmp_path, "502", age=600)
    fake = FakeSlurm(sacct=[], squeue=[])
    rows = tracking.refresh(db, [new, old], Backends(fake))
    assert rows[0].state == "PENDING"  # within the grace period: sacct lag, not gone
    assert rows[1].state == "UNKNOWN" and rows[1].ended_at is not None
    # accounting disabled: the same conclusion, saying why; asked once per backend (one per command)
    other = add_row(db, tmp_path, "503", age=600)
    disabled = subprocess.CalledProcessError(1, ["sacct"], "", "sacct: error: Slurm accounting storage is disabled")

    asked: list[str] = []

    def runner(argv: list[str]) -> str:
        asked.append(argv[0])
        if argv[0] == "sacct":
            raise disabled
        return ""

    backends = Backends(runner)  # one per command: what it learned lasts as long
    for _ in range(2):
        report = tracking.refresh_report(db, [other], backends)
    assert report.rows[0].state == "UNKNOWN" and "no accounting" in report.rows[0].reason
    assert report.problems == []
    assert asked.count("sacct") == 1


def test_no_sacct_at_all_is_no_accounting():
    def runner(argv: list[str]) -> str:
        raise FileNotFoundError(2, "No such file or directory", argv[0])

    with pytest.raises(slurm.AccountingUnavailable) as caught:
        slurm.sacct(["1"], utcnow(), runner)
    assert caught.value.disabled and str(caught.value) == "sacct not found on PATH"


def test_squeue_with_one_unknown_id_is_an_answer_not_a_failure():
    def runner(argv: list[str]) -> str:
        raise subprocess.CalledProcessError(1, argv, "", "slurm_load_jobs error: Invalid job id specified")

    assert slurm.squeue(["999"], runner) == {}


def test_scancel_refusals(db, tmp_path):
    benign = "scancel: error: Kill job error on job id 7: Invalid job id specified"
    denied = "scancel: error: Kill job error on job id 8: Access/permission denied"

    def runner_with(stderr: str):
        def runner(argv: list[str]) -> str:
            raise subprocess.CalledProcessError(1, argv, "", stderr)

        return runner

    assert slurm.scancel(["7"], runner_with(benign)) == {}
    assert slurm.scancel(["7", "8"], runner_with(benign + "\n" + denied)) == {"8": "Access/permission denied"}
    with pytest.raises(slurm.SlurmUnavailable, match="Unable to contact"):
        slurm.scancel(["7"], runner_with(f"scancel: error: {UNREACHABLE}"))


@pytest.mark.parametrize("age", [5, 600])  # within the grace period for new jobs, and past it
def test_cancel_of_a_pending_job_slurm_then_forgets_is_cancelled(db, tmp_path, age):
    """A pending array element cancelled before it was split off leaves no trace in squeue or sacct:
    the job our scancel removed is CANCELLED, not PENDING until the grace period, then UNKNOWN."""
    row = add_row(db, tmp_path, "811", age=age, state="PENDING")
    queue = [f"811|PENDING||{epoch(row.submitted_at)}|N/A|JobArrayTaskLimit"]

    class Forgetting(FakeSlurm):
        def __call__(self, argv: list[str]) -> str:
            out = super().__call__(argv)
            if argv[0] == "scancel":
                self.squeue = []  # the controller drops the element at once
            return out

    fake = Forgetting(sacct=[], squeue=queue)
    [outcome] = tracking.cancel(db, [row], Backends(fake), confirm_s=2)
    assert outcome.action == "cancelled" and outcome.row.state == "CANCELLED"
    assert outcome.row.reason == "cancelled before it started (Slurm dropped the pending job)"
    assert db.get(row.id).state == "CANCELLED" and db.get(row.id).ended_at is not None
    assert [c[0] for c in fake.calls] == ["sacct", "squeue", "scancel", "sacct", "squeue"]


def test_state_words_and_details():
    assert from_slurm("CANCELLED by 0") == "CANCELLED"
    assert from_slurm("OUT_OF_ME+") == "OUT_OF_MEMORY"
    assert from_slurm("COMPLETING") == "RUNNING"
    assert from_slurm("WEIRD_NEW_STATE") == "UNKNOWN"
    rec = slurm.Record("1", "FAILED", "n1", None, None, None, "137:0", "sacct")
    assert _end_detail(rec) == "exit code 137 (128+9 = SIGKILL?)"
    rec = slurm.Record("1", "CANCELLED by 1000", None, None, None, None, "0:15", "sacct")
    assert _end_detail(rec) == "by uid 1000, killed by signal 15 = SIGTERM"


def test_since_parsing(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    now = datetime(2026, 11, 27, 12, 0, 0)
    assert parse_since("90m", now) == datetime(2026, 11, 27, 10, 30)
    assert parse_since("2026-11-27T08:00:00Z", now) == datetime(2026, 11, 27, 8, 0)
    assert parse_since("2026-11-27T08:00:00+02:00", now) == datetime(2026, 11, 27, 6, 0)
    with pytest.raises(ValueError, match="not a date"):
        parse_since("last tuesday", now)


def test_status_says_so_when_slurm_is_unreachable(cli, site, tmp_path, monkeypatch):
    site.write_profiles()
    db = Database()
    row = add_row(db, tmp_path, "601")
    bin_dir = tmp_path / "dead-slurm"
    bin_dir.mkdir()
    for name in ("sacct", "squeue"):
        (bin_dir / name).write_text(f"#!/bin/sh\necho '{name}: error: {UNREACHABLE}' >&2\nexit 1\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    result = cli("status")
    assert result.exit_code == 1
    assert row.id in result.stdout and "RUNNING" in result.stdout  # the last known state, shown
    [line] = result.stderr.splitlines()
    assert line.startswith("bfjobs: error: some jobs were not refreshed:") and "Unable to contact" in line


def test_a_job_that_started_before_the_cancel_is_not_called_cancelled(db, tmp_path):
    """end_unstartable cancels only still-pending jobs (scancel --state=PENDING) and stores CANCELLED
    only for those the controller then calls CANCELLED; one that started meanwhile is left alone."""
    started = add_row(db, tmp_path, "901", state="PENDING")
    stuck = add_row(db, tmp_path, "902", state="PENDING")
    for row in (started, stuck):
        db.update(row.id, reason="cannot start: QOSMaxCpuPerJobLimit")
    calls: list[list[str]] = []
    asks = "cpu|bfjobs-small|acct|4|2G|1:00:00|(null)"  # partition, QOS, account, CPUs, memory, time, features

    def runner(argv: list[str]) -> str:
        calls.append(argv)
        if argv[0] == "squeue" and reasons.JOB_FORMAT in argv:
            return f"901|RUNNING|{asks}\n902|CANCELLED|{asks}\n"
        return ""

    rows = [db.get(started.id), db.get(stuck.id)]
    ended = tracking.end_unstartable(db, rows, Backends(runner))
    assert [r.id for r in ended] == [stuck.id]
    assert db.get(stuck.id).state == "CANCELLED"
    assert db.get(stuck.id).reason.startswith("cannot start: QOSMaxCpuPerJobLimit")
    assert db.get(started.id).state == "PENDING"
    [scancel] = [c for c in calls if c[0] == "scancel"]
    assert "--state=PENDING" in scancel
    assert [c[0] for c in calls].count("squeue") == 1  # one answer: what they ask for, and what became of them
    assert "QOS bfjobs-small" in db.get(stuck.id).reason  # the advice came from that same answer


def test_status_asks_the_controller_only_for_reasons_it_does_not_know(db, tmp_path):
    """A plain refresh (status) of pending jobs: one sacct; squeue only for a job with no reason
    known yet or a stored one older than REASON_TTL. wait (reasons=True) always asks."""
    held = add_row(db, tmp_path, "701", state="PENDING")
    stuck = add_row(db, tmp_path, "702", state="PENDING")
    sacct = [sacct_line(held, "PENDING", node="None assigned").rsplit("|", 1)[0] + "|JobHeldUser",
             sacct_line(stuck, "PENDING", node="None assigned")]
    queue = [f"702|PENDING|(null)|{epoch(stuck.submitted_at)}|Unknown|QOSMaxCpuPerJobLimit"]
    fake = FakeSlurm(sacct=sacct, squeue=queue)
    rows = tracking.refresh(db, [held, stuck], Backends(fake))
    assert [c[0] for c in fake.calls] == ["sacct", "squeue"] and fake.calls[1][-1] == "702"
    assert [r.reason for r in rows] == ["JobHeldUser", "cannot start: QOSMaxCpuPerJobLimit"]
    fake.calls.clear()
    rows = tracking.refresh(db, tracking.reload(db, [held.id, stuck.id]), Backends(fake))
    assert [c[0] for c in fake.calls] == ["sacct"]  # both reasons known and recent: no squeue
    assert [r.reason for r in rows] == ["JobHeldUser", "cannot start: QOSMaxCpuPerJobLimit"]
    fake.calls.clear()
    report = tracking.refresh_report(db, tracking.reload(db, [stuck.id]), Backends(fake), reasons=True)
    assert [c[0] for c in fake.calls] == ["sacct", "squeue"] and report.reason_seen == {stuck.id}
    # a stored reason older than REASON_TTL is asked again, and stamped when confirmed
    db.update(stuck.id, updated_at=utcnow() - timedelta(minutes=6))
    fake.calls.clear()
    [row] = tracking.refresh(db, tracking.reload(db, [stuck.id]), Backends(fake))
    assert row.reason == "cannot start: QOSMaxCpuPerJobLimit"
    assert [c[0] for c in fake.calls] == ["sacct", "squeue"]
    assert utcnow() - db.get(stuck.id).updated_at < timedelta(minutes=1)


def test_a_stale_mark_during_a_controller_outage_is_no_second_sighting(db, tmp_path):
    """wait ends a job that cannot start only on two sightings the controller itself gave: a row
    left marked while Slurm is unreachable must not make wait cancel it (or fail on scancel)."""
    row = add_row(db, tmp_path, "751", state="PENDING")
    db.update(row.id, reason="cannot start: QOSMaxCpuPerJobLimit")
    fake = FakeSlurm(sacct=None, squeue=None)
    rows = tracking.wait(db, [row.id], backends=Backends(fake), first_delay=0.01, timeout=0.3, give_up_after=60)
    assert rows[0].state == "PENDING" and "scancel" not in [c[0] for c in fake.calls]


def test_sacct_splits_only_when_the_ids_outgrow_one_argument():
    """One sacct call for 10,000 ids; beyond the kernel's 128 KiB single-argument limit, the fewest
    calls that fit, and every id asked exactly once (their answers merged)."""
    from blackfish_jobs.backends import slurmcmd

    calls: list[list[str]] = []

    def runner(argv: list[str]) -> str:
        calls.append(argv)
        ids = argv[argv.index("-j") + 1].split(",")
        return "".join(f"{i}|{i}|PENDING|None assigned|1700000000|Unknown|0:0|None\n" for i in ids)

    ten_k = [str(1_000_000 + i) for i in range(10_000)]
    assert len(slurm.sacct(ten_k, utcnow(), runner)) == 10_000 and len(calls) == 1
    calls.clear()
    forty_k = [str(1_000_000 + i) for i in range(40_000)]  # 8 chars each: ~320 KB of ids
    found = slurm.sacct(forty_k, utcnow(), runner)
    lists = [c[c.index("-j") + 1] for c in calls]
    assert len(calls) == 3 and all(len(j) <= slurmcmd.MAX_ARG_CHARS for j in lists)
    assert sorted(i for j in lists for i in j.split(",")) == sorted(forty_k) and set(found) == set(forty_k)
    assert slurmcmd.id_lists(["1", "22", "333"], limit=4) == ["1,22", "333"]


def test_an_sbatch_that_fails_silently_is_named_with_its_exit_status():
    """sbatch can exit non-zero and print nothing (seen once under 50 concurrent submissions):
    the one line says so, with the status, rather than "no output"."""
    import subprocess

    from submitit.core import utils as submitit_utils

    from blackfish_jobs.backends import executors
    from blackfish_jobs.errors import ClusterError

    with (
        pytest.raises(ClusterError, match="sbatch exited with status 1 and printed nothing"),
        executors.submission_errors("the job"),
    ):
        try:
            raise subprocess.CalledProcessError(1, ["sbatch"], output="", stderr="")
        except subprocess.CalledProcessError as called:
            raise submitit_utils.FailedJobError("") from called
