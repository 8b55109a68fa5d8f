"""The ``bfjobs`` command: a thin Click layer (parse, call the library, print).

Only click and bfjobs' light modules are imported at start-up; configuration, submitit,
SQLAlchemy and huggingface_hub are imported by the commands that need them, so ``bfjobs --help``
stays fast on a busy login node. The console script enters through :mod:`blackfish_jobs.entry`,
which gives ``bfjobs status`` a head start on its ``sacct`` call before this module is imported.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import click

from . import __version__, constants, states
from .errors import BadInput, BfjobsError, JobFailed

if TYPE_CHECKING:
    from . import config
    from .backends import Backends
    from .db import Database, JobRow

SLURM_FLAGS = ("partition", "qos", "account", "time", "mem", "cpus_per_task", "constraint")


class Context:
    """Per-invocation state: the DB is opened only when a command asks for it."""

    def __init__(self, db_url: str | None, backends: Backends | None = None) -> None:
        from .backends import Backends

        self.db_url = db_url
        self._db: Database | None = None
        self.backends = backends or Backends()  # one per command: a prestarted sacct, Slurm's memo

    @property
    def db(self) -> Database:
        if self._db is None:
            from .db import Database

            self._db = Database(self.db_url)
        return self._db


def _echo_err(message: str) -> None:
    click.echo(message, err=True)


def slurm_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The Slurm flags shared by submit/render; they override bfjobs.toml."""
    options = [
        click.option("--partition", help="Slurm partition (e.g. a data-mover partition)."),
        click.option("--qos", help="Slurm QOS (e.g. xfer at NERSC)."),
        click.option("--account", help="Slurm account to charge."),
        click.option("--time", help="Time limit, e.g. 02:00:00."),
        click.option("--mem", help="Memory, e.g. 8G."),
        click.option("--cpus-per-task", "cpus_per_task", help="CPUs for the job."),
        click.option("--constraint", help="Slurm node features."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def profile_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--profile",
        "profile_name",
        metavar="NAME",
        help="Blackfish profile from profiles.cfg (default: Blackfish's default profile).",
    )(fn)


def _builtin_notice(profile: config.Profile) -> None:
    """Say which built-in profile is used and why; printed once the request was accepted, so an
    error stays the only line on stderr."""
    if not profile.builtin:
        return
    from . import config

    if profile.is_slurm:
        how = "sbatch is on PATH: jobs are submitted to Slurm from this host"
    elif constants.which("sbatch") is None:
        how = "no sbatch on PATH: jobs run on this machine"
    else:
        how = "--profile local: jobs run on this machine, not through Slurm"
    _echo_err(
        f"bfjobs: no {config.profiles_path()}; using the built-in '{profile.name}' profile "
        f"({how}; home_dir and cache_dir {profile.home_dir})"
    )


def _check_profile_name(ctx: Context, name: str | None) -> None:
    """``--profile`` of ``list``/``status``/``verify`` names a profile that exists (in profiles.cfg,
    built in, or one with jobs in the database, e.g. removed since): a typo is not "no jobs"."""
    if name is None:
        return
    from . import config

    if name in config.known_profiles() or ctx.db.listing(profile=name, limit=1):
        return
    raise config.unknown_profile(name)


def _no_nan(name: str, value: float | None) -> float | None:
    """FloatRange lets NaN through (every comparison with it is False): refuse it."""
    if value is not None and value != value:
        raise click.BadParameter("not a number", param_hint=name)
    return value


def _settings(profile: config.Profile, kind: str, flags: dict[str, Any]) -> config.JobSettings:
    from . import config

    settings = config.load_settings(profile.name, kind)
    return settings.merged(**config.check_overrides(**flags))


def _print_json(data: Any) -> None:
    """One object indented; an array with one object per line (grep-able, and the C encoder:
    ``indent`` would make ``list --json`` of 10,000 jobs take most of half a second)."""
    if isinstance(data, list) and data:
        items = ",\n".join("  " + json.dumps(item, sort_keys=True) for item in data)
        click.echo(f"[\n{items}\n]")
    else:
        click.echo(json.dumps(data, indent=2, sort_keys=True))


def _native(row: JobRow) -> str:
    from .backends import describe

    return describe(row)


def _describe(row: JobRow) -> str:
    text = f"{row.id}  {row.kind}  {row.state:<13} {_native(row)}  {row.target}"
    if row.reason:
        text += f"  ({row.reason})"
    return text


class _ProgressLines:
    """One updating line per job on stderr (state, node, bytes, rate, ETA), only on a terminal:
    elsewhere (a log, a pipe) nothing is drawn, so no control character lands in a file."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.drawn = 0

    def __call__(self, rows: list[JobRow], elapsed: float) -> None:
        if not self.tty:
            return
        import shutil

        from .backends import folder
        from .views import progress_lines

        width = max(20, shutil.get_terminal_size().columns - 1)  # a wrapped line would break the redraw
        lines = [line[:width] for line in progress_lines(rows, elapsed, folder.read_progress(rows))]
        up = f"\x1b[{self.drawn - 1}A" if self.drawn > 1 else ""  # back to the first line drawn
        text = "\n".join(f"\r{line}\x1b[K" for line in lines)
        if len(lines) < self.drawn:
            text += "\x1b[J"  # fewer lines than last time: clear the rest
        click.echo(up + text, err=True, nl=False)
        self.drawn = len(lines)

    def finish(self) -> None:
        if self.tty and self.drawn:
            click.echo("", err=True)


def _jobs_json(rows: Sequence[JobRow], single: bool) -> Any:
    """Jobs as ``status``/``wait`` print them: each with ``progress``, its record's figures (the
    running job's latest, the ended job's final ones; null without a record)."""
    from .backends import folder

    records = folder.read_progress(rows)
    jobs = [{**r.to_json(), "progress": records.get(r.id)} for r in rows]
    return jobs[0] if single else jobs


def _wait_and_report(
    ctx: Context,
    ids: Sequence[str],
    timeout: float | None,
    as_json: bool,
    json_prefix: Sequence[dict[str, Any]] | None = None,
    one_job: bool | None = None,
) -> None:
    """Wait, print the jobs, and fail (exit 1) unless every one COMPLETED with its artefact.

    ``json_prefix`` (``--from-file``): entries printed before the jobs, always as one array.
    ``one_job``: print one JSON object rather than an array (default: when there is one job).
    """
    from . import api, tracking
    from .states import COMPLETED

    lines = _ProgressLines()
    rows = tracking.wait(ctx.db, ids, timeout=timeout, on_tick=lines, backends=ctx.backends)
    lines.finish()
    bad = [r for r in rows if r.state != COMPLETED or not api.artefact_in_place(r)]
    if as_json:
        if json_prefix is not None:
            _print_json([*json_prefix, *_jobs_json(rows, single=False)])
        else:
            _print_json(_jobs_json(rows, single=len(rows) == 1 if one_job is None else one_job))
    else:
        for r in rows:
            click.echo(_describe(r))
    if bad:
        raise JobFailed(_not_ok_message(rows, bad, timeout))


def _not_ok_message(rows: list[JobRow], bad: list[JobRow], timeout: float | None) -> str:
    """Why a wait did not succeed, in one line: a timeout, or the first job that did not complete."""
    from .states import CANCELLED, COMPLETED, ENDED, cannot_start

    first = bad[0]
    if first.state not in ENDED:
        still = sum(r.state not in ENDED for r in rows)
        return (
            f"timed out after {timeout or 0:g} s: {still} of {len(rows)} job(s) not finished: "
            f"{first.id} is {first.state}"
        )
    if first.state == CANCELLED and cannot_start(first.reason):  # wait cancelled it
        count = f"{len(bad)} of {len(rows)} job(s) did not complete: " if len(rows) > 1 else ""
        return f"{count}job {first.id} ({_native(first)}) {first.reason}; it was cancelled"
    why = f" ({first.reason})" if first.reason else ""
    if first.state == COMPLETED:
        why = f" but its {first.kind} artefact is not in place ({first.target})"
    return f"{len(bad)} of {len(rows)} job(s) did not complete: {first.id} is {first.state}{why}"


def _unregistered_notice() -> None:
    """Once per command: the downloads it saw complete while Blackfish had no model table."""
    registry = sys.modules.get(f"{__package__}.registry")  # not imported: no download completed here
    if registry is None or not registry.unregistered:
        return
    ids = [job_id for job_id, _url in registry.unregistered]
    url = registry.unregistered[0][1]
    registry.unregistered.clear()
    named = ", ".join(ids[:3]) + (", …" if len(ids) > 3 else "")
    _echo_err(
        f"bfjobs: {len(ids)} download(s) finished ({named}) and kept in bfjobs' table only: {url} has no "
        "Blackfish 'model' table yet (start Blackfish once, then run `bfjobs sync`)"
    )


def _submit_and_report(ctx: Context, specs: list[Any], many: bool, wait_: bool, as_json: bool) -> None:
    """Shared tail of every ``submit`` command: submit (or report present / in flight), print, wait.

    One request prints one JSON object; ``--from-file`` prints an array (one entry per line).
    """
    from . import api

    outcomes = api.submit_many(ctx.db, specs, _echo_err) if many else [api.submit(ctx.db, specs[0], _echo_err)]
    _builtin_notice(specs[0].profile)
    waiting: list[str] = []
    settled: list[dict[str, Any]] = []  # present artefacts: nothing to wait for
    for spec, outcome in zip(specs, outcomes, strict=True):
        if isinstance(outcome, api.AlreadyPresent):
            message = outcome.describe()
            settled.append(outcome.to_json())
        elif isinstance(outcome, api.InFlight):
            message = outcome.describe()
            waiting.append(outcome.row.id)
        else:
            message = f"submitted {outcome.id} ({_native(outcome)}): {spec.label}"
            if outcome.request.get("commit"):
                message += f" (commit {outcome.request['commit']})"
            waiting.append(outcome.id)
        if not as_json:
            click.echo(message)
    if wait_ and waiting:
        _wait_and_report(ctx, waiting, None, as_json, settled if many else None)
    elif as_json:
        data = [o.to_json() for o in outcomes]
        _print_json(data if many else data[0])


# ----------------------------------------------------------------------------- commands


class BfjobsGroup(click.Group):
    """A group whose ``main`` turns every failure into one stderr line and an exit code.

    Exit codes: 0 success, 1 job or cluster failure, 2 bad input. Overriding ``main`` (rather
    than wrapping the console script) keeps the behaviour identical under ``CliRunner``.
    """

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, **extra: Any) -> Any:
        extra["standalone_mode"] = False
        try:
            rv = super().main(args=args, prog_name=prog_name or "bfjobs", **extra)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.Abort as exc:
            if isinstance(exc.__cause__, KeyboardInterrupt):  # Click turns Ctrl-C into Abort
                _fail("interrupted", 130)
            _fail("aborted", 1)
        except click.ClickException as exc:
            _fail(f"error: {exc.format_message()}", 2 if isinstance(exc, click.UsageError) else exc.exit_code)
        except BfjobsError as exc:
            _fail(f"error: {exc}", exc.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except Exception as exc:  # last line of defence: users never see a traceback
            if constants.debug_env():
                raise
            _fail(f"internal error: {type(exc).__name__}: {exc} (set BFJOBS_DEBUG=1 for the traceback)", 1)
        sys.exit(rv if isinstance(rv, int) else 0)


def _fail(message: str, code: int) -> None:
    _echo_err("bfjobs: " + " ".join(message.split())[:1000])
    sys.exit(code)


@click.group(cls=BfjobsGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="bfjobs")
@click.option("--db", "db_url", metavar="URL", help="Database URL [env BFJOBS_DB_URL; default Blackfish's app.sqlite].")
@click.pass_context
def cli(click_ctx: click.Context, db_url: str | None) -> None:
    """Pull Apptainer images and download models for Blackfish as Slurm jobs.

    Jobs are rendered from Jinja templates, submitted and tracked with submitit, and their
    results land in Blackfish's shared caches and app database.
    """
    click_ctx.obj = Context(db_url, click_ctx.obj)  # main()'s backends, if it was given some
    click_ctx.call_on_close(_unregistered_notice)


@cli.group()
def submit() -> None:
    """Submit a job (pull an image, download a model)."""


@cli.group(name="render")
def render_group() -> None:
    """Print the exact sbatch script a submit would send."""


def pull_image_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = slurm_options(fn)
    fn = click.option("--force", is_flag=True, help="Pull again even if the image is present.")(fn)
    fn = click.option("--name", "sif_name", metavar="FILE.sif", help="File name instead of <name>_<tag>.sif.")(fn)
    fn = click.option(
        "--to",
        type=click.Choice(["shared", "home"]),
        default="shared",
        show_default=True,
        help="shared: <cache_dir>/images (where Blackfish looks); home: <home_dir>/images.",
    )(fn)
    fn = profile_option(fn)
    return click.argument("uri", required=False)(fn)


def download_model_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = slurm_options(fn)
    fn = click.option(
        "--force", is_flag=True, help="Fetch again the files selected, into the chosen destination (others stay)."
    )(fn)
    fn = click.option("--exclude", multiple=True, metavar="GLOB", help="Skip files matching GLOB (repeatable).")(fn)
    fn = click.option("--include", multiple=True, metavar="GLOB", help="Only files matching GLOB (repeatable).")(fn)
    fn = click.option(
        "--shared", is_flag=True, help="Look only in, and write to, <cache_dir>/models (admins), not <home_dir>/models."
    )(fn)
    fn = click.option("--revision", metavar="REV", help="Branch, tag or 40-hex commit (default: the main branch).")(fn)
    fn = profile_option(fn)
    return click.argument("repo_id", required=False)(fn)


def list_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option(
        "--max-parallel", "max_parallel", metavar="N",
        help="With --from-file: at most N elements of the job array run at once (Slurm's %N).",
    )(fn)
    return click.option(
        "--from-file", "from_file", metavar="FILE",
        help="One entry per line ('#' comments; '-' reads stdin): one Slurm job array for all.",
    )(fn)


def _specs(kind: str, params: dict[str, Any]) -> tuple[list[Any], bool]:
    """Validated specs for ``kind`` from a command's parameters, and whether they came from a file."""
    from . import specs

    main_arg = "uri" if kind == "pull-image" else "repo_id"
    from_file = params.pop("from_file")
    if (params[main_arg] is None) == (from_file is None):
        what = "URI" if kind == "pull-image" else "REPO_ID"
        raise BadInput(f"give either {what} or --from-file FILE (exactly one)")
    if from_file is not None and params.get("sif_name"):
        raise BadInput("--name names one image: it cannot be used with --from-file")
    from . import config

    profile = config.load_profile(params.pop("profile_name"))
    flags = {k: params.pop(k) for k in (*SLURM_FLAGS, "max_parallel")}
    settings = _settings(profile, kind, flags)

    def build(entry: str) -> Any:
        if kind == "pull-image":
            return specs.pull_image(
                entry, profile, settings, to=params["to"], name=params.get("sif_name"), force=params["force"]
            )
        repo_id, revision = (entry, params["revision"]) if from_file is None else specs.split_repo_revision(entry)
        return specs.download_model(
            repo_id,
            profile,
            settings,
            revision=revision,
            shared=params["shared"],
            include=params["include"],
            exclude=params["exclude"],
            force=params["force"],
        )

    if from_file is None:
        return [build(params[main_arg])], False
    if kind == "download-model" and params["revision"] is not None:
        raise BadInput("--revision applies to one model: with --from-file write repo@revision per line")
    what = "URI" if kind == "pull-image" else "model"
    return [spec for _line, spec in specs.from_list(from_file, build, what)], True


def _define_kind(kind: str, options: Callable[..., Any], submit_help: str, artefact: str) -> None:
    """Create ``bfjobs submit KIND`` and ``bfjobs render KIND`` from one option set."""

    @submit.command(kind, help=submit_help)
    @options
    @list_options
    @click.option("--wait", "wait_", is_flag=True, help=f"Wait for the job; exit 0 only if the {artefact} is in place.")
    @click.option("--json", "as_json", is_flag=True, help="Print a JSON object (an array with --from-file).")
    @click.pass_obj
    def submit_kind(ctx: Context, wait_: bool, as_json: bool, **params: Any) -> None:
        specs, many = _specs(kind, params)
        _submit_and_report(ctx, specs, many, wait_, as_json)

    @render_group.command(kind, help=f"Print the sbatch script `bfjobs submit {kind}` would submit.")
    @options
    @list_options
    @click.pass_obj
    def render_kind(ctx: Context, **params: Any) -> None:
        specs, many = _specs(kind, params)
        _builtin_notice(specs[0].profile)
        if not specs[0].profile.is_slurm:
            _echo_err("bfjobs: local profile: jobs run without sbatch; this is what a Slurm profile would submit")
        _render_and_report(ctx, specs, many)


def _render_and_report(ctx: Context, specs: list[Any], many: bool) -> None:
    """``render``: submit's checks, then the script for what submit would send (nothing if none).

    What submit would not send (present, in flight) gets submit's message on stderr, so stdout
    holds only the script; a refused destination is submit's error and exit code.
    """
    from . import api

    outcomes, script = api.preview_plan(ctx.db, specs, many, _echo_err)
    element = 0
    for spec, outcome in zip(specs, outcomes, strict=True):
        if outcome is None:
            if many:
                _echo_err(f"bfjobs: array element {element}: {spec.label}")
            element += 1
        else:
            _echo_err(f"bfjobs: skipped {spec.label}: {outcome.describe()}" if many else outcome.describe())
    if script is not None:
        click.echo(script, nl=False)


_define_kind(
    "pull-image",
    pull_image_options,
    "Pull URI (docker://, oras://, library://, shub://, https://) into Blackfish's image cache.",
    "image",
)
_define_kind(
    "download-model",
    download_model_options,
    "Download a Hugging Face model snapshot (REPO_ID = namespace/name) into Blackfish's model cache.\n\n"
    "The shared cache is checked first, then yours (with --shared only the shared cache): a snapshot holding\n"
    "every file the request selects is used as it is. Filters are additive: other files fill the same snapshot.",
    "snapshot",
)


@cli.command()
@click.argument("refs", nargs=-1, metavar="[JOB_ID|PATH]...")
@profile_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of findings.")
@click.option(
    "--accept-unverified", is_flag=True, help="Exit 0 for artefacts with nothing to check against (UNVERIFIED)."
)
@click.pass_obj
def verify(
    ctx: Context, refs: tuple[str, ...], profile_name: str | None, as_json: bool, accept_unverified: bool
) -> None:
    """Check artefacts for corruption: images against the sha256 recorded when they were pulled
    (in the cache's .bfjobs folder, or the job's result), snapshots against the hub's tree listing.
    A PATH may be an image, a snapshot, or a folder of them (everything under it is checked).
    Without arguments: every artefact of a completed job. Exit 0 only if every artefact is OK
    (or UNVERIFIED, with --accept-unverified). Reads every byte: run it on a data-transfer node."""
    from . import api
    from .verify import UNVERIFIED

    _check_profile_name(ctx, profile_name)
    findings = api.verify(ctx.db, list(refs), profile_name)
    if as_json:
        _print_json([f.to_json() for f in findings])
    else:
        for f in findings:
            note = f" ({f.problem})" if f.problem else ""
            click.echo(f"{f.status:<10} {f.kind:<8} {f.path}{note}")
    bad = [f for f in findings if not f.ok and not (accept_unverified and f.status == UNVERIFIED)]
    if bad:
        first = bad[0]
        hint = "; --accept-unverified accepts it" if first.status == UNVERIFIED else ""
        raise JobFailed(
            f"{len(bad)} of {len(findings)} artefact(s) failed verification: {first.status} {first.path}{hint}"
        )


@cli.command()
@click.pass_obj
def sync(ctx: Context) -> None:
    """Register finished downloads in Blackfish's model table (after Blackfish created it)."""
    from . import registry, tracking

    tracking.refresh(ctx.db, ctx.db.unfinished(), ctx.backends)
    registered, waiting = registry.sync(ctx.db)
    registry.unregistered.clear()  # the line below counts the ones the refresh saw complete
    click.echo(f"registered {registered} model(s) in Blackfish's model table; {waiting} waiting")
    if waiting:
        _echo_err(
            f"bfjobs: {waiting} finished download(s) kept in bfjobs' table only: {ctx.db.safe_url()} has no "
            "Blackfish 'model' table yet (start Blackfish once, then run `bfjobs sync`)"
        )


def _resolve_all(ctx: Context, refs: Sequence[str]) -> list[JobRow]:
    """Each job the JOB_IDs name (bfjobs id, Slurm job id — an array's id names all its
    elements — or unique id prefix) once, in the order given."""
    rows = {}
    for ref in refs:
        for row in ctx.db.resolve_many(ref):
            rows.setdefault(row.id, row)
    return list(rows.values())


def _one_job(refs: Sequence[str], rows: Sequence[JobRow]) -> bool:
    """Did the command name exactly one job (JSON: one object), not a job array's id?"""
    return len(refs) == 1 and len(rows) == 1 and not (rows[0].native_id or "").startswith(refs[0] + "_")


def _show_jobs(rows: Sequence[JobRow], empty: str, progress: dict[str, dict[str, Any]] | None = None) -> None:
    from .views import print_jobs

    if not rows:
        click.echo(empty)
        return
    print_jobs(rows, progress=progress)


class SinceType(click.ParamType):
    """``--since``: an ISO date/time (local unless it says Z or an offset) or an age like 12h, 7d."""

    name = "DATE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from .views import parse_since

        try:
            return parse_since(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


@cli.command()
@click.argument("job_ids", nargs=-1)
@profile_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object for one JOB_ID, else an array.")
@click.pass_obj
def status(ctx: Context, job_ids: tuple[str, ...], profile_name: str | None, as_json: bool) -> None:
    """Refresh and show jobs (the given ones, or every unfinished one).

    One accounting query for all of them (plus at most one squeue call for jobs too new for
    accounting, or for all of them where there is no accounting). Exit 1 if Slurm could not be
    asked about some job.
    """
    from . import tracking
    from .backends import folder
    from .errors import ClusterError

    _check_profile_name(ctx, profile_name)
    rows = _resolve_all(ctx, job_ids) if job_ids else ctx.db.unfinished()
    if profile_name:
        rows = [r for r in rows if r.profile == profile_name]
    report = tracking.refresh_report(ctx.db, rows, ctx.backends)
    rows = report.rows
    if as_json:
        _print_json(_jobs_json(rows, single=_one_job(job_ids, rows)))
    else:
        _show_jobs(rows, "no unfinished jobs", folder.read_progress(rows))
    if report.problems:
        raise ClusterError(f"some jobs were not refreshed: {report.problems[0]}")


@cli.command(name="list")
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(states.NAMES, case_sensitive=False),
    help="Only jobs in this state (repeatable).",
)
@click.option("--kind", type=click.Choice(list(constants.KINDS)), help="Only this kind of job.")
@profile_option
@click.option("--since", type=SinceType(), help="Only jobs submitted since DATE (2026-11-27T08:00, 12h, 7d).")
@click.option(
    "--limit", type=click.IntRange(0, 10_000_000), default=50, show_default=True, help="At most N jobs (0: all)."
)
@click.option("--refresh", is_flag=True, help="Ask Slurm (once) about unfinished jobs first.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of job objects.")
@click.pass_obj
def list_(
    ctx: Context,
    states: tuple[str, ...],
    kind: str | None,
    profile_name: str | None,
    since: Any,
    limit: int,
    refresh: bool,
    as_json: bool,
) -> None:
    """List jobs from the database, newest first (no Slurm call unless --refresh)."""
    _check_profile_name(ctx, profile_name)
    problems: list[str] = []
    if refresh:
        from . import tracking

        problems = tracking.refresh_report(ctx.db, ctx.db.unfinished(), ctx.backends).problems
    rows = ctx.db.listing(
        states=[s.upper() for s in states], kind=kind, profile=profile_name, since=since, limit=limit
    )
    if as_json:
        _print_json([r.to_json() for r in rows])
    else:
        _show_jobs(rows, "no jobs")
    if problems:
        from .errors import ClusterError

        raise ClusterError(f"some jobs were not refreshed: {problems[0]}")


@cli.command()
@click.argument("job_ids", nargs=-1, required=True)
@click.option(
    "--timeout", type=click.FloatRange(0, None), callback=lambda _c, _p, v: _no_nan("--timeout", v),
    help="Give up after this many seconds (exit 1).",
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def wait(ctx: Context, job_ids: tuple[str, ...], timeout: float | None, as_json: bool) -> None:
    """Wait for jobs to end; exit 0 only if all COMPLETED (1 otherwise, or on --timeout).

    Polls with back-off (1 s, growing to 30 s; local jobs 0.2 s to 2 s); on a terminal a
    progress line shows each job's state and node. A job Slurm no longer knows ends the wait
    as UNKNOWN instead of hanging.
    """
    rows = _resolve_all(ctx, job_ids)
    _wait_and_report(ctx, [r.id for r in rows], timeout, as_json, one_job=_one_job(job_ids, rows))


@cli.command()
@click.argument("job_id")
@click.option("--stderr", "use_stderr", is_flag=True, help="The job's stderr log instead of its stdout.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new output until the job ends.")
@click.pass_obj
def logs(ctx: Context, job_id: str, use_stderr: bool, follow: bool) -> None:
    """Print a job's output from its job folder (--follow: until the job ends).

    With --follow the exit code says how the job ended, as for ``wait``: 0 only if COMPLETED.
    """
    from . import joblogs
    from .backends import folder

    row = ctx.db.resolve(job_id)
    out = click.get_binary_stream("stdout")
    stream = "err" if use_stderr else "out"
    try:
        row = joblogs.show(ctx.db, row, stream, out, follow=follow, backends=ctx.backends)
    except BrokenPipeError:  # `bfjobs logs X | head`: the reader has all it wanted
        _silence_stdout()
        return
    log = folder.log_path(row, stream)
    if not follow and log is not None and not log.exists():  # not started: say so rather than print nothing
        why = f" ({row.reason})" if row.reason else ""
        _echo_err(f"bfjobs: job {row.id} is {row.state}{why}: no log yet")
    if follow:
        why = f" ({row.reason})" if row.reason else ""
        if row.state != "COMPLETED":  # as `wait`: a script following a job learns how it ended
            raise JobFailed(f"job {row.id} ended: {row.state}{why}")
        _echo_err(f"bfjobs: job {row.id} ended: {row.state}{why}")


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the exit-time flush cannot fail."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


@cli.command()
@click.argument("job_ids", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the jobs afterwards (an object for one JOB_ID).")
@click.pass_obj
def cancel(ctx: Context, job_ids: tuple[str, ...], as_json: bool) -> None:
    """Cancel jobs: one scancel for all Slurm jobs; local jobs get SIGTERM.

    The task removes its partial file when signalled, so nothing half-published remains. The
    job reads CANCELLED once Slurm says so (waited for a few seconds). Exit 1 if Slurm refused.
    """
    from . import tracking
    from .errors import ClusterError

    named = _resolve_all(ctx, job_ids)
    outcomes = tracking.cancel(ctx.db, named, ctx.backends)
    if as_json:
        rows = [o.row.to_json() for o in outcomes]
        _print_json(rows[0] if _one_job(job_ids, named) else rows)
    else:
        for o in outcomes:
            text = {
                "cancelled": f"cancelled ({o.row.state})",
                "requested": f"cancel requested; {o.message}",
                "already ended": f"already ended: {o.row.state}",
                "refused": f"not cancelled: {o.message}",
            }[o.action]
            click.echo(f"{o.row.id}  {_native(o.row)}  {text}")
    refused = [o for o in outcomes if o.action == "refused" and o.row.state not in tracking.ENDED]
    if refused:
        raise ClusterError(f"{len(refused)} job(s) not cancelled: {refused[0].row.id}: {refused[0].message}")


# ----------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None, backends: Backends | None = None) -> None:
    """Console-script entry point; ``backends``: the entry's, holding a prestarted ``sacct``."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="bfjobs", obj=backends)
