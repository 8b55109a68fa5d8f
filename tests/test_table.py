"""Job tables laid out in two steps (``JobTable``): the rows as stored while ``status`` waits for
Slurm, then only what the refresh changed. Whatever changed, the lines are those of a table laid
out from scratch."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import timedelta

import pytest
from support.rows import job_row

from blackfish_jobs.api import Client
from blackfish_jobs.cli._output import JobTable, plain_lines
from blackfish_jobs.store import Database, JobRow, utcnow

LAYOUTS = [dict(short_target=s, colour=c) for s in (False, True) for c in (False, True)]


def stored_rows(n: int, seed: int) -> list[JobRow]:
    """Rows as a store returns them: pending and running pulls and downloads, some with reasons."""
    rng = random.Random(seed)
    now = utcnow()
    stamp = now - timedelta(minutes=5)  # one object for all, as from_records makes it
    return [
        job_row(
            i,
            kind=rng.choice(["pull-image", "download-model"]),
            state=rng.choice(["PENDING", "PENDING", "RUNNING"]),
            node=rng.choice([None, "vm"]),
            reason=rng.choice([None, "JobHeldUser", "Priority"]),
            target=f"/cache/images/img{i}{'x' * rng.randint(0, 5)}.sif",
            location=rng.choice([None, "shared"]),
            submitted_at=now - timedelta(seconds=rng.randint(0, 50)),
            updated_at=stamp,
        )
        for i in range(n)
    ]


def refreshed(rows: list[JobRow], seed: int) -> tuple[list[JobRow], dict[str, dict]]:
    """What a refresh may do to ``rows``: change some in place (stamping ``updated_at``), replace
    others (another process changed them), leave the rest; and progress records for some."""
    rng = random.Random(seed)
    rows = list(rows)
    for i in rng.sample(range(len(rows)), len(rows) // 10):
        row, now = rows[i], utcnow()
        change = rng.choice(["start", "end", "reason", "replaced"])
        if change == "start":
            row.state, row.node, row.reason, row.updated_at = "RUNNING", "a-much-longer-node-name", None, now
        elif change == "end":
            row.state, row.reason, row.updated_at = "FAILED", "a  reason\n on two lines", now
            row.result = {"commit": "f" * 40}
            row.location = "home"
        elif change == "reason":
            row.reason, row.updated_at = "QOSMaxJobsPerUserLimit", now
        else:
            rows[i] = replace(row, state="COMPLETED", node="vm", reason=None, updated_at=now, location="shared")
    running = [r for r in rows if r.state == "RUNNING"]
    progress = {r.id: {"bytes_done": 10 ** rng.randint(3, 9), "bytes_total": 10**10} for r in running[::3]}
    return rows, progress


@pytest.mark.parametrize("seed", range(6))
def test_a_prepared_table_prints_what_a_fresh_one_would(seed):
    for layout in LAYOUTS:
        rows = stored_rows(300, seed)
        table = JobTable(**layout)
        table.prepare(rows)
        assert table.lines(rows) == plain_lines(rows, **layout)  # nothing changed: the prepared lines
        after, progress = refreshed(rows, seed)
        expected = plain_lines(after, progress=progress, **layout)
        assert table.lines(after, progress) == expected
        assert table.lines(after, progress) == expected  # the prepared layout is left as it was
        assert table.lines(after) == plain_lines(after, **layout)  # a row's progress is never kept


def test_columns_shrink_when_their_widest_cell_changes():
    rows = stored_rows(20, 0)
    rows[7].node, rows[7].target = "a-node-with-a-very-long-name", "/cache/images/" + "y" * 80 + ".sif"
    table = JobTable()
    table.prepare(rows)
    wide = table.lines(rows)[0]
    rows[7].node, rows[7].updated_at = None, utcnow()
    rows[7] = replace(rows[7], target="/cache/images/short.sif")
    lines = table.lines(rows)
    assert lines == plain_lines(rows)
    assert len(lines[0]) <= len(wide) - len("a-node-with-a-very-long-name") + len("NODE") - 60


def test_other_rows_than_the_prepared_ones_are_laid_out_from_scratch():
    rows = stored_rows(30, 1)
    table = JobTable()
    table.prepare(rows)
    for other in (rows[:10], rows[::-1], [], stored_rows(30, 2)):
        assert table.lines(other) == plain_lines(other)


def test_status_hands_the_stored_rows_over_before_it_refreshes_them(site):
    """``Client.status(on_stored=...)`` gets the rows as stored; the result has them refreshed (a
    local job whose process is gone has failed), and the table prints the refreshed states."""
    db = Database()
    db.insert(job_row(1, backend="local", profile="default", native_id="999999", state="RUNNING",
                      folder=str(site.root / "no-such-folder")))
    table = JobTable()
    seen: list[list[tuple[str, str]]] = []

    def on_stored(rows):
        seen.append([(r.id, r.state) for r in rows])
        table.prepare(rows)

    result = Client(db=db).status(on_stored=on_stored)
    assert seen == [[("000000000001", "RUNNING")]]
    [job] = result.jobs
    assert job.state == "FAILED"
    lines = table.lines(result.jobs, result.progress)
    assert lines == plain_lines(result.jobs, progress=result.progress) and " FAILED " in lines[1]


def test_a_change_stored_one_job_at_a_time_is_seen_too(site):
    """``store_observation`` (cancel, wait's ending of jobs that cannot start) stamps the row
    object as the stored row: a table prepared before it shows the change."""
    from blackfish_jobs import tracking
    from blackfish_jobs.backends.base import Observation

    db = Database()
    db.insert_many([job_row(1, reason="JobHeldUser"), job_row(2, reason="JobHeldUser")])
    rows = db.unfinished(newest_first=True)
    table = JobTable()
    table.prepare(rows)
    [changed] = [r for r in rows if r.id == "000000000002"]
    tracking.store_observation(db, changed, Observation("CANCELLED", None, "cancelled by the user"))
    lines = table.lines(rows)
    assert lines == plain_lines(rows) and any("CANCELLED" in line for line in lines)


def test_a_table_that_cannot_be_prepared_is_laid_out_afterwards(monkeypatch):
    """Preparing is only a head start: a failure there is met again (and reported) by lines()."""
    from blackfish_jobs.cli import _output

    rows = stored_rows(5, 3)
    real = _output.revision_column

    def broken(row):
        raise ValueError("a stored result that is not JSON")

    monkeypatch.setattr(_output, "revision_column", broken)
    table = JobTable()
    table.prepare(rows)  # no exception: status goes on to store its refresh
    with pytest.raises(ValueError, match="not JSON"):
        table.lines(rows)
    monkeypatch.setattr(_output, "revision_column", real)
    assert table.lines(rows) == plain_lines(rows)
