"""The facade: every ``bfjobs`` command as a method of :class:`Client`, returning a result object.

A CLI command is "open a client, call one method, print the result"; a Python caller (Blackfish,
a site's script) makes the same calls. Domain rules live here, not in the CLI: what success means
(COMPLETED *and* the artefact in place), how a timeout is worded, which exit code a result implies.
Heavy modules (SQLAlchemy, submitit, huggingface_hub, Jinja) are imported only by the calls that
need them, so a client is cheap to create and ``list`` stays on the stdlib path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, BinaryIO

from ..errors import BadInput, ClusterError, JobFailed, show
from .results import (
    CacheListResult,
    CachePruneResult,
    CacheRemoveResult,
    CancelResult,
    ConfigResult,
    DoctorResult,
    JobsPruneResult,
    JobsResult,
    LogsResult,
    Outcome,
    RenderResult,
    SubmitResult,
    SyncResult,
    VerifyResult,
)

if TYPE_CHECKING:
    from .. import config
    from ..backends import Backends
    from ..specs import JobSpec
    from ..store import Database, JobRow

#: The Slurm options of submit/render (they override bfjobs.toml), with what each sets: the
#: one list of them (the CLI makes its flags from it).
SLURM_OPTION_HELP = {
    "partition": "Slurm partition (e.g. a data-mover partition).",
    "qos": "Slurm QOS (e.g. xfer at NERSC).",
    "account": "Slurm account to charge.",
    "time": "Time limit, e.g. 02:00:00.",
    "mem": "Memory, e.g. 8G.",
    "cpus_per_task": "CPUs for the job.",
    "constraint": "Slurm node features.",
}
SLURM_OPTIONS = tuple(SLURM_OPTION_HELP)

#: ``on_tick(rows, elapsed_s)``: called after each poll of a wait.
OnTick = Callable[[list["JobRow"], float], None]


def _ignore(_message: str) -> None:
    pass


class Client:
    """bfjobs as a library. ``db_url``: the job store (default: ``BFJOBS_DB_URL``, else Blackfish's
    app.sqlite); ``db``: an already opened store instead. The store is opened on first use."""

    def __init__(
        self, db_url: str | None = None, *, db: Database | None = None, backends: Backends | None = None
    ) -> None:
        self.db_url = db_url
        self._db = db
        self._backends = backends

    @property
    def backends(self) -> Backends:
        """The backends of this client (one per command: a prestarted ``sacct``, Slurm's memo)."""
        if self._backends is None:
            from ..backends import Backends

            self._backends = Backends()
        return self._backends

    def close(self) -> None:
        """Close the store's connection of this thread, if one was opened (it reopens on use)."""
        if self._db is not None:
            self._db.close()

    @property
    def db(self) -> Database:
        if self._db is None:
            from ..store import Database

            self._db = Database(self.db_url)
        return self._db

    # ------------------------------------------------------------------ submit / render

    def specs(
        self,
        kind: str,
        what: str | None = None,
        *,
        from_file: str | None = None,
        profile: str | None = None,
        **options: Any,
    ) -> tuple[list[JobSpec], bool]:
        """Validated requests of ``kind`` for ``what`` (its main argument: a URI, a REPO_ID) or each
        line of ``from_file`` ('-': stdin), and whether they came from a file. ``options``: the kind's
        options (the ``dest`` of each of :func:`kinds`' options), the Slurm options of
        :data:`SLURM_OPTIONS` and ``max_parallel``."""
        found, many, _entries, _flags = self._requests(kind, what, from_file=from_file, profile=profile, **options)
        return found, many

    def _requests(
        self, kind: str, what: str | None, *, from_file: str | None, profile: str | None, **options: Any
    ) -> tuple[list[JobSpec], bool, list[tuple[str | None, str]], dict[str, Any]]:
        """:meth:`specs`, with each spec's entry as written (origin, text) and the validated flags."""
        from .. import config, kinds, specs

        kind_ = kinds.get(kind)
        if (what is None) == (from_file is None):
            raise BadInput(f"give either {kind_.argument.metavar} or --from-file FILE (exactly one)")
        kind_.check_params(options, from_file=from_file is not None)
        where = config.load_profile(profile)
        flags = config.check_overrides(**{k: options.get(k) for k in (*SLURM_OPTIONS, "max_parallel")})
        settings = kinds.resolve_settings(where.name, kind, flags=flags, remote=where.remote).settings
        written: dict[str, str] = {}  # entry as written, by label (a list's specs are copies with an origin)

        def build(entry: str) -> JobSpec:
            spec = kind_.build(entry, where, settings, options, from_file=from_file is not None)
            written[spec.label] = entry
            return spec

        if from_file is None:
            assert what is not None
            return [build(what)], False, [(None, what)], flags
        found = [spec for _line, spec in specs.from_list(from_file, build, kind_.argument.entry)]
        return found, True, [(s.origin, written[s.label]) for s in found], flags

    def _remote_args(
        self,
        found: list[JobSpec],
        entries: list[tuple[str | None, str]],
        flags: dict[str, Any],
        many: bool,
        options: dict[str, Any],
    ) -> dict[str, Any]:
        from .. import kinds
        from . import remote

        dests = {o.dest for o in kinds.get(found[0].kind).options}
        return remote.request_args(found, entries, {k: v for k, v in options.items() if k in dests}, flags, many)

    def submit(
        self,
        kind: str,
        what: str | None = None,
        *,
        from_file: str | None = None,
        profile: str | None = None,
        wait: bool = False,
        note: Callable[[str], None] = _ignore,
        on_submitted: Callable[[SubmitResult], None] | None = None,
        on_tick: OnTick | None = None,
        on_problems: Callable[[list[str]], None] | None = None,
        **options: Any,
    ) -> SubmitResult:
        """Submit a request (or one Slurm job array per 1,000 lines of ``from_file``) unless its
        artefact is present or already being fetched; with ``wait``, wait for what was submitted
        or is in flight: success then means every job COMPLETED with its artefact in place.

        ``note`` hears progress lines meant for stderr (the hub not reachable from here);
        ``on_submitted`` sees the submission before the wait starts (the CLI prints it then).
        """
        from ..specs import AlreadyPresent
        from . import submission

        specs, many, entries, flags = self._requests(kind, what, from_file=from_file, profile=profile, **options)
        if specs[0].profile.remote:
            from . import remote

            args = self._remote_args(specs, entries, flags, many, options)
            outcomes: list[Outcome] = remote.submit(self.db, specs, args, note, self.backends)
        elif many:
            outcomes = submission.submit_many(self.db, specs, note, self.backends)
        else:
            outcomes = [submission.submit(self.db, specs[0], note, self.backends)]
        flying = {o.row.id for o in outcomes if isinstance(o, submission.InFlight)}
        result = SubmitResult(
            list(outcomes),
            labels=[s.label for s in specs],
            notice=builtin_notice(specs[0].profile),
            in_flight=flying,
        )
        waiting = [o.row.id if isinstance(o, submission.InFlight) else o.id for o in result.rows]
        if not (wait and waiting):
            return result
        if on_submitted is not None:
            on_submitted(result)
        waited = self._wait(waiting, None, on_tick, on_problems)
        present = [o for o in outcomes if isinstance(o, AlreadyPresent)]
        return SubmitResult(
            [*present, *waited.jobs],
            progress=waited.progress,
            error=waited.error,
            labels=result.labels,
            notice=result.notice,
            waited=True,
            in_flight=flying,
        )

    def render(
        self,
        kind: str,
        what: str | None = None,
        *,
        from_file: str | None = None,
        profile: str | None = None,
        note: Callable[[str], None] = _ignore,
        **options: Any,
    ) -> RenderResult:
        """The sbatch script ``submit`` would send, after submit's checks (present and in-flight
        requests are left out and reported; a destination submit would refuse raises as submit does).
        ``note`` hears the result's ``notices`` first, then what the hub check has to say."""
        from . import submission

        specs, many, entries, flags = self._requests(kind, what, from_file=from_file, profile=profile, **options)
        notices = [n for n in [builtin_notice(specs[0].profile)] if n]
        if not self.backends.for_profile(specs[0].profile).uses_script:
            notices.append("bfjobs: local profile: jobs run without sbatch; this is what a Slurm profile would submit")
        for notice in notices:  # before the checks: they say what the script below is for
            note(notice)
        if specs[0].profile.remote:
            from . import remote

            args = self._remote_args(specs, entries, flags, many, options)
            outcomes, script = remote.render(self.db, specs, args, note, self.backends)
        else:
            outcomes, script = submission.preview_plan(self.db, specs, many, note, self.backends)
        return RenderResult(script, outcomes, [s.label for s in specs], many, notices)

    # ------------------------------------------------------------------ jobs

    def resolve(self, refs: Iterable[str]) -> list[JobRow]:
        """Each job the refs name (bfjobs id, Slurm job id — an array's id names all its elements —
        or unique id prefix) once, in the order given."""
        rows: dict[str, JobRow] = {}
        for ref in refs:
            for row in self.db.resolve_many(ref):
                rows.setdefault(row.id, row)
        return list(rows.values())

    def check_profile(self, name: str | None) -> None:
        """A ``profile`` filter names a profile that exists (in profiles.cfg, built in, or one with
        jobs in the store, e.g. removed since): a typo is an error, not "no jobs"."""
        if name is None:
            return
        from .. import config

        if name in config.known_profiles() or self.db.listing(profile=name, limit=1):
            return
        raise config.unknown_profile(name)

    def progress(self, rows: Sequence[JobRow]) -> dict[str, dict[str, Any]]:
        """Progress records by job id (running jobs' latest figures, ended jobs' final ones), read
        where each job runs (a remote profile's: what its cluster's last survey sent)."""
        names = {r.backend for r in rows}
        by_backend: dict[str, Sequence[JobRow]]
        if len(names) == 1:  # the usual case: no regrouping of 10,000 rows
            by_backend = {names.pop(): rows}
        else:
            grouped: dict[str, list[JobRow]] = {}
            for row in rows:
                grouped.setdefault(row.backend, []).append(row)
            by_backend = dict(grouped)
        found: dict[str, dict[str, Any]] = {}
        for name, group in by_backend.items():
            found.update(self.backends.named(name).read_progress(group))
        return found

    def status(
        self,
        job_ids: Sequence[str] = (),
        *,
        profile: str | None = None,
        on_stored: Callable[[Sequence[JobRow]], object] | None = None,
    ) -> JobsResult:
        """Refresh and report jobs with one Slurm query: the given ones in the order given (an array's
        elements by index), or every unfinished one newest first, as ``list`` orders them; fails
        (ClusterError) if Slurm could not be asked about some job.

        ``on_stored`` is called with the rows as stored, in that order, before Slurm's answer is
        awaited: the command's early ``sacct`` is usually still running then, so work done there
        (the CLI lays out its table) costs no time. The rows it gets are those refreshed after."""
        from .. import tracking

        self.check_profile(profile)
        rows = self.resolve(job_ids) if job_ids else self.db.unfinished(newest_first=True)
        if profile:
            rows = [r for r in rows if r.profile == profile]
        if on_stored is not None:
            on_stored(rows)
        report = tracking.refresh_report(self.db, rows, self.backends)  # keeps the rows' order
        shown = report.rows
        return JobsResult(shown, progress=self.progress(shown), problems=report.problems)

    def list_jobs(
        self,
        *,
        states: Sequence[str] = (),
        kind: str | None = None,
        profile: str | None = None,
        since: datetime | str | None = None,
        limit: int = 50,
        refresh: bool = False,
    ) -> JobsResult:
        """Jobs from the store, newest first (``limit`` 0: all); no Slurm call unless ``refresh``.
        ``since``: a datetime (naive UTC) or text as :func:`parse_since` reads it."""
        self.check_profile(profile)
        problems: list[str] = []
        if refresh:
            from .. import tracking

            problems = tracking.refresh_report(self.db, self.db.unfinished(), self.backends).problems
        if isinstance(since, str):
            since = parse_since(since)
        rows = self.db.listing(states=[s.upper() for s in states], kind=kind, profile=profile, since=since, limit=limit)
        return JobsResult(rows, problems=problems)

    def wait(
        self,
        job_ids: Sequence[str],
        *,
        timeout: float | None = None,
        on_tick: OnTick | None = None,
        on_problems: Callable[[list[str]], None] | None = None,
    ) -> JobsResult:
        """Wait for jobs to end (or ``timeout`` seconds); succeeds only if every one COMPLETED
        with its artefact in place. A job Slurm no longer knows ends the wait as UNKNOWN."""
        return self._wait([r.id for r in self.resolve(job_ids)], timeout, on_tick, on_problems)

    def _wait(
        self,
        ids: Sequence[str],
        timeout: float | None,
        on_tick: OnTick | None,
        on_problems: Callable[[list[str]], None] | None = None,
    ) -> JobsResult:
        from .. import tracking
        from ..states import COMPLETED

        rows = tracking.wait(
            self.db, ids, timeout=timeout, on_tick=on_tick, backends=self.backends, on_problems=on_problems
        )
        remote = [r for r in rows if r.state == COMPLETED and not self.backends.of(r).here]
        if remote:  # one round trip per cluster for all of them
            self.backends.named("remote").check_in_place(remote)  # type: ignore[attr-defined]
        bad = [r for r in rows if r.state != COMPLETED or not self._in_place(r)]
        error = JobFailed(not_ok_message(rows, bad, timeout)) if bad else None
        return JobsResult(rows, progress=self.progress(rows), error=error)

    def _in_place(self, row: JobRow) -> bool:
        """:func:`artefact_in_place`, asked where the artefact lives (a remote profile: its cluster)."""
        backend = self.backends.of(row)
        return artefact_in_place(row) if backend.here else backend.artefact_in_place(row)  # type: ignore[attr-defined]

    def cancel(self, job_ids: Sequence[str]) -> CancelResult:
        """Cancel jobs: one scancel for all Slurm jobs, SIGTERM for local ones; fails if Slurm
        refused a job that has not ended."""
        from .. import tracking
        from ..states import ENDED

        outcomes = tracking.cancel(self.db, self.resolve(job_ids), self.backends)
        refused = [o for o in outcomes if o.action == "refused" and o.row.state not in ENDED]
        error = None
        if refused:
            error = ClusterError(f"{len(refused)} job(s) not cancelled: {refused[0].row.id}: {refused[0].message}")
        return CancelResult(
            [o.row for o in outcomes],
            error=error,
            actions={o.row.id: o.action for o in outcomes},
            messages={o.row.id: o.message for o in outcomes},
        )

    def logs(self, job_id: str, out: BinaryIO, *, stderr: bool = False, follow: bool = False) -> LogsResult:
        """Write a job's stdout (``stderr``: its stderr) log to ``out``; with ``follow`` until the job
        ends, and then succeed only if it COMPLETED (as ``wait``)."""
        from ..backends import folder
        from ..states import COMPLETED
        from . import logs as joblogs

        stream = "err" if stderr else "out"
        row = joblogs.show(self.db, self.db.resolve(job_id), stream, out, follow=follow, backends=self.backends)
        why = f" ({row.reason})" if row.reason else ""
        if follow:
            if row.state != COMPLETED:  # a script following a job learns how it ended
                return LogsResult(row, error=JobFailed(f"job {row.id} ended: {row.state}{why}"))
            return LogsResult(row, notice=f"bfjobs: job {row.id} ended: {row.state}{why}")
        log = folder.log_path(row, stream)
        if log is not None and not log.exists():  # not started: say so rather than print nothing
            return LogsResult(row, notice=f"bfjobs: job {row.id} is {row.state}{why}: no log yet")
        return LogsResult(row)

    # ------------------------------------------------------------------ cache

    def sync(self) -> SyncResult:
        """Register finished downloads in Blackfish's model table (after Blackfish created it)."""
        from .. import kinds, tracking
        from ..store import blackfish as registry

        tracking.refresh(self.db, self.db.unfinished(), self.backends)
        registered, waiting = registry.sync(self.db, kinds.registering())
        self.db.unregistered.clear()  # the notice below counts the ones the refresh saw complete
        notice = None
        if waiting:
            notice = (
                f"bfjobs: {waiting} finished download(s) kept in bfjobs' table only: {self.db.safe_url()} has no "
                "Blackfish 'model' table yet (start Blackfish once, then run `bfjobs sync`)"
            )
        return SyncResult(registered, waiting, notice)

    def doctor(self, *, profile: str | None = None) -> DoctorResult:
        """Can this profile run jobs from here? The profile, the settings, the scheduler's commands,
        partition and QOS (asked once each), the caches' permissions, the hub and the interpreter
        the jobs run; fails if any check failed (warnings do not)."""
        from . import doctor

        name, checks = doctor.run(profile, self.backends)
        return DoctorResult(name, checks)

    def config(self, *, profile: str | None = None) -> ConfigResult:
        """A profile's merged job settings for every kind and where each came from (the site
        file, the user's ``bfjobs.toml``, an environment variable, or the built-in default)."""
        from dataclasses import fields

        from .. import config, kinds

        where = config.load_profile(profile, check_dirs=False)
        path = config.profiles_path()
        profile_source = "built in" if where.builtin else str(path)
        site_file, _used, ignored = config.site_profiles()
        user_file = config.settings_path()
        settings: dict[str, dict[str, tuple[Any, str]]] = {}
        fixed: tuple[str, ...] = ()
        for kind in kinds.names():
            resolved = kinds.resolve_settings(where.name, kind, remote=where.remote)
            fixed = resolved.fixed
            settings[kind] = {
                f.name: (getattr(resolved.settings, f.name), resolved.sources[f.name])
                for f in fields(resolved.settings)
            }
        return ConfigResult(
            where.name,
            profile_source,
            str(site_file),
            site_file.is_file(),
            str(user_file),
            user_file.is_file(),
            fixed,
            ignored,
            settings,
        )

    def verify(
        self, refs: Sequence[str] = (), *, profile: str | None = None, accept_unverified: bool = False
    ) -> VerifyResult:
        """Check artefacts: job ids or paths (an artefact, or a folder of them), else the latest
        completed job per artefact. Succeeds only if each is OK (or UNVERIFIED, if accepted)."""
        from .. import config
        from . import cluster

        self.check_profile(profile)
        rows: list[JobRow] = []
        paths = [ref for ref in refs if ref == "." or "/" in ref]  # a job id never holds a "/"
        for ref in refs:
            if ref not in paths:
                rows.extend(self.db.resolve_many(ref))
        if not refs:
            latest: dict[str, JobRow] = {}
            for row in self.db.listing(states=["COMPLETED"], profile=profile):
                latest.setdefault(row.target + "@" + str((row.result or {}).get("commit")), row)
            rows = list(latest.values())
        where = config.load_profile(profile, check_dirs=False) if paths else None
        if where is not None and not where.remote:
            where = config.load_profile(profile)  # its folders must exist here
        here = [r for r in rows if self.backends.of(r).here]
        findings = []
        if where is not None and where.remote:
            findings += self._verify_remote(where.name, paths, [])
        elif where is not None:
            findings += cluster.check_artefacts(where, paths, [])
        findings += cluster.check_artefacts(None, [], here)
        remote: dict[str, list[JobRow]] = {}
        for row in rows:
            if row not in here:
                remote.setdefault(row.profile, []).append(row)
        for name, group in remote.items():
            findings += self._verify_remote(name, [], group)
        return VerifyResult(findings, accept_unverified)

    def _verify_remote(self, profile: str, paths: list[str], rows: list[JobRow]) -> list[Any]:
        """``verify`` of a remote profile's artefacts, on its cluster (one round trip)."""
        from ..backends.remote import encode_rows
        from ..verify import Finding

        agent = self.backends.named("remote").agent(profile)  # type: ignore[attr-defined]
        profile_ = agent.profile
        answer = agent.call(
            "verify",
            {
                "profile": {
                    "name": profile_.name,
                    "home_dir": str(profile_.home_dir),
                    "cache_dir": str(profile_.cache_dir),
                },
                "paths": paths,
                "rows": encode_rows(rows),
            },
        )
        from ..backends.protocol import one_line
        from ..verify import STATUSES

        with agent.reading("verify"):
            found = []
            for f in answer:
                status = str(f["status"])
                if status not in STATUSES:
                    raise ValueError(status)
                found.append(
                    Finding(
                        path=one_line(str(f["path"])),
                        kind=one_line(str(f["kind"])),
                        status=status,
                        problem=None if f.get("problem") is None else one_line(str(f["problem"])),
                        job_id=None if f.get("job_id") is None else one_line(str(f["job_id"])),
                        checked_files=int(f.get("checked_files") or 0),
                    )
                )
        return found

    def _cache_profile(self, profile: str | None) -> config.Profile:
        """The profile whose caches a ``cache`` command acts on: a remote one's folders are the
        cluster's (checked there), a local one's must exist here."""
        from .. import config

        where = config.load_profile(profile, check_dirs=False)
        return where if where.remote else config.load_profile(profile)

    def _cache_call(self, where: config.Profile, op: str, args: dict[str, Any], progress: Any = None) -> Any:
        """One ``cache`` request to a remote profile's cluster (its folders sent along)."""
        agent = self.backends.named("remote").agent(where.name)  # type: ignore[attr-defined]
        sent = {"name": where.name, "home_dir": str(where.home_dir), "cache_dir": str(where.cache_dir)}
        return agent, agent.call(op, {"profile": sent, **args}, timeout=24 * 3600.0, progress=progress)

    def cache_ls(self, *, profile: str | None = None, check_upstream: bool = False) -> CacheListResult:
        """Every model snapshot and image in the profile's two caches (a remote profile's: one round
        trip), each model marked with whether Blackfish's ``model`` table has it; ``check_upstream``:
        each image marked with what its tag names now (its registry asked from here, once per image)."""
        import os

        from ..caches import Entry, Space
        from ..store import blackfish as registry
        from . import caches

        where = self._cache_profile(profile)
        if where.remote:
            agent, answer = self._cache_call(where, "cache_ls", {})
            with agent.reading("cache ls"):
                entries = [caches.decode(Entry, e) for e in answer["entries"]]
                spaces = [caches.decode(Space, x) for x in answer["spaces"]]
        else:
            entries, spaces = caches.ls_here(where)
        keys = registry.model_keys(self.db, where.name)
        for entry in entries:
            if entry.kind == "model" and keys is not None:
                model_dir = os.path.dirname(os.path.dirname(entry.path))
                entry.blackfish = (entry.repo_id, entry.commit, model_dir) in keys
        if check_upstream:
            from .. import kinds
            from ..kinds.image import KIND as IMAGE

            settings = kinds.resolve_settings(where.name, IMAGE.name, remote=where.remote).settings
            caches.check_upstream(entries, settings.insecure_registries)
        return CacheListResult(where.name, entries, spaces)

    def cache_rm(
        self,
        targets: Sequence[str],
        *,
        profile: str | None = None,
        shared: bool = False,
        dry_run: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> CacheRemoveResult:
        """Remove snapshots (``REPO_ID@REV``), whole repos (``REPO_ID``) or images (``NAME.sif``)
        from the profile's home cache (``shared``: its shared cache), and the Blackfish ``model``
        rows of the snapshots that went. Every target is checked before anything is removed."""
        from ..caches import Removal
        from ..store import blackfish as registry
        from . import caches

        if not targets:
            raise BadInput("cache rm: name at least one TARGET (REPO_ID@REV, REPO_ID or NAME.sif)")
        parsed = [caches.parse_target(t) for t in targets]
        where = self._cache_profile(profile)
        self._refuse_live(where, shared, parsed)
        rows = 0

        def forget(removal: Removal) -> None:  # as each removal is done: a later one may fail
            nonlocal rows
            if not dry_run:
                rows += registry.delete_models(self.db, where.name, _removed_models(where, shared, parsed, [removal]))

        if where.remote:
            agent, answer = self._cache_call(
                where, "cache_rm", {"targets": parsed, "shared": shared, "dry_run": dry_run}, progress
            )
            with agent.reading("cache rm"):
                removals = [caches.decode(Removal, r) for r in answer["removed"]]
                failed = None if answer["error"] is None else (str(answer["error"]), str(answer["type"]))
            for removal in removals:
                forget(removal)
            if failed is not None:
                from ..backends.protocol import one_line
                from ..backends.remote import ERROR_TYPES

                raise ERROR_TYPES.get(failed[1], ClusterError)(f"on {agent.target.host}: {one_line(failed[0])}")
        else:
            removals = caches.rm_here(
                where, parsed, shared=shared, dry_run=dry_run, progress=progress or caches.no_progress,
                on_removed=forget,
            )
        return CacheRemoveResult(where.name, removals, dry_run, rows)

    def _refuse_live(self, where: config.Profile, shared: bool, parsed: Sequence[dict[str, Any]]) -> None:
        """Refuse a target one of this database's unfinished jobs is fetching (named by its id);
        jobs of other users and databases are found by their locks, where the caches are."""
        from .. import layout

        base = where.cache_dir if shared else where.home_dir
        wanted = {}
        for target in parsed:
            if target["kind"] == "image":
                wanted[str(layout.images_dir(base) / str(target["name"]))] = str(target["name"])
            else:
                wanted[str(layout.repo_dir(layout.models_dir(base), str(target["repo_id"])))] = str(target["repo_id"])
        from .. import tracking
        from ..states import FINISHED

        rows = [r for r in self.db.unfinished(targets=list(wanted)) if r.profile == where.name]
        for row in tracking.refresh(self.db, rows, self.backends) if rows else []:
            if row.state not in FINISHED:
                raise BadInput(
                    f"cache rm: {wanted[row.target]} is being fetched by job {row.id} ({row.state}): "
                    "wait for it or cancel it first"
                )

    def cache_prune(
        self,
        *,
        profile: str | None = None,
        shared: bool = False,
        dry_run: bool = False,
        older_than: float | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> CachePruneResult:
        """Leftovers of killed jobs no running job owns, blobs no snapshot uses, dangling refs, and
        the Blackfish ``model`` rows whose snapshot is gone, in the profile's home cache (``shared``:
        its shared cache)."""
        from ..caches import Leftover
        from ..store import blackfish as registry
        from . import caches

        where = self._cache_profile(profile)
        keys = sorted(registry.model_keys(self.db, where.name) or ())
        models = [(model_dir, revision) for _repo, revision, model_dir in keys]
        if where.remote:
            agent, answer = self._cache_call(
                where,
                "cache_prune",
                {"shared": shared, "dry_run": dry_run, "older_than": older_than, "models": models},
                progress,
            )
            with agent.reading("cache prune"):
                leftovers = [caches.decode(Leftover, x) for x in answer["leftovers"]]
                gone = {(str(a), str(b)) for a, b in answer["gone"]}
        else:
            found, gone_list = caches.prune_here(
                where, shared=shared, dry_run=dry_run, older_than=older_than, models=models,
                progress=progress or caches.no_progress,
            )
            leftovers, gone = found, set(gone_list)
        base = where.cache_dir if shared else where.home_dir  # a cluster's answer never reaches other rows
        rows = [
            (repo, revision, model_dir)
            for repo, revision, model_dir in keys
            if (model_dir, revision) in gone and caches.of_cache(base, model_dir, revision)
        ]
        if not dry_run:
            registry.delete_models(self.db, where.name, rows)
        return CachePruneResult(where.name, leftovers, rows, dry_run)

    def prune_jobs(
        self, *, profile: str | None = None, older_than: float | None = None, dry_run: bool = False
    ) -> JobsPruneResult:
        """Remove the folders of this database's finished jobs (their rows keep the results), never
        one a live job uses (an array's folder goes once every element has ended); ``older_than``
        seconds: only jobs that ended at least that long ago."""
        from .. import config, tracking
        from ..states import FINISHED
        from ..store import utcnow
        from . import caches

        if profile is not None:
            self.check_profile(profile)
        tracking.refresh(self.db, self.db.unfinished(), self.backends)
        rows = self.db.listing(profile=profile)
        by_folder: dict[tuple[str, str], list[JobRow]] = {}
        for row in rows:
            if row.folder:
                by_folder.setdefault((row.profile, row.folder), []).append(row)
        now = utcnow()
        chosen: dict[str, list[str]] = {}
        live = 0
        for (name, folder), group in sorted(by_folder.items()):
            if any(r.state not in FINISHED for r in group):
                live += 1
                continue
            ended = max((r.ended_at or r.updated_at or r.submitted_at) for r in group)
            if older_than is not None and ended is not None and (now - ended).total_seconds() < older_than:
                continue
            chosen.setdefault(name, []).append(folder)
        found: list[dict[str, Any]] = []
        for name, folders in chosen.items():
            try:
                where = config.load_profile(name, check_dirs=False)
            except BadInput as exc:
                found += [{"path": f, "bytes": 0, "removed": False, "skipped": str(exc)} for f in folders]
                continue
            if where.remote:
                agent, answer = self._cache_call(where, "prune_folders", {"folders": folders, "dry_run": dry_run})
                with agent.reading("jobs prune"):
                    found += [_folder_item(x) for x in answer]
            else:
                found += caches.prune_folders_here(where, folders, dry_run=dry_run)
        found = [f for f in found if not str(f.get("skipped") or "").startswith("not there")]
        return JobsPruneResult(found, live, dry_run)

    def unregistered_notice(self) -> str | None:
        """Once per command: the downloads it saw complete while Blackfish had no model table."""
        if self._db is None or not self._db.unregistered:
            return None
        ids, url = list(self._db.unregistered), self._db.safe_url()
        self._db.unregistered.clear()
        named = ", ".join(ids[:3]) + (", …" if len(ids) > 3 else "")
        return (
            f"bfjobs: {len(ids)} download(s) finished ({named}) and kept in bfjobs' table only: {url} has no "
            "Blackfish 'model' table yet (start Blackfish once, then run `bfjobs sync`)"
        )


# ---------------------------------------------------------------------- domain rules


def _removed_models(
    where: config.Profile, shared: bool, parsed: Sequence[dict[str, Any]], removals: Sequence[Any]
) -> list[tuple[str, str, str]]:
    """The Blackfish rows ``(repo, commit, model_dir)`` of the snapshots a removal took away: only of
    repos asked for, in the folder this profile's cache gives them (a cluster's answer is input:
    it never chooses which of the laptop's rows go)."""
    from .. import layout

    base = where.cache_dir if shared else where.home_dir
    asked = {
        str(t["repo_id"]) + ("" if t["revision"] is None else f"@{t['revision']}"): t
        for t in parsed
        if t["kind"] == "model"
    }
    keys = []
    for r in removals:
        target = asked.get(r.target)
        if r.kind != "model" or target is None or r.repo_id != target["repo_id"] or not r.removed:
            continue
        revision = target["revision"]
        if revision is not None and (len(r.commits) != 1 or (layout.is_commit(revision) and r.commits != [revision])):
            continue  # one revision asked: one snapshot removed, the one asked
        model_dir = str(layout.repo_dir(layout.models_dir(base), r.repo_id))
        if r.model_dir == model_dir:
            keys += [(r.repo_id, commit, model_dir) for commit in r.commits if layout.is_commit(commit)]
    return keys


def _folder_item(raw: Any) -> dict[str, Any]:
    """One job folder as a cluster reported its removal, checked (it reaches the terminal)."""
    from ..backends.protocol import one_line

    skipped = raw.get("skipped")
    size = raw.get("bytes")
    if not isinstance(size, int) or isinstance(size, bool):
        raise ValueError("bytes")
    return {
        "path": one_line(str(raw["path"])),
        "bytes": size,
        "removed": bool(raw.get("removed")),
        "skipped": None if skipped is None else one_line(str(skipped)),
    }


def artefact_in_place(row: JobRow) -> bool:
    """After COMPLETED: is the published artefact really there (as its kind says)?"""
    from .. import kinds

    return kinds.get(row.kind).artefact_in_place(row)


def not_ok_message(rows: Sequence[JobRow], bad: Sequence[JobRow], timeout: float | None) -> str:
    """Why a wait did not succeed, in one line: a timeout, or the first job that did not complete."""
    from .. import jobids
    from ..states import CANCELLED, COMPLETED, ENDED, cannot_start

    first = bad[0]
    if first.state not in ENDED:
        still = sum(r.state not in ENDED for r in rows)
        return (
            f"timed out after {timeout or 0:g} s: {still} of {len(rows)} job(s) not finished: "
            f"{first.id} is {first.state}"
        )
    if first.state == CANCELLED and cannot_start(first.reason):  # wait cancelled it
        count = f"{len(bad)} of {len(rows)} job(s) did not complete: " if len(rows) > 1 else ""
        return f"{count}job {first.id} ({jobids.describe(first)}) {first.reason}; it was cancelled"
    why = f" ({first.reason})" if first.reason else ""
    if first.state == COMPLETED:
        why = f" but its {first.kind} artefact is not in place ({first.target})"
    return f"{len(bad)} of {len(rows)} job(s) did not complete: {first.id} is {first.state}{why}"


def builtin_notice(profile: config.Profile) -> str | None:
    """Which built-in profile is used and why (None for a configured one); printed once the
    request was accepted, so an error stays the only line on stderr."""
    if not profile.builtin:
        return None
    from .. import config
    from ..backends import backend_class

    how = backend_class(profile.schema).builtin_reason()
    return (
        f"bfjobs: no {config.profiles_path()}; using the built-in '{profile.name}' profile "
        f"({how}; home_dir and cache_dir {profile.home_dir})"
    )


_RELATIVE_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_age(text: str) -> float:
    """``--older-than AGE`` (``30m``, ``12h``, ``7d``, ``2w``; a bare number is seconds): seconds."""
    import re

    match = re.fullmatch(r"(\d{1,6})([smhdw]?)", text.strip().lower())
    if not match:
        raise BadInput(f"--older-than: expected a number and a unit like 30m, 12h, 7d or 2w, got {show(text)}")
    return timedelta(**{_RELATIVE_UNITS[match.group(2) or "s"]: int(match.group(1))}).total_seconds()


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``--since``: an ISO date/time (local time unless it carries ``Z`` or an offset) or an
    age such as ``90m``, ``12h``, ``7d``; returned as naive UTC, the way the store keeps times."""
    import re

    now = now or datetime.now(UTC).replace(tzinfo=None)
    value = text.strip()
    match = re.match(r"^(\d{1,6})([smhdw])$", value)
    if match:
        return now - timedelta(**{_RELATIVE_UNITS[match.group(2)]: int(match.group(1))})
    iso = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        raise ValueError(f"not a date, time or age: {text!r} (try 2026-11-27, 2026-11-27T08:00, 12h, 7d)") from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # a wall-clock time where the user is
    return moment.astimezone(UTC).replace(tzinfo=None)
