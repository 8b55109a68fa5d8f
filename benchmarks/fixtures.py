"""What the benchmarks run against, built in a temporary directory.

Everything is synthetic but made with the project's own code or the real tools: the jobs DB is
written through ``blackfish_jobs.store`` (so its schema and migrations are the real ones), the
cache follows the Hugging Face hub layout byte for byte, the live jobs are real held Slurm jobs,
and the hub is ``tests/support/hub.py`` in its own process.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
STUB_BIN = REPO / "tests" / "bin"
TESTS = REPO / "tests"  # its support package: one job-row builder for tests and benchmarks


def console_script(name: str) -> str:
    """The real console script next to this interpreter (pyenv/conda shims would add ~50 ms)."""
    candidate = Path(sys.executable).parent / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed next to {sys.executable} nor on PATH")
    return found


# --------------------------------------------------------------------------- jobs DB


def make_jobs_db(path: Path, count: int) -> str:
    """A bfjobs DB with ``count`` finished jobs (half pulls, half downloads), via blackfish_jobs.store.

    One transaction through the project's own store and migrations: the file is exactly
    what ``bfjobs`` would have written, only faster to produce.
    """
    from blackfish_jobs import store as bdb

    sys.path.insert(0, str(TESTS))
    from support.rows import insert_rows, job_row

    url = f"sqlite:///{path}"
    database = bdb.Database(url)
    now = bdb.utcnow()
    states = ("COMPLETED",) * 8 + ("FAILED", "CANCELLED")
    rows = []
    for i in range(count):
        job_id = f"{i:012x}"
        submitted = now - timedelta(minutes=count - i)
        ended = submitted + timedelta(minutes=3)
        state = states[i % len(states)]
        if i % 2:
            kind, target = "pull-image", f"/scratch/blackfish/images/tool{i}_1.{i % 7}.sif"
            request = {"uri": f"docker://ghcr.io/lab/tool{i}:1.{i % 7}", "dest_dir": "/scratch/blackfish/images",
                       "filename": f"tool{i}_1.{i % 7}.sif", "apptainer": "apptainer", "force": False}
            result = {"path": target, "size": 734003200, "sha256": hashlib.sha256(job_id.encode()).hexdigest(),
                      "mode": "0o755", "duration_s": 41.2, "node": "dtn1", "already_present": False,
                      "uri": request["uri"]}
        else:
            kind, target = "download-model", f"/home/jdoe/.blackfish/models/models--org{i % 50}--model-{i}"
            commit = hashlib.sha1(job_id.encode(), usedforsecurity=False).hexdigest()
            request = {"repo_id": f"org{i % 50}/model-{i}", "revision": None,
                       "models_dir": "/home/jdoe/.blackfish/models", "endpoint": None, "allow_patterns": None,
                       "ignore_patterns": None, "max_workers": 8, "force": False, "shared": False}
            result = {"repo_id": request["repo_id"], "revision": None, "commit": commit, "model_dir": target,
                      "snapshot": f"{target}/snapshots/{commit}", "files": 7, "bytes": 16069435392,
                      "pipeline_tag": "text-generation", "duration_s": 812.4, "node": "dtn1",
                      "already_present": False}
        ok = state == "COMPLETED"
        rows.append(job_row(
            i, kind=kind, profile=("della", "nersc", "local")[i % 3], native_id=str(100000 + i), state=state,
            reason=None if ok else "exit code 1", folder=f"/home/jdoe/.blackfish/jobs/bfjobs/{job_id}",
            target=target, request=request, result=result if ok else None, node="dtn1", user="jdoe",
            submitted_at=submitted, ended_at=ended, updated_at=ended,
            registered_at=ended if ok and kind == "download-model" else None,
        ))
    insert_rows(database, rows)
    database.close()
    return url


def migrated_db(path: Path) -> str:
    """An empty bfjobs DB at the current schema (Alembic has run), as after a user's first command."""
    from blackfish_jobs import store as bdb

    url = f"sqlite:///{path}"
    database = bdb.Database(url)
    database.migrate()
    return url


def insert_live_jobs(url: str, folder: Path, slurm_ids: list[str], **columns: Any) -> None:
    """One PENDING bfjobs row per held Slurm job, as ``bfjobs submit`` would have recorded it
    (``columns``: e.g. ``backend="remote", profile="cluster"`` for a remote profile's jobs)."""
    from blackfish_jobs import store as bdb

    sys.path.insert(0, str(TESTS))
    from support.rows import insert_rows, job_row

    database = bdb.Database(url)
    rows = [
        job_row(i, id=f"live{i:08x}", native_id=sid, folder=str(folder / f"live{i:08x}"),
                target=f"{folder}/images/tool{i}_1.0.sif",
                request={"uri": f"docker://ghcr.io/lab/tool{i}:1.0", "dest_dir": f"{folder}/images",
                         "filename": f"tool{i}_1.0.sif", "apptainer": "apptainer", "force": False},
                **columns)
        for i, sid in enumerate(slurm_ids)
    ]
    folder.mkdir(parents=True, exist_ok=True)
    insert_rows(database, rows)
    database.close()


# --------------------------------------------------------------------------- hub cache


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class CachedRepo:
    repo_id: str
    commit: str


def make_hub_cache(models: Path, count: int) -> list[CachedRepo]:
    """``count`` repos in the hub-cache layout: ``refs/main``, three blobs, one snapshot of symlinks.

    Small files keep creation to a few seconds while ``scan_cache_dir`` still has to visit every
    repo, snapshot and blob exactly as it would in a real shared cache.
    """
    models.mkdir(parents=True, exist_ok=True)
    repos = []
    for i in range(count):
        repo_id = f"org{i % 100}/model-{i}"
        commit = _sha1(f"commit {i}")
        repo = models / ("models--" + repo_id.replace("/", "--"))
        snapshot = repo / "snapshots" / commit
        blobs = repo / "blobs"
        (repo / "refs").mkdir(parents=True)
        blobs.mkdir()
        snapshot.mkdir(parents=True)
        (repo / "refs" / "main").write_text(commit)
        for name, body in (("config.json", '{"model_type": "bench"}\n'), ("tokenizer.json", '{"v": 1}\n'),
                           ("model.safetensors", "x" * 64)):
            blob = _sha1(f"{i} {name}")
            (blobs / blob).write_text(body)
            os.symlink(f"../../blobs/{blob}", snapshot / name)
        repos.append(CachedRepo(repo_id, commit))
    return repos


# --------------------------------------------------------------------------- Slurm


def slurm_up(start: bool) -> str | None:
    """None when ``sinfo`` answers (after ``scripts/slurm-up.sh`` if ``start``), else why not."""

    def answers() -> bool:
        try:
            out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=15)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return out.returncode == 0 and bool(out.stdout.strip())

    if answers():
        return None
    if not start:
        return "no Slurm cluster (sinfo fails)"
    proc = subprocess.run(["bash", str(REPO / "scripts" / "slurm-up.sh")], capture_output=True, text=True)
    if proc.returncode != 0 or not answers():
        return "scripts/slurm-up.sh could not start Slurm: " + " ".join(proc.stderr.split())[-300:]
    return None


@dataclass
class HeldJobs:
    """Real Slurm jobs submitted held (they never run); ``cancel`` removes exactly these ids."""

    name: str
    ids: list[str] = field(default_factory=list)
    user: str | None = None  # submit as this local user (runuser), else as the caller

    def submit(self, count: int) -> None:
        """``sbatch --hold --wrap true`` ``count`` times (a few ms each on a local controller).

        Separate jobs, not an array: pending array elements share one accounting record, and a
        bfjobs job is one Slurm job.
        """
        argv = ["sbatch", "--hold", "--parsable", "--job-name", self.name, "-o", "/dev/null", "-e", "/dev/null",
                "--time", "00:01:00", "--mem", "10M", "--wrap", "true"]
        if self.user:
            argv = ["runuser", "-u", self.user, "--", *argv]
        for _ in range(count):
            out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout
            self.ids.append(out.strip().split(";")[0])

    def wait_accounted(self, timeout: float = 90.0) -> float:
        """Block until ``sacct`` lists every job (slurmdbd lags the controller); return seconds waited."""
        started = time.monotonic()
        wanted = set(self.ids)
        while True:
            out = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobIDRaw", "-S", "now-1hours", "-j",
                                  ",".join(self.ids)], capture_output=True, text=True, timeout=60).stdout
            if wanted <= {line.strip() for line in out.splitlines()}:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"sacct did not list all {len(wanted)} held jobs within {timeout:g} s")
            time.sleep(0.5)

    def cancel(self) -> None:
        """One ``scancel`` for our own ids (never by name or user: others share the cluster)."""
        if self.ids:
            subprocess.run(["scancel", *self.ids], capture_output=True, text=True, timeout=120)
            self.ids = []


def wait_not_running(ids: list[str], timeout: float = 60.0) -> None:
    """Wait until none of these (cancelled) jobs is still running or completing on a node."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["squeue", "-h", "-t", "R,CG", "-o", "%i", "-j", ",".join(ids)],
                             capture_output=True, text=True, timeout=60).stdout
        if not out.strip():
            return
        time.sleep(0.5)


SLURM_CLIENTS = ("sacct", "squeue", "sbatch", "scontrol", "scancel")


def counting_wrappers(directory: Path, log: Path) -> Path:
    """A PATH directory whose Slurm clients log their argv to ``log``, then exec the real one.

    Bash, not Python: the wrapper must add a few ms, not tens, to the call it counts.
    """
    directory.mkdir(parents=True, exist_ok=True)
    for name in SLURM_CLIENTS:
        real = shutil.which(name) or f"/usr/bin/{name}"
        script = directory / name
        script.write_text(
            "#!/bin/bash\n"
            f"{{ printf 'CALL {name}\\n'; printf 'ARG %s\\n' \"$@\"; }} >> {json.dumps(str(log))}\n"
            f"exec {json.dumps(real)} \"$@\"\n"
        )
        script.chmod(0o755)
    return directory


def read_calls(log: Path) -> list[list[str]]:
    """The calls a wrapper log recorded: ``[[name, arg, ...], ...]``."""
    calls: list[list[str]] = []
    if not log.exists():
        return calls
    for line in log.read_text().splitlines():
        if line.startswith("CALL "):
            calls.append([line[5:]])
        elif line.startswith("ARG ") and calls:
            calls[-1].append(line[4:])
    return calls


# --------------------------------------------------------------------------- local hub


@dataclass
class Hub:
    url: str
    repo_id: str
    bytes: int


@contextlib.contextmanager
def local_hub(shards: int, shard_mib: float) -> Iterator[Hub]:
    """``benchmarks/hub.py`` in its own process, stopped (SIGTERM to its pid) on exit."""
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("hub.py")), "--shards", str(shards), "--shard-mib",
         str(shard_mib)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("local hub did not start: " + (proc.stderr.read() if proc.stderr else ""))
        info = json.loads(line)
        yield Hub(info["url"], info["repo_id"], int(info["bytes"]))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------- a remote profile


def remote_problem() -> str | None:
    """None when the test sshd and its users (scripts/test-site.sh, scripts/sshd-up.sh) are here."""
    if os.geteuid() != 0:
        return "needs root (it runs bfjobs as the test's laptop user)"
    sys.path.insert(0, str(TESTS))
    from support.remote import SSHD_DIR

    try:
        os.kill(int((SSHD_DIR / "sshd.pid").read_text()), 0)
    except (OSError, ValueError):
        return "the test sshd is not running (scripts/test-site.sh starts it)"
    if not (REPO / ".cache" / "wheelhouse" / ".complete").exists():
        return "no wheelhouse (scripts/test-site.sh builds it)"
    return None


@dataclass
class RemoteSite:
    """A laptop user and a cluster user of the test sshd, bfjobs installed as a site would (one
    venv readable by both), a remote profile ``cluster``, the laptop's DB."""

    laptop_dir: Any  # support.remote.Laptop
    env: dict[str, str]
    cluster_user: str

    def laptop(self, args: list[str], **env: str) -> list[str]:
        """``bfjobs ARGS`` as the laptop user."""
        from support.install import RUNUSER

        made = self.laptop_dir
        return [RUNUSER, "-u", "bflaptop", "--", "env", *[f"{k}={v}" for k, v in made.env(**env).items()],
                str(made.laptop_install.prefix / "bin" / "bfjobs"), *args]

    def plain_settings(self) -> Path:
        """A copy of the laptop's bfjobs.toml with held sessions off (``BFJOBS_CONFIG``): every
        request its own ssh call."""
        made = self.laptop_dir
        plain = made.app / "bfjobs-plain.toml"
        plain.write_text((made.app / "bfjobs.toml").read_text() + "remote_session = 0\n")
        subprocess.run(["chown", "bflaptop:bflaptop", str(plain)], check=True)
        return plain

    def jobs(self, ids: list[str]) -> None:
        """One PENDING remote-profile row per held job in the laptop's DB (amid 10,000 finished ones)."""
        made = self.laptop_dir
        url = make_jobs_db(made.app / "app.sqlite", 10_000)
        insert_live_jobs(url, made.home_dir / "jobs" / "bfjobs", ids, backend="remote", profile="cluster",
                         user=self.cluster_user)
        subprocess.run(["chown", "-R", "bflaptop:bflaptop", str(made.app)], check=True)

    def round_trips(self, args: list[str], **env: str) -> dict[str, int]:
        """One run of ``bfjobs ARGS`` on the laptop: its ssh invocations (counted by the laptop's
        ``ssh`` on PATH) and its requests over a held session (its own ``BFJOBS_DEBUG`` record;
        0 without one). A session holder it starts (detached, after its answer) is waited for, so
        that its ssh invocation is not counted against the next command."""
        before = self.laptop_dir.ssh_calls()
        done = subprocess.run(self.laptop(args, BFJOBS_DEBUG="1", **env), env=self.env, capture_output=True,
                              text=True, check=True, timeout=600)
        time.sleep(1.0)
        found = re.search(r"(\d+) ssh call\(s\), (\d+) request\(s\) over a held session", done.stderr)
        held = int(found.group(2)) if found else 0
        if found and int(found.group(1)) > self.laptop_dir.ssh_calls() - before:
            raise RuntimeError(f"bfjobs counted more ssh calls than its PATH saw: {done.stderr}")
        return {"ssh_calls": self.laptop_dir.ssh_calls() - before, "held_requests": held,
                "round_trips": (int(found.group(1)) if found else 0) + held}

    def raw_sacct(self, ids: list[str]) -> list[str]:
        """The ``sacct`` the cluster's bfjobs runs for these jobs, run over ssh through the same master."""
        from blackfish_jobs.backends import slurmcli, slurmcmd
        from blackfish_jobs.store import Database

        made = self.laptop_dir
        database = Database(f"sqlite:///{made.app / 'app.sqlite'}")
        rows = database.unfinished()
        database.close()
        argv: list[str] = []

        def record(call: list[str]) -> str:
            argv.extend(call)
            return ""

        slurmcli.sacct([r.native_id or "" for r in rows], slurmcmd.sacct_since(r.submitted_at for r in rows), record)
        return self.over_ssh(["env", "SLURM_TIME_FORMAT=%s", *argv])  # as bfjobs' runner calls it

    def over_ssh(self, words: list[str]) -> list[str]:
        """``words`` run on the cluster over ssh through the laptop's master (as the laptop user)."""
        from support.install import RUNUSER

        from blackfish_jobs.backends.ssh import remote_line

        made = self.laptop_dir
        options = ["-o", f"ControlPath={made.control}/%C", "-o", "ControlMaster=auto", "-o", "ControlPersist=300"]
        return [RUNUSER, "-u", "bflaptop", "--", "/usr/bin/ssh", *options, "-l", "bfcluster", "--", "bfcluster",
                remote_line(words)]

    def cluster_python(self) -> str:
        """The cluster user's interpreter (``remote_python``)."""
        return str(self.laptop_dir.cluster_install.prefix / "bin" / "python")


@contextlib.contextmanager
def remote_site(folder: Path) -> Iterator[RemoteSite]:
    """Two installs (the laptop's and the cluster user's, as tests/test_remote.py makes them)."""
    sys.path.insert(0, str(TESTS))
    from support.install import install_site
    from support.remote import CLUSTER, Laptop

    laptop_install = install_site()
    cluster_install = install_site()
    made = Laptop(laptop_install, cluster_install)
    try:
        yield RemoteSite(made, {"PATH": "/usr/bin:/bin"}, CLUSTER)
    finally:
        made.close()
        shutil.rmtree(laptop_install.root, ignore_errors=True)
        shutil.rmtree(cluster_install.root, ignore_errors=True)
