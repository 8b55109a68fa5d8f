"""``bfjobs status``, ``list``, ``wait``, ``cancel`` and ``logs``: open, call the facade, print."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

import click

from ..api import STATES, native_name
from ._output import ProgressLines, describe, echo_err, job_table, print_json, show_jobs
from ._utils import KindChoice, SinceType, json_option, no_nan, older_than_option, profile_option

if TYPE_CHECKING:
    from ..api import Client


@click.command()
@click.argument("job_ids", nargs=-1)
@profile_option
@json_option("Print one JSON object (see docs/json.md).")
@click.pass_obj
def status(client: Client, job_ids: tuple[str, ...], profile_name: str | None, as_json: bool) -> None:
    """Refresh and show jobs (the given ones, or every unfinished one).

    One accounting query for all of them (plus at most one squeue call for jobs too new for
    accounting, or for all of them where there is no accounting). Exit 1 if Slurm could not be
    asked about some job.
    """
    table = None if as_json else job_table()  # laid out while Slurm is asked (Client.status' on_stored)
    result = client.status(job_ids, profile=profile_name, on_stored=table.prepare if table else None)
    if as_json:
        print_json(result)
    else:
        show_jobs(result.jobs, "no unfinished jobs", result.progress, table)
    result.raise_for_status()


@click.command(name="list")
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(STATES, case_sensitive=False),
    help="Only jobs in this state (repeatable).",
)
@click.option("--kind", type=KindChoice(), help="Only this kind of job.")
@profile_option
@click.option("--since", type=SinceType(), help="Only jobs submitted since DATE (2026-11-27T08:00, 12h, 7d).")
@click.option(
    "--limit", type=click.IntRange(0, 10_000_000), default=50, show_default=True, help="At most N jobs (0: all)."
)
@click.option("--refresh", is_flag=True, help="Ask Slurm (once) about unfinished jobs first.")
@json_option("Print one JSON object (see docs/json.md).")
@click.pass_obj
def list_(
    client: Client,
    states: tuple[str, ...],
    kind: str | None,
    profile_name: str | None,
    since: Any,
    limit: int,
    refresh: bool,
    as_json: bool,
) -> None:
    """List the jobs bfjobs has submitted (every kind, state and profile, from its table in the
    database), newest first as `status` shows them: their state as last seen (no Slurm call unless
    --refresh), the profile, WHERE the artefact goes (shared: the profile's cache_dir; home: its
    home_dir), a model's REVISION (commit) and the target."""
    result = client.list_jobs(states=states, kind=kind, profile=profile_name, since=since, limit=limit, refresh=refresh)
    if as_json:
        print_json(result)
    else:
        show_jobs(result.jobs, "no jobs")
    result.raise_for_status()


@click.command()
@click.argument("job_ids", nargs=-1, required=True)
@click.option(
    "--timeout", type=click.FloatRange(0, None), callback=lambda _c, _p, v: no_nan("--timeout", v),
    help="Give up after this many seconds (exit 1).",
)
@json_option("Print one JSON object (see docs/json.md).")
@click.pass_obj
def wait(client: Client, job_ids: tuple[str, ...], timeout: float | None, as_json: bool) -> None:
    """Wait for jobs to end; exit 0 only if all COMPLETED (1 otherwise, or on --timeout).

    Polls with back-off (1 s, growing to 30 s; local jobs 0.2 s to 2 s); on a terminal a
    progress line shows each job's state and node. A job Slurm no longer knows ends the wait
    as UNKNOWN instead of hanging.
    """
    lines = ProgressLines(client.progress)
    result = client.wait(job_ids, timeout=timeout, on_tick=lines, on_problems=lines.problems)
    lines.finish()
    if as_json:
        print_json(result)
    else:
        for row in result.jobs:
            click.echo(describe(row))
    result.raise_for_status()


@click.command()
@click.argument("job_id")
@click.option("--stderr", "use_stderr", is_flag=True, help="The job's stderr log instead of its stdout.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new output until the job ends.")
@click.pass_obj
def logs(client: Client, job_id: str, use_stderr: bool, follow: bool) -> None:
    """Print a job's output from its job folder (--follow: until the job ends).

    With --follow the exit code says how the job ended, as for ``wait``: 0 only if COMPLETED.
    """
    try:
        # the log's bytes as they are (click.get_binary_stream is deprecated since Click 8.2)
        result = client.logs(job_id, sys.stdout.buffer, stderr=use_stderr, follow=follow)
    except BrokenPipeError:  # `bfjobs logs X | head`: the reader has all it wanted
        _silence_stdout()
        return
    if result.notice:
        echo_err(result.notice)
    result.raise_for_status()


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the exit-time flush cannot fail."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


_CANCEL_WORDS = {
    "cancelled": "cancelled ({state})",
    "requested": "cancel requested; {message}",
    "already ended": "already ended: {state}",
    "refused": "not cancelled: {message}",
}


@click.command()
@click.argument("job_ids", nargs=-1, required=True)
@json_option("Print the jobs afterwards as one JSON object (see docs/json.md).")
@click.pass_obj
def cancel(client: Client, job_ids: tuple[str, ...], as_json: bool) -> None:
    """Cancel jobs: one scancel for all Slurm jobs; local jobs get SIGTERM.

    The task removes its partial file when signalled, so nothing half-published remains. The
    job reads CANCELLED once Slurm says so (waited for a few seconds). Exit 1 if Slurm refused.
    """
    result = client.cancel(job_ids)
    if as_json:
        print_json(result)
    else:
        for row in result.jobs:
            text = _CANCEL_WORDS[result.actions[row.id]].format(state=row.state, message=result.messages[row.id])
            click.echo(f"{row.id}  {native_name(row)}  {text}")
    result.raise_for_status()


# ------------------------------------------------------------------------------- bfjobs jobs


@click.group(name="jobs")
def jobs_group() -> None:
    """Look after bfjobs' own job folders."""


@jobs_group.command("prune")
@profile_option
@older_than_option("Only jobs that ended at least AGE ago (30m, 12h, 7d, 2w).")
@click.option("--dry-run", is_flag=True, help="Print which folders would go; remove nothing.")
@json_option("Print one JSON object: the folders removed (see docs/json.md).")
@click.pass_obj
def prune_jobs(client: Client, profile_name: str | None, older_than: float | None, dry_run: bool,
               as_json: bool) -> None:
    """Remove the job folders (<home_dir>/jobs/bfjobs/ID: scripts, logs, results) of this
    database's finished jobs; their rows keep the results (`bfjobs list`), their logs go. A
    live job's folder is never removed (an array's, only once every element has ended)."""
    from ..api import human_bytes

    result = client.prune_jobs(profile=profile_name, older_than=older_than, dry_run=dry_run)
    if as_json:
        print_json(result)
        return
    verb = "would remove" if dry_run else "removed"
    for folder in result.folders:  # paths bfjobs made (job ids): printable already
        if folder["skipped"]:
            click.echo(f"left {folder['path']} ({folder['skipped']})")
        else:
            click.echo(f"{verb} {folder['path']} ({human_bytes(folder['bytes'])})")
    kept = f"; {result.kept_live} folder(s) of live jobs kept" if result.kept_live else ""
    click.echo(f"{human_bytes(result.freed)} {'would be ' if dry_run else ''}freed{kept}")
