"""bfjobs benchmark suite (issue 6): ratios against the tools people would use instead.

    python benchmarks/run.py            # full run (~2-4 min on 2 cores)
    python benchmarks/run.py --quick    # small sizes, few rounds (CI: keeps the suite working)
    python benchmarks/run.py --json     # machine-readable results on stdout
    python benchmarks/run.py --only status --live-jobs 10000   # the scale row (MaxJobCount > 10,000)

Everything is built in a temporary directory: a DB with 10,000 jobs, a hub-layout cache with
10,000 repos, a local hub (``tests/support/hub.py`` in its own process) with a sharded repo,
1,000 held jobs on the real Slurm cluster (cancelled at the end, by id). Each comparison runs
baseline and candidate interleaved in the same rounds (the order rotates every round), after one
untimed warm-up, and reports the median of each and the median of the per-round ratios.

Numbers are measurements, not tests: nothing here fails on timing. The exit code is 1 only
when the harness itself broke (a command failed, a check of the outputs did not hold).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import pstats
import pty
import random
import re
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO)]  # fixtures, and blackfish_jobs from this checkout

import fixtures  # noqa: E402

# ----------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class Sizes:
    """How big and how often; --quick shrinks what is slow to build, never the counted 1,000
    live jobs (``--live-jobs`` sets their number: the 10,000-job row of the status group)."""

    rounds: int  # rounds for start-up/list/status comparisons
    db_jobs: int
    cache_repos: int
    live_jobs: int
    lookups: int  # find_snapshot calls per round
    scan_rounds: int
    shards: int
    shard_mib: float
    download_rounds: int
    variant_rounds: int
    worker_variants: tuple[int, ...]  # extra max_workers settings tried (8 is the default row)
    e2e_rounds: int
    file_rounds: int
    strace_scan: bool = True  # count scan_cache_dir's stats too (strace slows its 200,000 calls to a minute)


FULL = Sizes(rounds=9, db_jobs=10_000, cache_repos=10_000, live_jobs=1_000, lookups=2_000, scan_rounds=5,
             shards=4, shard_mib=96, download_rounds=9, variant_rounds=3, worker_variants=(1, 16), e2e_rounds=3,
             file_rounds=3)
QUICK = Sizes(rounds=3, db_jobs=10_000, cache_repos=10_000, live_jobs=1_000, lookups=500, scan_rounds=2,
              shards=2, shard_mib=4, download_rounds=2, variant_rounds=1, worker_variants=(1,), e2e_rounds=1,
              file_rounds=1, strace_scan=False)



# ----------------------------------------------------------------------------- results


@dataclass
class Sample:
    """One side of a comparison: what ran and how long each round took (seconds)."""

    label: str
    seconds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "median_s": self.median, "min_s": min(self.seconds), "samples_s": self.seconds}


@dataclass
class Row:
    """One line of the table. ``ratio`` is candidate/baseline time (throughput rows: baseline/candidate)."""

    name: str
    title: str
    candidate: Sample | None = None
    baseline: Sample | None = None
    ratio: float | None = None
    target: str = ""
    met: bool | None = None
    status: str = "measured"  # measured | skipped | failed
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["candidate"] = self.candidate.to_json() if self.candidate else None
        data["baseline"] = self.baseline.to_json() if self.baseline else None
        return data


class BenchError(RuntimeError):
    """The harness could not measure something (a command failed, an output was wrong)."""


def paired_ratio(num: list[float], den: list[float]) -> float:
    """Median of per-round ratios: rounds are interleaved, so each pair saw the same machine state."""
    return statistics.median(n / d for n, d in zip(num, den, strict=True))


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- timing


Variant = Callable[[], float]


def interleave(variants: dict[str, Variant], rounds: int, warmup: bool = True) -> dict[str, list[float]]:
    """Run every variant once untimed, then ``rounds`` rounds with the order rotated each round."""
    names = list(variants)
    if warmup:
        for name in names:
            variants[name]()
    out: dict[str, list[float]] = {name: [] for name in names}
    for i in range(rounds):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            out[name].append(variants[name]())
    return out


def run_checked(argv: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(argv[:4])} exited with {proc.returncode}: {' '.join(proc.stderr.split())[-400:]}")
    return proc


def command(argv: list[str], env: dict[str, str]) -> Variant:
    """A variant that runs ``argv`` (stdout discarded, as into a pipe nobody reads) and times it."""

    def run() -> float:
        started = time.perf_counter()
        proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              timeout=600)
        elapsed = time.perf_counter() - started
        if proc.returncode != 0:
            raise BenchError(f"{' '.join(argv[:4])} exited with {proc.returncode}: {proc.stderr.strip()[-400:]}")
        return elapsed

    return run


def on_terminal(argv: list[str], env: dict[str, str]) -> Variant:
    """A variant that runs ``argv`` with stdout/stderr on a pseudo-terminal, as a user at a login
    node sees it (the tables differ there), reading the output to the end."""

    def run() -> float:
        main, child = pty.openpty()
        started = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=child, stderr=child)
        os.close(child)
        shown = bytearray()
        with contextlib.suppress(OSError):  # EIO once the child has closed the terminal
            while chunk := os.read(main, 1 << 16):
                shown += chunk
        code = proc.wait(timeout=600)
        elapsed = time.perf_counter() - started
        os.close(main)
        if code != 0:
            raise BenchError(f"{' '.join(argv[:4])} on a terminal exited with {code}: {bytes(shown[-400:])!r}")
        return elapsed

    return run


# ----------------------------------------------------------------------------- profiling evidence

HEAVY = ("sqlalchemy", "alembic", "submitit", "huggingface_hub", "jinja2", "click", "httpx2", "httpx",
         "blackfish_jobs.store", "blackfish_jobs.store.blackfish", "blackfish_jobs.backends.slurmcli",
         "blackfish_jobs.tracking", "blackfish_jobs.api", "blackfish_jobs.specs",
         "blackfish_jobs.config")


def import_costs(argv: list[str], env: dict[str, str]) -> dict[str, float]:
    """``python -X importtime``: cumulative ms of the heavy modules a command imports (outermost import)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", *argv], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, timeout=300)
    costs: dict[str, float] = {}
    total = 0.0
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line[len("import time:"):].split("|", 2)
        if not name.startswith("  "):  # a top-level import (no nesting)
            total += int(cumulative) / 1000
        stripped = name.strip()
        if stripped in HEAVY:
            costs[stripped] = max(costs.get(stripped, 0.0), int(cumulative) / 1000)
    costs["(all imports)"] = total
    return {k: round(v, 1) for k, v in sorted(costs.items(), key=lambda kv: -kv[1])}


def json_jobs(text: str) -> list[dict[str, Any]]:
    """The jobs of a ``--json`` output: ``{"version": 1, "jobs": [...]}`` (a baseline from before
    the versioned shape printed an object or an array)."""
    data = json.loads(text)
    if isinstance(data, dict) and "version" in data:
        return data["jobs"]
    return data if isinstance(data, list) else [data]


#: cProfile entries worth showing: label -> (a piece of the file name, function name).
PROFILED = {
    "imports (all)": ("<frozen importlib._bootstrap>", "_find_and_load"),
    "entry._prestart_sacct": ("blackfish_jobs/entry.py", "_prestart_sacct"),
    "Client.db (opens DB)": ("blackfish_jobs/api/client.py", "db"),
    "Database._rows (stdlib reads)": ("blackfish_jobs/store/jobs.py", "_rows"),
    "Database.__init__": ("blackfish_jobs/store/jobs.py", "__init__"),
    "Database.migrate": ("blackfish_jobs/store/jobs.py", "migrate"),
    "Database.unfinished": ("blackfish_jobs/store/jobs.py", "unfinished"),
    "Database.listing": ("blackfish_jobs/store/jobs.py", "listing"),
    "Database.update_many": ("blackfish_jobs/store/jobs.py", "update_many"),
    "rows.from_records (all rows)": ("blackfish_jobs/store/rows.py", "from_records"),
    "tracking.refresh_report": ("blackfish_jobs/tracking.py", "refresh_report"),
    "SlurmBackend.survey": ("blackfish_jobs/backends/slurm.py", "survey"),
    "slurmcmd.run (subprocess)": ("blackfish_jobs/backends/slurmcmd.py", "run"),
    "api.present": ("blackfish_jobs/api/submission.py", "present"),
    "api.submit_many": ("blackfish_jobs/api/submission.py", "submit_many"),
    "render.render": ("blackfish_jobs/render.py", "render"),
    "subprocess.run": ("subprocess.py", "run"),
    "layout.find_snapshot": ("blackfish_jobs/layout.py", "find_snapshot"),
    "cli._output.describe": ("blackfish_jobs/cli/_output.py", "describe"),
    "job_json": ("blackfish_jobs/api/results.py", "job_json"),
    "json.dumps": ("json/__init__.py", "dumps"),
    "click.echo": ("click/utils.py", "echo"),
}


def cprofile(script: str, args: list[str], env: dict[str, str], workdir: Path) -> dict[str, float]:
    """cProfile one command: cumulative ms of the whole run and of the functions that matter for it."""
    out = workdir / f"prof-{uuid.uuid4().hex[:6]}.pstats"
    proc = subprocess.run([*profiled(out), script, *args], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=300)
    if proc.returncode != 0 or not out.exists():
        return {"error": float(proc.returncode)}
    return profile_summary(out)


def profiled(out: Path) -> list[str]:
    """The argv prefix that runs a script under cProfile, writing its stats to ``out``."""
    return [sys.executable, "-m", "cProfile", "-o", str(out)]


def profile_summary(out: Path) -> dict[str, float]:
    stats = pstats.Stats(str(out)).stats  # type: ignore[attr-defined]
    found: dict[str, float] = {"(whole run)": max(ct for (_cc, _nc, _tt, ct, _callers) in stats.values()) * 1000}
    for (filename, _line, func), (_cc, _nc, _tt, ct, _callers) in stats.items():
        for label, (piece, name) in PROFILED.items():
            if func == name and piece in filename:
                found[label] = max(found.get(label, 0.0), ct * 1000)
    return {k: round(v, 1) for k, v in sorted(found.items(), key=lambda kv: -kv[1])}


# ----------------------------------------------------------------------------- the suite


@dataclass
class Context:
    sizes: Sizes
    tmp: Path
    env: dict[str, str]
    bfjobs: str
    hf: str
    db_url: str = ""
    models: Path = Path()
    repos: list[fixtures.CachedRepo] = field(default_factory=list)
    held: fixtures.HeldJobs | None = None
    slurm_problem: str | None = None
    hub: fixtures.Hub | None = None
    profile: dict[str, Any] = field(default_factory=dict)
    setup: dict[str, float] = field(default_factory=dict)

    def with_env(self, **extra: str) -> dict[str, str]:
        return {**self.env, **extra}

    @property
    def floor(self) -> Variant:
        return command([sys.executable, "-c", "pass"], self.env)


def bench_startup(ctx: Context) -> list[Row]:
    """``bfjobs --help`` against ``hf --help``, with ``python -c pass`` as the floor."""
    times = interleave({"floor": ctx.floor, "hf": command([ctx.hf, "--help"], ctx.env),
                        "bfjobs": command([ctx.bfjobs, "--help"], ctx.env)}, ctx.sizes.rounds)
    floor = Sample("python -c pass", times["floor"])
    help_row = Row("help", "bfjobs --help vs hf --help", Sample("bfjobs --help", times["bfjobs"]),
                   Sample("hf --help", times["hf"]), paired_ratio(times["bfjobs"], times["hf"]), "ratio <= 0.2")
    help_row.met = help_row.ratio is not None and help_row.ratio <= 0.2
    help_row.extra = {"bfjobs_over_floor_s": help_row.candidate.median - floor.median,  # type: ignore[union-attr]
                      "hf_over_floor_s": help_row.baseline.median - floor.median}  # type: ignore[union-attr]
    ctx.profile["bfjobs --help imports (ms)"] = import_costs([ctx.bfjobs, "--help"], ctx.env)
    ctx.profile["hf --help imports (ms)"] = import_costs([ctx.hf, "--help"], ctx.env)
    return [Row("floor", "python -c pass (interpreter floor)", floor, None, None, "reference"), help_row]


def bench_list(ctx: Context) -> list[Row]:
    """``bfjobs list`` over a 10,000-job DB: absolute time, and how far above the bare interpreter."""
    env = ctx.with_env(BFJOBS_DB_URL=ctx.db_url)
    # checked through --json (the text layout is the CLI's business and may change)
    shown = len(json_jobs(run_checked([ctx.bfjobs, "list", "--json"], env).stdout))
    everything = len(json_jobs(run_checked([ctx.bfjobs, "list", "--limit", "100000", "--json"], env).stdout))
    if shown != 50 or everything != ctx.sizes.db_jobs:
        raise BenchError(f"bfjobs list --json gave {shown} jobs (want 50), with --limit {everything}")
    times = interleave({"floor": ctx.floor, "list": command([ctx.bfjobs, "list"], env),
                        "tty": on_terminal([ctx.bfjobs, "list"], env),
                        "all": command([ctx.bfjobs, "list", "--limit", "100000", "--json"], env)}, ctx.sizes.rounds)
    floor = Sample("python -c pass", times["floor"])
    n = f"{ctx.sizes.db_jobs:,}"
    row = Row("list", f"bfjobs list ({n} jobs in the DB, default --limit 50)", Sample("bfjobs list", times["list"]),
              floor, paired_ratio(times["list"], times["floor"]), "<= 0.3 s")
    row.met = row.candidate.median <= 0.3  # type: ignore[union-attr]
    full = Row("list-all", f"bfjobs list --limit 100000 --json (all {n} jobs; no target)",
               Sample("bfjobs list --json (all)", times["all"]), floor, paired_ratio(times["all"], times["floor"]),
               "informational")
    tty = Row("list-tty", f"bfjobs list on a terminal ({n} jobs; no target)",
              Sample("bfjobs list (terminal)", times["tty"]), floor, paired_ratio(times["tty"], times["floor"]),
              "informational")
    ctx.profile["bfjobs list imports (ms)"] = import_costs([ctx.bfjobs, "list"], env)
    ctx.profile["bfjobs list cProfile (ms)"] = cprofile(ctx.bfjobs, ["list"], env, ctx.tmp)
    ctx.profile["bfjobs list --json (all) cProfile (ms)"] = cprofile(
        ctx.bfjobs, ["list", "--limit", "100000", "--json"], env, ctx.tmp)
    return [row, tty, full]


def bench_status(ctx: Context) -> list[Row]:
    """``bfjobs status`` over the live (held) Slurm jobs (1,000; ``--live-jobs``): sacct calls counted,
    time vs that raw sacct."""
    title = f"bfjobs status ({ctx.sizes.live_jobs:,} live Slurm jobs) vs the same raw sacct call"
    if ctx.slurm_problem or ctx.held is None:
        return [Row("status", title, target="ratio <= 1.5 and 1 sacct call", status="skipped",
                    note=ctx.slurm_problem or "no held jobs")]
    held = ctx.held
    lag = held.wait_accounted(timeout=max(90.0, len(held.ids) / 50))  # slurmdbd takes longer for 10,000
    # the live jobs amid a history of finished ones, as in any DB used for a while
    url = fixtures.make_jobs_db(ctx.tmp / "status.sqlite", ctx.sizes.db_jobs)
    fixtures.insert_live_jobs(url, ctx.tmp / "live-jobs", held.ids)
    wrap_log = ctx.tmp / "slurm-calls.log"
    wrap_dir = fixtures.counting_wrappers(ctx.tmp / "wrap-bin", wrap_log)
    counted_env = ctx.with_env(BFJOBS_DB_URL=url, PATH=f"{wrap_dir}{os.pathsep}{ctx.env['PATH']}")
    counted: list[dict[str, Any]] = []
    sacct_argv: list[str] = []
    for label in (f"first refresh (stores {len(held.ids):,} pending reasons)", "steady state"):
        wrap_log.unlink(missing_ok=True)
        started = time.perf_counter()
        proc = run_checked([ctx.bfjobs, "status", "--json"], counted_env)  # --json: checkable output
        elapsed = time.perf_counter() - started
        calls = fixtures.read_calls(wrap_log)
        jobs = json_jobs(proc.stdout)
        if len(jobs) != len(held.ids) or {j["state"] for j in jobs} != {"PENDING"}:
            raise BenchError(f"bfjobs status --json gave {len(jobs)} jobs, want {len(held.ids)} PENDING ones")
        sacct_calls = [c for c in calls if c[0] == "sacct"]
        counted.append({"run": label, "seconds": elapsed, "sacct_calls": len(sacct_calls),
                        "squeue_calls": sum(c[0] == "squeue" for c in calls),
                        "other_slurm_calls": sum(c[0] not in ("sacct", "squeue") for c in calls)})
        if sacct_calls and not sacct_argv:
            sacct_argv = sacct_calls[0][1:]
    if not sacct_argv:
        raise BenchError("bfjobs status made no sacct call")
    real_sacct = shutil.which("sacct", path=ctx.env["PATH"]) or "/usr/bin/sacct"
    # the same call bfjobs makes, with the environment bfjobs' runner gives it (epoch times)
    raw = command([real_sacct, *sacct_argv], ctx.with_env(SLURM_TIME_FORMAT="%s"))
    status_env = ctx.with_env(BFJOBS_DB_URL=url)
    times = interleave({"raw": raw, "status": command([ctx.bfjobs, "status"], status_env), "floor": ctx.floor,
                        "tty": on_terminal([ctx.bfjobs, "status"], status_env)}, ctx.sizes.rounds)
    row = Row("status", title, Sample("bfjobs status", times["status"]), Sample("sacct (same argv)", times["raw"]),
              paired_ratio(times["status"], times["raw"]), "ratio <= 1.5 and 1 sacct call")
    one_call = all(c["sacct_calls"] == 1 for c in counted)
    row.met = one_call and row.ratio is not None and row.ratio <= 1.5
    jobs_arg = sacct_argv[sacct_argv.index("-j") + 1] if "-j" in sacct_argv else ""
    row.extra = {
        "sacct_calls": [c["sacct_calls"] for c in counted],
        "squeue_calls": [c["squeue_calls"] for c in counted],
        "counted_runs": counted,
        "sacct_argv_chars": sum(len(a) + 1 for a in sacct_argv),
        "sacct_job_list_chars": len(jobs_arg),
        "max_single_arg_chars": 131072,  # Linux MAX_ARG_STRLEN: the limit one -j list must stay under
        "sacct_argv": [a if len(a) < 80 else a[:60] + f"...({len(a)} chars)" for a in sacct_argv],
        "accounting_lag_s": round(lag, 2),
        "python_overhead_s": row.candidate.median - row.baseline.median,  # type: ignore[union-attr]
        # bfjobs' own share: beyond the interpreter's start and sacct, paired round by round
        "own_share_s": statistics.median(
            s - r - f for s, r, f in zip(times["status"], times["raw"], times["floor"], strict=True)
        ),
        # the best any Python CLI could do here: interpreter start-up plus the same sacct call
        "floor_plus_sacct_ratio": paired_ratio([f + r for f, r in zip(times["floor"], times["raw"], strict=True)],
                                               times["raw"]),
    }
    row.note = "counted through PATH wrappers in 2 extra runs; timed runs call the real binaries"
    tty = Row("status-tty", "bfjobs status on a terminal (the same jobs; no target)",
              Sample("bfjobs status (terminal)", times["tty"]), Sample("sacct (same argv)", times["raw"]),
              paired_ratio(times["tty"], times["raw"]), "informational")
    ctx.profile["bfjobs status imports (ms)"] = import_costs([ctx.bfjobs, "status"], status_env)
    ctx.profile["bfjobs status cProfile (ms)"] = cprofile(ctx.bfjobs, ["status"], status_env, ctx.tmp)
    return [row, tty]


def bench_remote(ctx: Context) -> list[Row]:
    """``bfjobs status`` of a remote profile's live jobs from the laptop user, over the test sshd
    (scripts/sshd-up.sh), against the raw ``sacct`` of those jobs through the same ssh master; ssh
    invocations and requests over a held session counted per command. Timed as a user who asks
    again within ``remote_session`` finds it (the default: a held session, started by the first
    ``status``), and with held sessions off (``remote_session = 0``: one ssh call per request)."""
    n = ctx.sizes.live_jobs
    title = f"bfjobs status, remote profile ({n:,} live jobs, over ssh) vs ssh HOST sacct (same master)"
    target = "1 round trip; bfjobs' share on both ends <= 0.1 s"
    problem = ctx.slurm_problem or fixtures.remote_problem()
    if problem:
        return [Row("remote-status", title, target=target, status="skipped", note=problem)]
    with fixtures.remote_site(ctx.tmp / "remote") as site:
        site.laptop_dir.write_settings(session=None)  # the default: held sessions
        plain = {"BFJOBS_CONFIG": str(site.plain_settings())}
        held = fixtures.HeldJobs(f"bfjobs-bench-remote-{os.getpid()}", user=site.cluster_user)
        try:
            held.submit(n)
            held.wait_accounted(timeout=max(90.0, n / 50))
            site.jobs(held.ids)
            calls = {"first status": site.round_trips(["status"]), "status": site.round_trips(["status"]),
                     "list": site.round_trips(["list"]),
                     "status (remote_session = 0)": site.round_trips(["status"], **plain)}
            jobs = json_jobs(run_checked(site.laptop(["status", "--json"]), site.env).stdout)
            if len(jobs) != n or {j["state"] for j in jobs} != {"PENDING"}:
                raise BenchError(f"remote status --json gave {len(jobs)} jobs, want {n} PENDING ones")
            raw = command(site.raw_sacct(held.ids), site.env)
            # the fixed costs of a plain agent call, for the share's breakdown: a session, the login
            # shell bfjobs runs the agent in (`bash -lc`, which `ssh HOST sacct` skips), the interpreter
            fixed = {"session": ["true"], "login": ["bash", "-lc", "true"],
                     "interpreter": ["bash", "-lc", shlex.join([site.cluster_python(), "-c", "pass"])]}
            times = interleave({"raw": raw, "status": command(site.laptop(["status"]), site.env),
                                "plain": command(site.laptop(["status"], **plain), site.env),
                                **{k: command(site.over_ssh(v), site.env) for k, v in fixed.items()}},
                               ctx.sizes.rounds)
        finally:
            held.cancel()
    row = Row("remote-status", title, Sample("bfjobs status (remote)", times["status"]),
              Sample("ssh HOST sacct (same argv)", times["raw"]), paired_ratio(times["status"], times["raw"]), target)
    share = row.candidate.median - row.baseline.median  # type: ignore[union-attr]
    row.met = calls["status"]["round_trips"] == 1 and share <= 0.1
    median = {k: statistics.median(v) for k, v in times.items()}
    row.extra = {"requests": calls, "bfjobs_share_s": share,
                 "plain_share_s": median["plain"] - median["raw"],
                 "login_shell_s": median["login"] - median["session"],
                 "cluster_interpreter_s": median["interpreter"] - median["login"]}
    row.note = ("both as the laptop user through runuser; requests counted in separate runs; "
                "plain_share_s: the same status with remote_session = 0 (one ssh call each)")
    return [row]


def bench_lookup(ctx: Context) -> list[Row]:
    """"Is repo@revision cached?": ``layout.find_snapshot`` (per call) vs ``huggingface_hub.scan_cache_dir``."""
    from huggingface_hub import scan_cache_dir

    from blackfish_jobs.layout import find_snapshot

    models, repos = ctx.models, ctx.repos
    kinds = ("no revision", "branch main", "commit sha", "missing repo")
    per_kind: dict[str, list[float]] = {k: [] for k in kinds}
    all_calls: list[float] = []
    rounds = 0

    def lookups() -> float:
        nonlocal rounds
        rng = random.Random(rounds)
        rounds += 1
        total = 0.0
        for i in range(ctx.sizes.lookups):
            repo = rng.choice(repos)
            kind = kinds[i % len(kinds)]
            repo_id, revision, want = {
                "no revision": (repo.repo_id, None, repo.commit),
                "branch main": (repo.repo_id, "main", repo.commit),
                "commit sha": (repo.repo_id, repo.commit, repo.commit),
                "missing repo": (repo.repo_id + "-absent", None, None),
            }[kind]
            started = time.perf_counter()
            got = find_snapshot(models, repo_id, revision)
            elapsed = time.perf_counter() - started
            if got != want:
                raise BenchError(f"find_snapshot({repo_id}, {revision}) = {got}, want {want}")
            per_kind[kind].append(elapsed)
            all_calls.append(elapsed)
            total += elapsed
        return total / ctx.sizes.lookups

    probe = repos[len(repos) // 2]

    def scan() -> float:
        started = time.perf_counter()
        info = scan_cache_dir(models)
        hit = any(r.repo_id == probe.repo_id and any(rev.commit_hash == probe.commit for rev in r.revisions)
                  for r in info.repos)
        elapsed = time.perf_counter() - started
        if not hit or len(info.repos) != len(repos):
            raise BenchError(f"scan_cache_dir saw {len(info.repos)} repos (want {len(repos)}), hit={hit}")
        return elapsed

    times = interleave({"lookup": lookups, "scan": scan}, ctx.sizes.scan_rounds)
    all_calls.sort()
    n = f"{len(repos):,}"
    row = Row("cache-lookup", f"is repo@revision cached? ({n} repos): find_snapshot vs scan_cache_dir",
              Sample("layout.find_snapshot (per call)", times["lookup"]),
              Sample("scan_cache_dir + lookup", times["scan"]), paired_ratio(times["lookup"], times["scan"]),
              "<= 1 ms per lookup (p99)")
    p99 = all_calls[int(0.99 * (len(all_calls) - 1))]
    row.met = p99 <= 0.001
    row.extra = {
        "calls": len(all_calls),
        "p50_s": statistics.median(all_calls), "p99_s": p99, "max_s": all_calls[-1],
        "median_by_kind_s": {k: statistics.median(v) for k, v in per_kind.items() if v},
        "speedup_vs_scan": row.baseline.median / row.candidate.median,  # type: ignore[union-attr]
    }
    row.note = "warm dentry cache, local disk; in one process (imports excluded)"

    # What a user sees: the whole CLI answering "already available" (no job submitted).
    site = ctx.models.parent
    env = ctx.with_env(BLACKFISH_HOME_DIR=str(site))
    argv = [ctx.bfjobs, "submit", "download-model", probe.repo_id, "--json"]
    out = json_jobs(run_checked(argv, env).stdout)[0]
    if out.get("state") != "PRESENT" or (out.get("result") or out).get("commit") != probe.commit:
        raise BenchError(f"bfjobs submit on a cached repo answered {out}")
    cli_times = interleave({"floor": ctx.floor, "cli": command(argv, env)}, ctx.sizes.rounds)
    cli = Row("submit-cached", "bfjobs submit download-model (already cached: no job; no target)",
              Sample("bfjobs submit (cached)", cli_times["cli"]), Sample("python -c pass", cli_times["floor"]),
              paired_ratio(cli_times["cli"], cli_times["floor"]), "informational")
    ctx.profile["bfjobs submit (cached) imports (ms)"] = import_costs(argv, env)
    ctx.profile["bfjobs submit (cached) cProfile (ms)"] = cprofile(ctx.bfjobs, argv[1:], env, ctx.tmp)
    return [row, cli]


#: The stat family as strace names it here (``%%stat``: every variant, on strace 6.1).
_STAT_CALL = re.compile(r"^\d+\s+(?:stat|lstat|newfstatat|statx|fstatat64|stat64|lstat64)\((?:AT_FDCWD, )?\"([^\"]+)\"")


def stat_calls(argv: list[str], env: dict[str, str], workdir: Path) -> dict[str, int] | None:
    """How often a process ``stat``s each path under a ``blobs/`` folder (strace, one untimed run);
    None without strace."""
    strace = shutil.which("strace")
    if strace is None:
        return None
    log_file = workdir / f"strace-{os.getpid()}-{time.monotonic_ns()}.log"
    run_checked([strace, "-f", "-qq", "-e", "trace=%%stat", "-o", str(log_file), *argv], env)
    counts: dict[str, int] = {}
    with log_file.open() as fh:
        for line in fh:
            match = _STAT_CALL.match(line)
            if match and "/blobs/" in match[1]:
                counts[match[1]] = counts.get(match[1], 0) + 1
    log_file.unlink()
    return counts


def bench_cache_ls(ctx: Context) -> list[Row]:
    """``bfjobs cache ls --json`` against ``huggingface_hub.scan_cache_dir`` on the same 10,000-repo
    tree, each a whole process (the hub cache of the lookup group: home_dir = cache_dir there)."""
    site = ctx.models.parent
    env = ctx.with_env(BLACKFISH_HOME_DIR=str(site))
    ours = [ctx.bfjobs, "cache", "ls", "--json"]
    scan = [sys.executable, "-c",
            "import sys\nfrom huggingface_hub import scan_cache_dir\nprint(len(scan_cache_dir(sys.argv[1]).repos))",
            str(ctx.models)]
    listed = json.loads(run_checked(ours, env).stdout)["artefacts"]
    want = {(r.repo_id, r.commit) for r in ctx.repos}
    if {(a["repo_id"], a["commit"]) for a in listed} != want or any(a["bytes"] <= 0 for a in listed):
        raise BenchError(f"bfjobs cache ls listed {len(listed)} snapshots, not the {len(want)} in the cache")
    if run_checked(scan, env).stdout.strip() != str(len(ctx.repos)):
        raise BenchError("scan_cache_dir did not see every repo")
    times = interleave({"ls": command(ours, env), "scan": command(scan, env)}, ctx.sizes.scan_rounds)
    n = f"{len(ctx.repos):,}"
    row = Row("cache-ls", f"bfjobs cache ls --json vs scan_cache_dir ({n} repos), whole processes",
              Sample("bfjobs cache ls --json", times["ls"]), Sample("python: scan_cache_dir", times["scan"]),
              paired_ratio(times["ls"], times["scan"]), "ratio <= 0.2; <= 1 stat per blob")
    blobs = sum(1 for _ in ctx.models.glob("*/blobs/*"))
    ours_stats = stat_calls(ours, env, ctx.tmp)
    scan_stats = stat_calls(scan, env, ctx.tmp) if ctx.sizes.strace_scan else None
    row.extra = {"blobs": blobs}
    if ours_stats is not None:
        row.extra.update(
            blob_stats_bfjobs=sum(ours_stats.values()), max_stats_per_blob_bfjobs=max(ours_stats.values(), default=0)
        )
    if scan_stats is not None:
        row.extra.update(
            blob_stats_scan=sum(scan_stats.values()), max_stats_per_blob_scan=max(scan_stats.values(), default=0)
        )
    per_blob_ok = ours_stats is None or max(ours_stats.values(), default=0) <= 1
    row.met = row.ratio is not None and row.ratio <= 0.2 and per_blob_ok
    row.note = "stat calls on blob paths counted with strace in separate runs" if ours_stats is not None else (
        "no strace here: stats per blob not counted")
    return [row]


def _snapshot_bytes(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        if "/snapshots/" in dirpath + "/":
            total += sum(os.stat(os.path.join(dirpath, f)).st_size for f in files)
    return total


def bench_download(ctx: Context) -> list[Row]:
    """Download throughput: bfjobs' node task vs ``hf download``, same hub, same repo, empty caches."""
    hub = ctx.hub
    assert hub is not None
    env = ctx.with_env(HF_ENDPOINT=hub.url)
    scratch = ctx.tmp / "downloads"
    scratch.mkdir()

    cpu: dict[str, list[float]] = {}  # user+sys seconds of each run: less sensitive to other load

    def fresh() -> Path:
        return scratch / uuid.uuid4().hex[:8]

    def child_cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    def hf(workers: int | None) -> Variant:
        def run() -> float:
            dest = fresh()
            argv = [ctx.hf, "download", hub.repo_id, "--cache-dir", str(dest), "--quiet"]
            if workers is not None:
                argv += ["--max-workers", str(workers)]
            before = child_cpu()
            elapsed = command(argv, env)()
            cpu.setdefault(f"hf-{workers or 8}", []).append(child_cpu() - before)
            got = _snapshot_bytes(dest)
            shutil.rmtree(dest)
            if got != hub.bytes:
                raise BenchError(f"hf download wrote {got} bytes, want {hub.bytes}")
            return elapsed

        return run

    def task(workers: int) -> Variant:
        def run() -> float:
            dest = fresh()
            argv = [sys.executable, str(HERE / "download_task.py"), hub.repo_id, "--models-dir", str(dest),
                    "--endpoint", hub.url, "--max-workers", str(workers)]
            before = child_cpu()
            started = time.perf_counter()
            proc = run_checked(argv, env)
            elapsed = time.perf_counter() - started
            cpu.setdefault(f"task-{workers}", []).append(child_cpu() - before)
            result = json.loads(proc.stdout)
            shutil.rmtree(dest)
            if result["bytes"] != hub.bytes:
                raise BenchError(f"bfjobs task wrote {result['bytes']} bytes, want {hub.bytes}")
            return elapsed

        return run

    # the target pair gets the most rounds (disk and loopback are noisy); other worker counts fewer
    times = interleave({"hf-8": hf(None), "task-8": task(8)}, ctx.sizes.download_rounds)
    variants: dict[str, Variant] = {}
    for w in ctx.sizes.worker_variants:
        variants[f"hf-{w}"] = hf(w)
        variants[f"task-{w}"] = task(w)
    times.update(interleave(variants, ctx.sizes.variant_rounds, warmup=False))
    mib = hub.bytes / 2**20

    def row(w: int) -> Row:
        hf_label = "hf download" + ("" if w == 8 else f" --max-workers {w}")
        r = Row("download" if w == 8 else f"download-w{w}",
                f"download {mib:.0f} MiB ({ctx.sizes.shards} shards), max_workers={w}: bfjobs task vs hf download",
                Sample(f"bfjobs task (max_workers={w})", times[f"task-{w}"]), Sample(hf_label, times[f"hf-{w}"]),
                paired_ratio(times[f"hf-{w}"], times[f"task-{w}"]),
                "throughput ratio >= 0.95" if w == 8 else "informational")
        if w == 8:
            r.met = r.ratio is not None and r.ratio >= 0.95
        r.extra = {"bytes": hub.bytes, "ratio_of_fastest_runs": min(times[f"hf-{w}"]) / min(times[f"task-{w}"]),
                   "bfjobs_MiB_per_s": mib / r.candidate.median,  # type: ignore[union-attr]
                   "hf_MiB_per_s": mib / r.baseline.median,  # type: ignore[union-attr]
                   "cpu_s_median": {"bfjobs": statistics.median(cpu[f"task-{w}"]),
                                    "hf": statistics.median(cpu[f"hf-{w}"])}}
        r.note = "ratio = hf time / bfjobs time (>1: bfjobs faster); fresh process and empty cache each run"
        return r

    rows = [row(8), *(row(w) for w in ctx.sizes.worker_variants)]

    # What a user waits for: a local-profile submit --wait (submitit LocalExecutor + bfjobs wait's polling).
    def e2e() -> float:
        home = fresh()
        home.mkdir()
        argv = [ctx.bfjobs, "submit", "download-model", hub.repo_id, "--profile", "local", "--wait"]
        elapsed = command(argv, ctx.with_env(HF_ENDPOINT=hub.url, BLACKFISH_HOME_DIR=str(home)))()
        shutil.rmtree(home, ignore_errors=True)  # the local controller may still be exiting
        return elapsed

    e2e_times = interleave({"hf": hf(None), "e2e": e2e}, ctx.sizes.e2e_rounds)
    e2e_row = Row("download-e2e", "bfjobs submit download-model --wait (local profile) vs hf download; no target",
                  Sample("bfjobs submit --wait (local)", e2e_times["e2e"]), Sample("hf download", e2e_times["hf"]),
                  paired_ratio(e2e_times["hf"], e2e_times["e2e"]), "informational")
    e2e_row.extra = {"overhead_over_task_s": e2e_row.candidate.median - rows[0].candidate.median}  # type: ignore[union-attr]
    e2e_row.note = "includes submitit's local executor and the wait loop's polling (first poll after 1 s)"
    rows.append(e2e_row)
    return rows


def bench_from_file(ctx: Context) -> list[Row]:
    """100 pulls from one file (issue 6's job arrays): one sbatch call, time to submit."""
    title = "100 pulls from a file (bfjobs submit pull-image --from-file)"
    if ctx.slurm_problem:
        return [Row("pulls-from-file", title, target="<= 3 s", status="skipped", note=ctx.slurm_problem)]
    import sqlite3

    calls: list[dict[str, int]] = []  # Slurm client calls of each submission (warm-up included)
    # A site template (the documented mechanism) adds `#SBATCH --hold`: the 100 elements are
    # submitted exactly as usual but never run, so they cannot disturb the shared cluster.
    held_templates = ctx.tmp / "held-templates"
    held_templates.mkdir(exist_ok=True)
    (held_templates / "base.sh.j2").write_text(
        '{% extends "builtin/base.sh.j2" %}\n{% block header %}\n{{ super() }}\n#SBATCH --hold\n{% endblock %}\n')

    def submit_file(prefix: tuple[str, ...] = ()) -> float:
        site = ctx.tmp / f"file-site-{uuid.uuid4().hex[:6]}"
        for sub in ("app", "home", "cache"):
            (site / sub).mkdir(parents=True)
        (site / "app" / "profiles.cfg").write_text(
            f"[slurm]\nschema = slurm\nhost = localhost\nuser = root\nhome_dir = {site / 'home'}\n"
            f"cache_dir = {site / 'cache'}\ndefault = true\n")
        (site / "app" / "bfjobs.toml").write_text(
            f'[defaults]\ntime = "00:05:00"\nmem = "100M"\ncpus_per_task = 1\ntemplates_dir = "{held_templates}"\n')
        listing = site / "images.txt"
        listing.write_text("# benchmark\n" + "".join(f"docker://ghcr.io/bfjobs-bench/img{i}:1.0\n" for i in range(100)))
        fixtures.migrated_db(site / "app" / "app.sqlite")  # a user's existing DB, not a first run's migration
        wrap_log = site / "slurm-calls.log"
        wrap_dir = fixtures.counting_wrappers(site / "wrap-bin", wrap_log)
        env = ctx.with_env(BLACKFISH_HOME_DIR=str(site / "app"),
                           PATH=os.pathsep.join((str(wrap_dir), str(fixtures.STUB_BIN), ctx.env["PATH"])))
        argv = [*prefix, ctx.bfjobs, "submit", "pull-image", "--from-file", str(listing), "--json"]
        out = ""
        try:
            started = time.perf_counter()
            out = run_checked(argv, env).stdout
            elapsed = time.perf_counter() - started
        finally:  # cancel by the ids bfjobs recorded (the whole array: its base id)
            ids: set[str] = set()
            db = site / "app" / "app.sqlite"
            if db.exists():
                with contextlib.closing(sqlite3.connect(db)) as conn:
                    ids = {str(r[0]).split("_")[0] for r in
                           conn.execute("SELECT native_id FROM bfjobs_jobs WHERE backend='slurm'") if r[0]}
            if ids:
                subprocess.run(["scancel", *sorted(ids)], capture_output=True)
                fixtures.wait_not_running(sorted(ids))  # nothing may write into site once it is removed
        made = [c[0] for c in fixtures.read_calls(wrap_log)]
        calls.append({name: made.count(name) for name in fixtures.SLURM_CLIENTS if made.count(name)})
        jobs = json_jobs(out)
        submitted = [j for j in jobs if j.get("slurm_job_id")]
        if len(submitted) != 100:
            raise BenchError(f"--from-file submitted {len(submitted)} Slurm jobs, want 100")
        return elapsed

    def raw_array() -> float:
        argv = ["sbatch", "--hold", "--parsable", "--array=0-99", "-o", "/dev/null", "--wrap", "true"]
        started = time.perf_counter()
        out = run_checked(argv, ctx.env).stdout.strip()
        elapsed = time.perf_counter() - started
        subprocess.run(["scancel", out.split(";")[0]], capture_output=True)
        return elapsed

    times = interleave({"raw": raw_array, "file": submit_file}, ctx.sizes.file_rounds)
    row = Row("pulls-from-file", title, Sample("bfjobs submit --from-file (100)", times["file"]),
              Sample("sbatch --array=0-99 (raw)", times["raw"]), paired_ratio(times["file"], times["raw"]), "<= 3 s")
    row.met = row.candidate.median <= 3.0  # type: ignore[union-attr]
    stats = ctx.tmp / "from-file.pstats"
    submit_file(tuple(profiled(stats)))
    ctx.profile["bfjobs submit --from-file (100) cProfile (ms)"] = profile_summary(stats)
    row.extra = {"slurm_calls_per_submission": calls}
    row.note = "Slurm calls counted through PATH wrappers (bash, a few ms each) in every run"
    return [row]


# ----------------------------------------------------------------------------- output


def fmt_s(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1e-3:
        return f"{value * 1e6:.1f} µs"
    if value < 1:
        return f"{value * 1e3:.1f} ms"
    return f"{value:.2f} s"


def fmt_ratio(row: Row) -> str:
    if row.ratio is None:
        return "-"
    return f"{row.ratio:.2e}" if row.ratio < 0.001 else f"{row.ratio:.3f}"


def table(rows: list[Row]) -> str:
    header = ("benchmark", "baseline (median)", "bfjobs (median)", "ratio", "target", "met")
    lines = [header]
    for r in rows:
        base = f"{r.baseline.label}: {fmt_s(r.baseline.median)}" if r.baseline else "-"
        cand = f"{r.candidate.label}: {fmt_s(r.candidate.median)}" if r.candidate else r.note or r.status
        met = {True: "yes", False: "NO", None: "-"}[r.met] if r.status == "measured" else r.status
        lines.append((r.name, base, cand, fmt_ratio(r), r.target, met))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    out = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def rows_from_json(results: list[dict[str, Any]]) -> list[Row]:
    """Rows back from a ``--json`` report (``--show`` prints a saved report as a table)."""
    rows = []
    for data in results:
        sides = {k: Sample(data[k]["label"], data[k]["samples_s"]) if data.get(k) else None
                 for k in ("candidate", "baseline")}
        rest = {k: v for k, v in data.items() if k not in sides}
        rows.append(Row(**rest, **sides))
    return rows


def details(rows: list[Row], profile: dict[str, Any]) -> str:
    out = []
    for r in rows:
        if r.extra:
            shown = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.extra.items()
                     if k not in ("counted_runs", "sacct_argv")}
            out.append(f"{r.name}: {json.dumps(shown)}")
        elif r.status != "measured" and r.note:
            out.append(f"{r.name}: {r.note}")
    for title, data in profile.items():
        top = ", ".join(f"{k} {v}" for k, v in list(data.items())[:8])
        out.append(f"{title}: {top}")
    return "\n".join(out)


def machine() -> dict[str, Any]:
    def version(pkg: str) -> str | None:
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return None

    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return proc.stdout.strip()

    slurm = subprocess.run(["sinfo", "--version"], capture_output=True, text=True) if shutil.which("sinfo") else None
    return {
        "cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
        "loadavg_1m": os.getloadavg()[0],  # other work on the machine makes every number noisier
        "packages": {p: version(p) for p in ("blackfish-jobs", "huggingface_hub", "hf-xet", "click", "SQLAlchemy",
                                             "alembic", "submitit")},
        "slurm": slurm.stdout.strip() if slurm else None,
        "git_commit": git("rev-parse", "--short", "HEAD"), "git_dirty": bool(git("status", "--porcelain")),
    }


# ----------------------------------------------------------------------------- main


def byte_compile(wanted: bool) -> None:
    """Byte-compile bfjobs' own modules, as ``pip install`` does for a wheel (or remove them).

    An editable install under ``PYTHONDONTWRITEBYTECODE=1`` (this test VM's environment) never
    writes them, so every command would compile bfjobs' sources anew (~10-20 ms), which no
    installed copy does; the other packages (click, SQLAlchemy, huggingface_hub) have theirs.
    """
    package = REPO / "blackfish_jobs"
    if wanted:
        import compileall

        if not compileall.compile_dir(str(package), quiet=1):
            raise BenchError(f"could not byte-compile {package}")
    else:
        for cache in package.rglob("__pycache__"):
            shutil.rmtree(cache, ignore_errors=True)


@contextlib.contextmanager
def terminate_cleanly() -> Iterator[None]:
    """SIGTERM (a CI timeout) runs the ``finally`` blocks too: held Slurm jobs are cancelled."""

    def _exit(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def base_env(tmp: Path) -> dict[str, str]:
    """The user's environment minus anything that would point bfjobs or huggingface_hub elsewhere."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BFJOBS_", "HF_", "HUGGING_FACE", "BLACKFISH_", "SLURM_"))}
    env.update(
        BLACKFISH_HOME_DIR=str(tmp / "app"),
        HF_HOME=str(tmp / "hf-home"),
        HF_HUB_DISABLE_UPDATE_CHECK="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        BFJOBS_REGISTRY_OFFLINE="1",  # its images are ghcr.io names: no registry is asked (no network here)
    )
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="bfjobs benchmarks (issue 6): ratios against hf, sacct, scans.")
    parser.add_argument("--quick", action="store_true", help="small sizes and few rounds (keeps the suite working)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    parser.add_argument("--only", action="append", metavar="GROUP",
                        choices=("startup", "help", "list", "status", "lookup", "cache-ls", "download", "from-file",
                                 "remote"),
                        help="run only these groups (repeatable; help = startup; remote: not by default)")
    parser.add_argument("--no-byte-compile", action="store_true",
                        help="measure bfjobs without bytecode (removes blackfish_jobs/__pycache__ first)")
    parser.add_argument("--no-cluster-start", action="store_true",
                        help="do not run scripts/slurm-up.sh when sinfo fails (Slurm rows are then skipped)")
    parser.add_argument("--rounds", type=int, metavar="N",
                        help="rounds of the start-up, list and status comparisons (default 9, --quick 3; more "
                             "for a share of a few ms against a call whose own time varies by tens)")
    parser.add_argument("--live-jobs", type=int, metavar="N",
                        help="live Slurm jobs of the status group (default 1,000; 10,000 for the scale row: "
                             "the cluster's MaxJobCount must allow them, see scripts/slurm-up.sh)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--output", type=Path, metavar="FILE", help="also write the JSON report to FILE")
    parser.add_argument("--show", type=Path, metavar="FILE", help="print a saved JSON report as a table; run nothing")
    args = parser.parse_args(argv)
    if args.show:
        saved = json.loads(args.show.read_text())
        print_report(saved, as_json=args.json)
        return 0
    sizes = QUICK if args.quick else FULL
    if args.live_jobs is not None:
        if args.live_jobs < 1:
            parser.error("--live-jobs: at least 1")
        sizes = replace(sizes, live_jobs=args.live_jobs)
    if args.rounds is not None:
        if args.rounds < 1:
            parser.error("--rounds: at least 1")
        sizes = replace(sizes, rounds=args.rounds)
    groups = {"startup" if g == "help" else g for g in args.only or ()} or {
        "startup", "list", "status", "lookup", "cache-ls", "download", "from-file"}
    started = time.monotonic()
    load_at_start = os.getloadavg()[0]
    rows: list[Row] = []
    failed = False
    tmp = Path(tempfile.mkdtemp(prefix="bfjobs-bench-"))
    with contextlib.ExitStack() as stack, terminate_cleanly():
        if not args.keep:
            stack.callback(shutil.rmtree, tmp, True)
        (tmp / "app").mkdir()
        ctx = Context(sizes, tmp, base_env(tmp), fixtures.console_script("bfjobs"), fixtures.console_script("hf"))

        def step(name: str, fn: Callable[[], Any]) -> Any:
            t0 = time.perf_counter()
            value = fn()
            ctx.setup[name] = round(time.perf_counter() - t0, 2)
            log(f"setup: {name} in {ctx.setup[name]:.1f} s")
            return value

        step("bytecode", lambda: byte_compile(not args.no_byte_compile))
        # Slurm first: accounting catches up with 1,000 new jobs while the rest is built.
        if groups & {"status", "from-file", "remote"}:
            ctx.slurm_problem = step("slurm check", lambda: fixtures.slurm_up(start=not args.no_cluster_start))
            if ctx.slurm_problem is None and "status" in groups:
                ctx.held = fixtures.HeldJobs(f"bfjobs-bench-{os.getpid()}")
                stack.callback(ctx.held.cancel)
                step(f"{sizes.live_jobs} held Slurm jobs", lambda: ctx.held.submit(sizes.live_jobs))  # type: ignore[union-attr]
        if "download" in groups:  # the hub builds its repo in its own process meanwhile
            ctx.hub = stack.enter_context(fixtures.local_hub(sizes.shards, sizes.shard_mib))
        if "list" in groups:
            ctx.db_url = step(f"DB with {sizes.db_jobs} jobs",
                              lambda: fixtures.make_jobs_db(tmp / "jobs.sqlite", sizes.db_jobs))
        if groups & {"lookup", "cache-ls"}:
            ctx.models = tmp / "cache" / "models"
            ctx.repos = step(f"hub cache with {sizes.cache_repos} repos",
                             lambda: fixtures.make_hub_cache(ctx.models, sizes.cache_repos))

        plan: list[tuple[str, Callable[[Context], list[Row]], str]] = [
            ("startup", bench_startup, "help"), ("list", bench_list, "list"), ("status", bench_status, "status"),
            ("lookup", bench_lookup, "cache-lookup"), ("cache-ls", bench_cache_ls, "cache-ls"),
            ("download", bench_download, "download"),
            ("from-file", bench_from_file, "pulls-from-file"), ("remote", bench_remote, "remote-status"),
        ]
        for group, bench, name in plan:
            if group not in groups:
                continue
            t0 = time.perf_counter()
            try:
                rows.extend(bench(ctx))
            except Exception as exc:
                failed = True
                traceback.print_exc(file=sys.stderr)
                rows.append(Row(name, group, status="failed", note=f"{type(exc).__name__}: {exc}"[:500]))
            log(f"{group}: {time.perf_counter() - t0:.1f} s")
            if group == "status" and ctx.held is not None:
                ctx.held.cancel()  # as soon as they are not needed: the cluster is shared

    report = {
        "mode": "quick" if args.quick else "full",
        "sizes": asdict(sizes),
        "machine": {**machine(), "loadavg_1m_at_start": load_at_start, "bfjobs_bytecode": not args.no_byte_compile},
        "setup_s": ctx.setup,
        "total_s": round(time.monotonic() - started, 1),
        "results": [json.loads(json.dumps(r.to_json(), default=str)) for r in rows],
        "profile": ctx.profile,
    }
    if args.output:
        args.output.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print_report(report, as_json=args.json)
    return 1 if failed else 0


def print_report(report: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, indent=2, default=str))
        return
    rows = rows_from_json(report["results"])
    print(table(rows))
    print()
    print(details(rows, report["profile"]))
    where = report["machine"]
    print(f"\n{report['mode']} run, {report['total_s']} s, {where['cpus']} CPUs, load average "
          f"{where.get('loadavg_1m_at_start', 0):.1f} -> {where.get('loadavg_1m', 0):.1f}, "
          f"git {where['git_commit']}{'+dirty' if where['git_dirty'] else ''}"
          f"{'' if where.get('bfjobs_bytecode', True) else ', bfjobs without bytecode'}")


if __name__ == "__main__":
    sys.exit(main())
