"""scripts/slurm-up.sh and slurm-down.sh tell the test cluster's own daemons from another Slurm's.

The running cluster is the one the suite uses, shared with everything else: these tests never
start, stop or reconfigure it. A second instance of the scripts, in a temporary prefix with another
cluster name (the knobs BFJOBS_SLURM_*), sees the running cluster as "another single-node Slurm":
it must refuse before writing anything, and its slurm-down.sh must stop nothing.

A guard stands in front of everything that could start, stop or change a daemon: a directory first
on PATH (slurmctld, slurmdbd, mariadb, munged, ``sacctmgr add``, ``scontrol update``, …; reads such
as ``slurmd -C``, ``sacctmgr show`` and ``scontrol show`` pass through to the real command) and a
BASH_ENV that replaces bash's ``kill`` and refuses ``rm`` outside the test's directory. Anything
refused is logged. The scripts under test are real; the guard only makes sure that a broken check
cannot disturb the shared cluster, and its log shows what the script tried.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from support.site import REPO

pytestmark = pytest.mark.slurm

UP = REPO / "scripts" / "slurm-up.sh"
DOWN = REPO / "scripts" / "slurm-down.sh"
SLURM_DAEMONS = ("slurmctld", "slurmd", "slurmdbd")
PID_FILES = {
    "slurmctld": "/run/slurm/slurmctld.pid",
    "slurmd": "/run/slurm/slurmd.pid",
    "slurmdbd": "/run/slurm/slurmdbd.pid",
    "mariadbd": "/run/mysqld/mysqld.pid",
    "munged": "/run/munge/munged.pid",
}
# What a second instance could touch outside its prefix: config, keys, pid files, state.
WATCHED_FILES = ("/etc/slurm", "/etc/munge", "/run/slurm", "/run/munge/munged.pid", "/run/mysqld/mysqld.pid")
WATCHED_DIRS = ("/var/lib/slurm", "/var/lib/slurm/slurmctld", "/var/log/slurm", "/var/lib/munge")

# Commands that pass through when the call only reads; the condition is bash.
READS = {
    "slurmd": '[[ $# -eq 1 && $1 == -C ]]',
    "sacctmgr": '[[ " $* " == *" show "* && " $* " != *" -i "* ]]',
    "scontrol": '[[ $1 == show || $1 == ping ]]',
}
GUARDED = ("slurmctld", "slurmdbd", "mariadbd", "mariadb", "mysql", "mariadb-install-db", "mariadb-admin",
           "mungekey", "munged", "runuser", "setsid", "apt-get", "scancel", *READS)

_BASH_ENV = """# Test guard, sourced by every bash the scripts run (BASH_ENV).
kill() {{ printf '%s\\n' "kill $*" >> {log}; echo "test guard: refused 'kill $*'" >&2; return 1; }}
rm() {{
    local a
    for a in "$@"; do
        if [[ $a != -* && $a != {allowed}/* ]]; then
            printf '%s\\n' "rm $*" >> {log}; echo "test guard: refused 'rm $*'" >&2; return 1
        fi
    done
    command rm "$@"
}}
"""

_GUARD = """#!/bin/bash
# Test guard: the shared cluster must not be started, stopped or changed from here.
if {reads}; then exec {real} "$@"; fi
printf '%s\\n' "{name} $*" >> {log}
echo "test guard: refused '{name} $*'" >&2
exit 97
"""


def daemon_pids() -> dict[str, int]:
    """The running cluster's daemons, each alive under its pid file."""
    pids = {}
    for name, pidfile in PID_FILES.items():
        pid = int(Path(pidfile).read_text().strip())
        assert Path(f"/proc/{pid}/comm").read_text().strip() == name, f"{name} is not running"
        pids[name] = pid
    return pids


def controller() -> dict[str, str]:
    """``scontrol show config`` of the running controller, as a dict."""
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=True).stdout
    return {k.strip(): v.strip() for k, _, v in (line.partition("=") for line in out.splitlines()) if _}


def outside_state() -> dict:
    """Everything outside a prefix that a second instance could change, by content and mtime."""
    state: dict = {}
    for top in WATCHED_FILES:
        paths = sorted(Path(top).rglob("*")) if Path(top).is_dir() else [Path(top)]
        for p in paths:
            if p.is_file():
                state[str(p)] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
    for d in WATCHED_DIRS:
        state[d] = sorted(os.listdir(d)) if os.path.isdir(d) else None
    state["clusters"] = subprocess.run(["sacctmgr", "-n", "-P", "show", "cluster", "format=cluster"],
                                       capture_output=True, text=True, check=True).stdout
    state["db user"] = subprocess.run(
        ["mariadb", "--socket=/run/mysqld/mysqld.sock", "-uroot", "-N", "-e",
         "SELECT Host, authentication_string FROM mysql.user WHERE User='slurm'"],
        capture_output=True, text=True, check=True).stdout
    return state


class Guard:
    """Runs a script with the guard in place; ``log`` lists what it refused."""

    def __init__(self, root: Path) -> None:
        self.root, self.bin_dir, self.log = root, root / "guard-bin", root / "guard.log"
        self.bin_dir.mkdir()
        for name in GUARDED:
            real = shutil.which(name) or f"/usr/sbin/{name}"
            text = _GUARD.format(reads=READS.get(name, "false"), real=real, name=name, log=self.log)
            (self.bin_dir / name).write_text(text)
            (self.bin_dir / name).chmod(0o755)
        self.bash_env = root / "guard.bash"
        self.bash_env.write_text(_BASH_ENV.format(log=self.log, allowed=root))

    def refused(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def run(self, script: Path, env: dict[str, str], path: str | None = None) -> subprocess.CompletedProcess:
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("BFJOBS_SLURM_", "SLURM_"))}
        guarded = {"PATH": f"{self.bin_dir}{os.pathsep}{path or os.environ['PATH']}",
                   "BASH_ENV": str(self.bash_env), "TMPDIR": str(self.root)}
        return subprocess.run(["bash", str(script)], env={**clean, **env, **guarded},
                              capture_output=True, text=True, timeout=300)


@pytest.fixture
def guard(tmp_path: Path) -> Guard:
    return Guard(tmp_path)


@pytest.fixture
def path_without_ss(tmp_path: Path) -> str:
    """A PATH with every command of the usual one but ``ss``: the /proc fallback."""
    farm = tmp_path / "no-ss-bin"
    farm.mkdir()
    for d in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(d):
            continue
        for entry in os.scandir(d):
            if entry.name != "ss" and not (farm / entry.name).exists() and os.access(entry.path, os.X_OK):
                (farm / entry.name).symlink_to(entry.path)
    return str(farm)


def other_instance(prefix: Path) -> dict[str, str]:
    """Knobs for a second instance that lives entirely in ``prefix`` under another cluster name."""
    return {
        "BFJOBS_SLURM_CLUSTER": "bfother",
        "BFJOBS_SLURM_CONF_DIR": str(prefix / "etc"),
        "BFJOBS_SLURM_RUN_DIR": str(prefix / "run"),
        "BFJOBS_SLURM_LOG_DIR": str(prefix / "log"),
        "BFJOBS_SLURM_STATE_DIR": str(prefix / "lib"),
        "BFJOBS_SLURM_TIMEOUT": "10",
    }


def assert_cluster_intact(pids: dict[str, int], answer: dict[str, str]) -> None:
    assert daemon_pids() == pids
    now = controller()
    assert (now["ClusterName"], now["SLURM_CONF"]) == (answer["ClusterName"], answer["SLURM_CONF"])
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True)
    assert "is UP" in ping.stdout


@pytest.mark.parametrize("with_ss", [True, False], ids=["ss", "proc-fallback"])
def test_second_instance_refuses_before_writing_anything(tmp_path, guard, path_without_ss, with_ss):
    pids, answer, before = daemon_pids(), controller(), outside_state()
    prefix = tmp_path / "other"

    proc = guard.run(UP, other_instance(prefix), None if with_ss else path_without_ss)

    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert guard.refused() == "", guard.refused() + proc.stderr  # nothing started, stopped or registered
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith(
        f"[slurm-up] ERROR: before starting anything, another Slurm is running here, not the one "
        f"{prefix}/etc/slurm.conf (cluster bfother) describes: "
    ), line
    # It names what runs: each daemon on our ports, by pid, command, config and cluster.
    config, cluster = answer["SLURM_CONF"], answer["ClusterName"]
    assert f"slurmctld pid {pids['slurmctld']} (slurmctld" in line
    assert f"; config {config}, cluster {cluster}) holds port 6817" in line
    assert f"slurmd pid {pids['slurmd']} (slurmd " in line and "holds port 6818" in line
    assert f"slurmdbd pid {pids['slurmdbd']} (slurmdbd" in line and "holds port 6819" in line
    assert line.endswith("stop it yourself, or run this cluster on another machine")
    assert proc.stdout == ""
    assert not prefix.exists()  # not even its own files: it refused first
    assert outside_state() == before
    assert_cluster_intact(pids, answer)


def test_running_cluster_again_is_the_fast_health_check(tmp_path, guard):
    pids, answer = daemon_pids(), controller()
    conf = Path(answer["SLURM_CONF"])
    conf_before = (conf.read_bytes(), conf.stat().st_mtime_ns)

    # KEEP_CONFIG: if someone changed the shared cluster's slurm.conf, keep it (no restart).
    proc = guard.run(UP, {"BFJOBS_SLURM_KEEP_CONFIG": "1"})

    assert proc.returncode == 0, proc.stdout + proc.stderr
    said = [line for line in proc.stdout.splitlines() if line.startswith("[slurm-up]")]
    assert not [s for s in said if s.split()[1] in ("starting", "stopping", "registering", "adding")], said
    [up] = [s for s in said if "Slurm is up in" in s]
    assert f"cluster={answer['ClusterName']} " in up
    assert f" slurmctld={pids['slurmctld']} config={answer['SLURM_CONF']} " in up
    assert guard.refused() == ""
    assert (conf.read_bytes(), conf.stat().st_mtime_ns) == conf_before
    assert_cluster_intact(pids, answer)


def test_slurm_down_stops_nothing_it_did_not_start(tmp_path, guard):
    pids, answer, before = daemon_pids(), controller(), outside_state()
    prefix = tmp_path / "other"
    # Another instance's files: its own slurm.conf, but pid files that name the running daemons.
    (prefix / "etc").mkdir(parents=True)
    text = Path(answer["SLURM_CONF"]).read_text()
    (prefix / "etc" / "slurm.conf").write_text(text.replace(f"ClusterName={answer['ClusterName']}",
                                                            "ClusterName=bfother"))
    (prefix / "run").mkdir()
    for name in SLURM_DAEMONS:
        (prefix / "run" / f"{name}.pid").write_text(f"{pids[name]}\n")

    proc = guard.run(DOWN, other_instance(prefix))

    assert proc.returncode == 1, proc.stdout + proc.stderr
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 3, errors
    for name, line in zip(("slurmd", "slurmctld", "slurmdbd"), errors, strict=True):
        ours = prefix / "etc" / ("slurmdbd.conf" if name == "slurmdbd" else "slurm.conf")
        assert line.startswith(f"[slurm-down] ERROR: {prefix}/run/{name}.pid names {name} pid {pids[name]} ("), line
        assert line.endswith(f"which is not ours (ours: {ours}): left running; stop it yourself"), line
    assert guard.refused() == "", guard.refused()  # no signal sent, no pid file removed outside
    assert "stopping" not in proc.stdout and "stopped" not in proc.stdout, proc.stdout
    assert f"mariadbd: left running (pid {pids['mariadbd']})" in proc.stdout
    assert f"munged: left running (pid {pids['munged']})" in proc.stdout
    assert sorted(os.listdir(prefix / "run")) == sorted(f"{n}.pid" for n in SLURM_DAEMONS)  # kept
    assert outside_state() == before
    assert_cluster_intact(pids, answer)
