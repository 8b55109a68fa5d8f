"""Shared fixtures: an isolated Blackfish home, the apptainer stand-in, the real Slurm cluster."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

REPO = Path(__file__).resolve().parent.parent
STUB_BIN = REPO / "tests" / "bin"


def slurm_available() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and bool(out.stdout.strip())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip Slurm tests when no cluster is up, unless CI demands one (then they fail loudly)."""
    if slurm_available():
        return
    if os.environ.get("BFJOBS_REQUIRE_SLURM"):
        return  # let them run and fail: CI must not pass by skipping the real cluster
    skip = pytest.mark.skip(reason="no Slurm cluster (run scripts/slurm-up.sh)")
    for item in items:
        if "slurm" in item.keywords:
            item.add_marker(skip)


@dataclass
class Site:
    """An isolated Blackfish installation: $BLACKFISH_HOME_DIR with a user home and a shared cache."""

    root: Path
    app_dir: Path
    home_dir: Path
    cache_dir: Path
    apptainer_log: Path

    @property
    def db_path(self) -> Path:
        return self.app_dir / "app.sqlite"

    def write_profiles(self) -> None:
        text = f"""
                [slurm]
                schema = slurm
                host = localhost
                user = root
                home_dir = {self.home_dir}
                cache_dir = {self.cache_dir}
                default = true

                [laptop]
                schema = local
                home_dir = {self.home_dir}
                cache_dir = {self.cache_dir}
                """
        (self.app_dir / "profiles.cfg").write_text(textwrap.dedent(text))

    def write_settings(self, text: str) -> None:
        (self.app_dir / "bfjobs.toml").write_text(textwrap.dedent(text))

    def configure(self, hub=None, mem: str = "500M") -> None:
        """Slurm profile as default, small jobs, and the test hub as the HF endpoint if given."""
        self.write_profiles()
        endpoint = f'hf_endpoint = "{hub.url}"' if hub is not None else ""
        self.write_settings(
            f"""
            [defaults]
            time = "00:10:00"
            mem = "{mem}"
            cpus_per_task = 1
            {endpoint}
            """
        )

    def place_image(self, name: str, uri: str, data: bytes = b"sif", base: Path | None = None) -> Path:
        """An image as a bfjobs pull of ``uri`` leaves it in ``base`` (cache_dir): the file and its record."""
        from blackfish_jobs import records

        path = (base or self.cache_dir) / "images" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        record = records.image_record_path(path)
        record.parent.mkdir(parents=True, exist_ok=True)
        records.write(record, records.image_record(uri, hashlib.sha256(data).hexdigest(), len(data), "test"))
        return path

    def failed_pull(self) -> dict:
        """Submit a pull the apptainer stand-in fails, wait, check the failure; return the job."""
        proc = self.bfjobs("submit", "pull-image", "docker://alpine:broken", "--wait", "--json",
                           FAKE_APPTAINER_FAIL_ON="broken")
        assert proc.returncode == 1
        job = json_job(proc.stdout)
        assert job["state"] == "FAILED"
        assert "apptainer pull exited with code 255" in job["reason"]
        assert proc.stderr.strip().splitlines()[-1].startswith("bfjobs: error: 1 of 1 job(s) did not complete")
        return job

    def apptainer_calls(self) -> list[dict]:
        if not self.apptainer_log.exists():
            return []
        return [json.loads(line) for line in self.apptainer_log.read_text().splitlines()]

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            BLACKFISH_HOME_DIR=str(self.app_dir),
            PATH=f"{STUB_BIN}{os.pathsep}{os.environ['PATH']}",
            FAKE_APPTAINER_LOG=str(self.apptainer_log),
        )
        env.update(extra)
        return env

    def bfjobs(self, *args: str, check: bool = False, timeout: float = 300, **extra_env: str):
        """Run the real console script in a fresh process (as a user would)."""
        proc = subprocess.run(
            [sys.executable, "-m", "blackfish_jobs", *args],
            capture_output=True, text=True, env=self.env(**extra_env), timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"bfjobs {args} failed ({proc.returncode}): {proc.stderr}")
        return proc


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Site:
    root = tmp_path
    s = Site(root, root / "app", root / "home", root / "cache", root / "apptainer-calls.jsonl")
    for d in (s.app_dir, s.home_dir, s.cache_dir):
        d.mkdir()
        d.chmod(0o755)
    for var in ("BFJOBS_DB_URL", "BFJOBS_TEMPLATES_DIR", "BFJOBS_CONFIG", "HF_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("BLACKFISH_HOME_DIR", str(s.app_dir))
    monkeypatch.setenv("PATH", f"{STUB_BIN}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_APPTAINER_LOG", str(s.apptainer_log))
    return s


#: Slurm's client commands (Debian's slurm-client): a PATH without them is a machine without Slurm.
SLURM_COMMANDS = frozenset({
    "sacct", "sacctmgr", "salloc", "sattach", "sbatch", "sbcast", "scancel", "scontrol", "scrontab", "sdiag",
    "sinfo", "sprio", "squeue", "sreport", "srun", "sshare", "sstat", "strigger",
})  # fmt: skip


def path_without_slurm(folder: Path, path: str) -> str:
    """``path`` with each directory holding Slurm's commands replaced by a copy of it (symlinks)
    without them: a laptop's PATH on the test cluster, every other command still found."""
    entries = []
    for index, entry in enumerate(path.split(os.pathsep)):
        source = Path(entry)
        if not any((source / name).exists() for name in SLURM_COMMANDS):
            entries.append(entry)
            continue
        copy = folder / f"bin{index}"
        copy.mkdir(parents=True)
        for item in source.iterdir():
            if item.name not in SLURM_COMMANDS:
                (copy / item.name).symlink_to(item)
        entries.append(str(copy))
    return os.pathsep.join(entries)


@pytest.fixture(scope="session")
def no_slurm_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The test process' PATH (with the apptainer stand-in first) less Slurm's commands."""
    return path_without_slurm(tmp_path_factory.mktemp("no-slurm"), f"{STUB_BIN}{os.pathsep}{os.environ['PATH']}")


@pytest.fixture
def local_site(site: Site, no_slurm_path: str, monkeypatch: pytest.MonkeyPatch) -> Site:
    """A site on a machine without Slurm (no profiles.cfg): the built-in profile is ``local``."""
    monkeypatch.setenv("PATH", no_slurm_path)
    return site


@pytest.fixture
def cli() -> Callable[..., Result]:
    """Invoke the Click CLI in-process (CliRunner), the way sqlite-utils tests its commands."""
    from blackfish_jobs.cli import cli as command

    runner = CliRunner()

    def invoke(*args: str, **kwargs) -> Result:
        return runner.invoke(command, list(args), catch_exceptions=False, **kwargs)

    return invoke


def wait_for(predicate: Callable[[], object], timeout: float = 60, interval: float = 0.25) -> object:
    """Poll until ``predicate()`` is truthy (Slurm and sacct lag by seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")
        time.sleep(interval)


@pytest.fixture
def slurm_site(site: Site) -> Iterator[Site]:
    """A site whose default profile submits to the real cluster with small resources."""
    site.configure(mem="200M")
    yield site


def as_json(proc: subprocess.CompletedProcess) -> dict:
    """A bfjobs command's JSON output, one versioned object (its stderr in the failure message)."""
    assert proc.stdout, proc.stderr
    data = json.loads(proc.stdout)
    assert isinstance(data, dict) and data["version"] == 1, data
    return data


def json_jobs(text: str) -> list[dict]:
    """The jobs of a ``--json`` output: ``{"version": 1, "jobs": [...]}`` (docs/json.md)."""
    data = json.loads(text)
    assert isinstance(data, dict) and data["version"] == 1 and set(data) == {"version", "jobs"}, data
    return data["jobs"]


def json_job(text: str) -> dict:
    """The one job of a ``--json`` output."""
    jobs = json_jobs(text)
    assert len(jobs) == 1, jobs
    return jobs[0]


def json_findings(text: str) -> list[dict]:
    """The findings of ``verify --json``: ``{"version": 1, "findings": [...]}``."""
    data = json.loads(text)
    assert isinstance(data, dict) and data["version"] == 1 and set(data) == {"version", "findings"}, data
    return data["findings"]


def as_jobs(proc: subprocess.CompletedProcess) -> list[dict]:
    assert proc.stdout, proc.stderr
    return json_jobs(proc.stdout)


def as_job(proc: subprocess.CompletedProcess) -> dict:
    assert proc.stdout, proc.stderr
    return json_job(proc.stdout)


@pytest.fixture
def calls(tmp_path: Path):
    """A PATH directory whose Slurm clients log each call before running the real one."""
    from slurm_helpers import make_call_log

    return make_call_log(tmp_path / "calls")


def skip_or_fail(why: str) -> None:
    """Skip a test this machine cannot run, but fail it where it must run (``BFJOBS_REQUIRE_SLURM``, CI)."""
    if os.environ.get("BFJOBS_REQUIRE_SLURM"):
        pytest.fail(f"required here (BFJOBS_REQUIRE_SLURM): {why}")
    pytest.skip(why)


@contextlib.contextmanager
def tmpfs_over(path: Path, options: str) -> Iterator[Path]:
    """Mount a tmpfs with ``options`` over ``path`` for the block (skip if mounting is not allowed,
    except in CI: ``BFJOBS_REQUIRE_SLURM`` means the fault tests must run)."""
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        skip_or_fail(f"cannot mount a tmpfs ({options}) here: {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def read_only_cache(site):
    """Make cache_dir read-only for everyone, root included: a read-only mount over it."""
    if os.geteuid() != 0:
        site.cache_dir.chmod(0o555)
        yield site.cache_dir
        site.cache_dir.chmod(0o755)
        return
    with tmpfs_over(site.cache_dir, "ro,size=1m") as path:
        yield path


@pytest.fixture
def hub(request: pytest.FixtureRequest):
    """A hub-compatible server on 127.0.0.1 serving the demo repo (tests/hubserver.py); parametrized
    indirectly with ``"mirror"`` (see :data:`hub_and_mirror`) it serves only what a minimal mirror serves."""
    from hubserver import HubServer, make_demo_repo

    with HubServer([make_demo_repo()], minimal=getattr(request, "param", "hub") == "mirror") as server:
        yield server


#: Run a test against the Hub-like server and against a minimal mirror (no bare info endpoint, no optional fields).
hub_and_mirror = pytest.mark.parametrize("hub", ["hub", "mirror"], indirect=True)
