"""One set of site helpers: an isolated Blackfish installation (:class:`Site`), the paths and
process helpers every test file shares, so no test file re-builds them by hand."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pty
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.hub import DEMO_REPO_ID

REPO = Path(__file__).resolve().parent.parent.parent
STUB_BIN = REPO / "tests" / "bin"


def slurm_available() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and bool(out.stdout.strip())


def profiles_cfg(profiles: Mapping[str, Mapping[str, object]]) -> str:
    """profiles.cfg text: one section a profile, its keys in the order given."""
    return "".join(
        f"[{name}]\n" + "".join(f"{key} = {value}\n" for key, value in keys.items()) + "\n"
        for name, keys in profiles.items()
    )


def slurm_profile(home_dir: object, cache_dir: object, *, user: str = "root", **keys: object) -> dict[str, object]:
    """A Slurm-schema profile on this machine's cluster (``host = localhost``)."""
    return {"schema": "slurm", "host": "localhost", "user": user, "home_dir": home_dir, "cache_dir": cache_dir, **keys}


def local_profile(home_dir: object, cache_dir: object, **keys: object) -> dict[str, object]:
    """A local-schema profile."""
    return {"schema": "local", "home_dir": home_dir, "cache_dir": cache_dir, **keys}


@dataclass
class Site:
    """An isolated Blackfish installation: $BLACKFISH_HOME_DIR with a user home and a shared cache."""

    root: Path
    app_dir: Path
    home_dir: Path
    cache_dir: Path
    apptainer_log: Path

    @classmethod
    def create(cls, root: Path) -> Site:
        """A site under ``root``: its app, home and cache folders made, world-readable."""
        site = cls(root, root / "app", root / "home", root / "cache", root / "apptainer-calls.jsonl")
        for d in (site.app_dir, site.home_dir, site.cache_dir):
            d.mkdir()
            d.chmod(0o755)
        return site

    @property
    def db_path(self) -> Path:
        return self.app_dir / "app.sqlite"

    def write_profiles(self, profiles: Mapping[str, Mapping[str, object]] | None = None) -> None:
        """profiles.cfg: ``profiles``, else ``slurm`` (the default) and ``laptop`` (local) on this site's folders."""
        if profiles is None:
            profiles = {
                "slurm": slurm_profile(self.home_dir, self.cache_dir, default="true"),
                "laptop": local_profile(self.home_dir, self.cache_dir),
            }
        (self.app_dir / "profiles.cfg").write_text(profiles_cfg(profiles))

    def write_settings(self, text: str) -> None:
        (self.app_dir / "bfjobs.toml").write_text(textwrap.dedent(text))

    @property
    def site_settings_path(self) -> Path:
        """This site's stand-in for ``/etc/bfjobs/bfjobs.toml`` (the ``site`` fixture names it in
        ``BFJOBS_SITE_CONFIG``, so no test reads the machine's own)."""
        return self.root / "etc-bfjobs.toml"

    def write_site_settings(self, text: str) -> None:
        self.site_settings_path.write_text(textwrap.dedent(text))

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
        from blackfish_jobs.node import records

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

    def submit_pull(self, uri: str, *args: str, **extra_env: str) -> dict:
        """``bfjobs submit pull-image URI ARGS --json``, which must succeed; its job."""
        proc = self.bfjobs("submit", "pull-image", uri, *args, "--json", **extra_env)
        assert proc.returncode == 0, proc.stderr
        return json_job(proc.stdout)

    def submit_download(self, *args: str, **extra_env: str) -> subprocess.CompletedProcess:
        """``bfjobs submit download-model <the demo repo> ARGS --json`` (the process, for its exit code)."""
        return self.bfjobs("submit", "download-model", DEMO_REPO_ID, *args, "--json", **extra_env)

    def bfjobs(self, *args: str, check: bool = False, timeout: float = 300, **extra_env: str):
        """Run the real console script in a fresh process (as a user would)."""
        proc = subprocess.run(
            [sys.executable, "-m", "blackfish_jobs", *args],
            capture_output=True, text=True, env=self.env(**extra_env), timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"bfjobs {args} failed ({proc.returncode}): {proc.stderr}")
        return proc


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



def with_tty(argv: list[str], env: dict[str, str], timeout: float = 60) -> tuple[int, str]:
    """Run a command with stdin/stdout/stderr on a pseudo-terminal; return (exit code, output)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the other side closed
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=10), b"".join(chunks).decode("utf-8", "replace")
