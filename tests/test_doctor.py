"""``bfjobs doctor``: one screen saying whether a profile can run jobs from here, each problem with its fix.

The Slurm checks ask the real cluster (its partitions with sinfo, its QOS with sacctmgr); the hub
check asks the test hub; the permission checks run as a real unprivileged user.
"""

from __future__ import annotations

import json
import os
import pwd
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.site import local_profile, profiles_cfg, slurm_profile
from support.unprivileged import as_nobody, nobody_site


def checks(stdout: str) -> dict[str, dict]:
    data = json.loads(stdout)
    assert data["version"] == 1
    return {c["name"]: c for c in data["checks"]}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slurm
def test_a_usable_slurm_profile_passes_every_check(slurm_site, hub):
    site = slurm_site
    sinfo = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, check=True).stdout.split()
    partition = sinfo[0]
    site.write_site_settings(f'[defaults]\npartition = "{partition}"\nqos = "normal"\nhf_endpoint = "{hub.url}"\n')
    calls = site.root / "calls.log"
    proc = site.bfjobs("doctor", "--json", PATH=_counting_path(site, calls))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = checks(proc.stdout)
    assert json.loads(proc.stdout)["profile"] == "slurm"
    for name in ("profile", "settings", "slurm commands", "partition", "qos", "home_dir", "cache_dir", "hub"):
        assert found[name]["status"] == "ok", found[name]
    assert partition in found["partition"]["detail"] and "normal" in found["qos"]["detail"]
    assert found["hub"]["detail"].startswith(f"{hub.url} answers from here")
    asked = calls.read_text().splitlines()
    assert sorted(line.split()[0] for line in asked) == ["sacctmgr", "sinfo"]  # each asked once, nothing else


def _counting_path(site, log: Path) -> str:
    """PATH with wrappers that log each Slurm client call, then run the real one."""
    wrap = site.root / "wrap-bin"
    wrap.mkdir(exist_ok=True)
    for name in ("sinfo", "sacctmgr", "squeue", "sacct", "sbatch", "scancel", "srun"):
        real = subprocess.run(["sh", "-c", f"command -v {name}"], capture_output=True, text=True).stdout.strip()
        script = wrap / name
        script.write_text(f'#!/bin/sh\necho "{name} $*" >> {log}\nexec {real} "$@"\n')
        script.chmod(0o755)
    return f"{wrap}{os.pathsep}{site.env()['PATH']}"


@pytest.mark.slurm
def test_unknown_partition_and_qos_fail_with_the_valid_ones(slurm_site):
    site = slurm_site
    site.write_site_settings(
        f'[defaults]\npartition = "transfr"\nqos = "fastlane"\nhf_endpoint = "http://127.0.0.1:{closed_port()}"\n'
    )
    proc = site.bfjobs("doctor")
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    partition = next(i for i, line in enumerate(lines) if line.startswith("FAIL  partition"))
    assert "transfr not among the partitions here (" in lines[partition]
    assert "fix: set partition (bfjobs.toml or --partition) to one of them" in lines[partition + 1]
    qos = next(i for i, line in enumerate(lines) if line.startswith("FAIL  qos"))
    assert "fastlane not among the QOS root's Slurm associations allow (bfjobs-small, normal)" in lines[qos]
    assert "ask the site to add it to your association" in lines[qos + 1]
    hub_line = next(line for line in lines if line.startswith("WARN  hub"))
    assert "does not answer from here" in hub_line and "Connection refused" in hub_line
    assert proc.stderr.strip() == "bfjobs: error: 2 check(s) failed: partition, qos"
    assert len(lines) <= 24  # one screen


@pytest.fixture
def unassociated_qos() -> Iterator[str]:
    """A QOS that exists in accounting but no association allows (removed after the test)."""
    name = f"bfjobs-notmine-{os.getpid()}"
    subprocess.run(["sacctmgr", "-i", "add", "qos", name], check=True, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run(["sacctmgr", "-i", "delete", "qos", name], capture_output=True)


@pytest.mark.slurm
def test_a_qos_that_exists_but_is_not_the_users_fails(slurm_site, unassociated_qos):
    """sbatch refuses a QOS outside the user's associations ("Invalid qos specification") as it
    refuses one that does not exist: doctor asks the associations, not the list of all QOS."""
    site = slurm_site
    listed = subprocess.run(["sacctmgr", "-n", "-P", "show", "qos", "format=name"],
                            capture_output=True, text=True, check=True).stdout.split()
    assert unassociated_qos in listed  # it exists
    hub = f"http://127.0.0.1:{closed_port()}"  # a warning only, at once
    site.write_site_settings(f'[defaults]\nqos = "{unassociated_qos}"\nhf_endpoint = "{hub}"\n')
    calls = site.root / "calls.log"
    proc = site.bfjobs("doctor", "--json", PATH=_counting_path(site, calls))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    qos = checks(proc.stdout)["qos"]
    assert qos["status"] == "fail"
    allowed = "the QOS root's Slurm associations allow (bfjobs-small, normal)"
    assert qos["detail"] == f"{unassociated_qos} not among {allowed}"
    assert "ask the site to add it to your association" in qos["fix"]
    assert [line.split()[0] for line in calls.read_text().splitlines()] == ["sacctmgr"]  # asked once
    submitted = site.bfjobs("submit", "pull-image", "docker://alpine:3.20")
    assert submitted.returncode != 0 and "Invalid qos specification" in submitted.stderr, submitted.stderr


def test_the_qos_allowed_are_read_from_every_association_of_the_user():
    """One sacctmgr call for all the user's associations; one with no QOS listed allows normal."""
    from blackfish_jobs.backends import slurmcli
    from blackfish_jobs.backends.slurm import SlurmBackend

    asked = []

    def answer(text):
        def runner(argv):
            asked.append(argv)
            return text
        return runner

    assert slurmcli.user_qos("alice", answer("xfer,normal\n\ndtn\n")) == ["dtn", "normal", "xfer"]
    assert asked == [["sacctmgr", "-n", "-P", "show", "assoc", "where", "user=alice", "format=qos"]]
    assert slurmcli.user_qos("alice", answer("\n")) == ["normal"]
    assert slurmcli.user_qos("alice", answer("")) == []  # no association at all
    user = pwd.getpwuid(os.geteuid()).pw_name
    [qos] = [c for c in SlurmBackend(answer("")).checks("p", {"qos": {"xfer"}}) if c.name == "qos"]
    assert qos.status == "warn" and qos.detail == f"xfer: Slurm's accounting has no association for {user}"
    assert f"add {user} to a Slurm account" in qos.fix


def test_a_local_profile_skips_slurm_and_a_bad_profile_is_the_one_failure(local_site, cli, hub):
    site = local_site
    site.write_settings(f'[defaults]\nhf_endpoint = "{hub.url}"\n')
    result = cli("doctor", "--json")
    assert result.exit_code == 0, result.stdout
    found = checks(result.stdout)
    assert found["profile"]["detail"].startswith("local (local; built in")
    assert not {"slurm commands", "partition", "qos"} & set(found)
    bad = cli("doctor", "--profile", "nosuch", "--json")
    assert bad.exit_code == 1
    data = json.loads(bad.stdout)
    assert data["profile"] is None and [c["name"] for c in data["checks"]] == ["profile"]
    assert data["checks"][0]["status"] == "fail" and "profile 'nosuch' not found" in data["checks"][0]["detail"]


def test_a_bad_setting_is_reported_per_kind(site, cli):
    site.write_settings('[defaults.download-model]\nmem = "lots"\n')
    result = cli("doctor", "--json")
    assert result.exit_code == 1
    found = checks(result.stdout)
    assert found["settings: download-model"]["status"] == "fail"
    assert "not a Slurm memory size" in found["settings: download-model"]["detail"]
    assert "settings" not in found


@pytest.mark.slurm
def test_as_a_researcher_home_must_be_writable_and_the_shared_cache_reads_as_read_only(nobody_env, hub):
    root = nobody_env
    nobody = pwd.getpwnam("nobody")
    site = Path(tempfile.mkdtemp(prefix="site-", dir=root))
    site.chmod(0o755)
    app, home, cache = site / "app", site / "home", site / "cache"
    app.mkdir()
    os.chown(app, nobody.pw_uid, nobody.pw_gid)
    home.mkdir()  # root's: nobody cannot write there
    (cache / "images").mkdir(parents=True)
    (cache / "models").mkdir()
    subprocess.run(["chmod", "-R", "755", str(site)], check=True)
    (cache / "models").chmod(0o750)  # a shared folder other users cannot read
    (app / "profiles.cfg").write_text(profiles_cfg({"cluster": slurm_profile(home, cache, user="nobody")}))
    (app / "bfjobs.toml").write_text(f'[defaults]\nhf_endpoint = "{hub.url}"\n')
    proc = as_nobody(root, app, "doctor", "--json")
    assert proc.returncode == 1, proc.stderr
    found = checks(proc.stdout)
    assert found["home_dir"]["status"] == "fail" and found["home_dir"]["detail"] == f"{home}: not writable by you"
    assert "home_dir to a folder you own" in found["home_dir"]["fix"]
    assert found["cache_dir"]["status"] == "ok" and "read-only for you" in found["cache_dir"]["detail"]
    assert found["cache modes"]["status"] == "warn" and str(cache / "models") in found["cache modes"]["detail"]
    assert found["interpreter"]["status"] == "ok", found["interpreter"]  # the world-readable copy nobody runs


# ------------------------------------------------------------------ each failure, with its fix

SETTINGS = '[defaults]\npartition = "transfer"\nqos = "dtn"\nhf_endpoint = "http://127.0.0.1:{port}"\n'


def test_slurm_commands_missing_from_path_fail_with_the_fix(site, cli, no_slurm_path, monkeypatch):
    site.write_profiles()  # slurm (default, this machine) and laptop
    site.write_settings(SETTINGS.format(port=closed_port()))
    monkeypatch.setenv("PATH", no_slurm_path)
    result = cli("doctor", "--json")
    assert result.exit_code == 1
    found = checks(result.stdout)
    commands = found["slurm commands"]
    assert commands["status"] == "fail"
    assert commands["detail"] == "sbatch, srun, squeue, sacct, scancel, sinfo not on PATH"
    assert "run bfjobs on a login node of the cluster (or load its Slurm module)" in commands["fix"]
    assert found["partition"]["status"] == "warn" and found["qos"]["status"] == "warn"  # nothing to ask
    assert "slurm commands" in result.stderr and "partition" not in result.stderr  # warnings do not fail


def test_sinfo_and_sacctmgr_that_cannot_list_are_warnings_naming_them(site, cli, no_slurm_path, monkeypatch):
    """The commands are there but the controller and accounting do not answer."""
    site.write_profiles()
    site.write_settings(SETTINGS.format(port=closed_port()))
    down = site.root / "slurm-down"
    down.mkdir()
    for name in ("sbatch", "srun", "squeue", "sacct", "scancel", "sinfo", "sacctmgr"):
        (down / name).write_text(f"#!/bin/sh\necho '{name}: error: Unable to contact slurm controller' >&2\nexit 1\n")
        (down / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{down}{os.pathsep}{no_slurm_path}")
    result = cli("doctor", "--json")
    assert result.exit_code == 0, result.stdout  # warnings only
    found = checks(result.stdout)
    assert found["slurm commands"]["status"] == "ok"
    assert found["partition"] == {
        "name": "partition", "status": "warn", "detail": "transfer: Slurm could not list the partitions here",
        "fix": "check that the controller and accounting answer (sinfo, sacctmgr)",
    }
    assert found["qos"]["status"] == "warn" and found["qos"]["detail"].startswith("dtn: Slurm could not list the QOS")
    assert "sacctmgr" in found["qos"]["fix"]


def test_a_shared_group_that_does_not_exist_fails_with_the_fix(local_site, cli):
    group = "bfjobs-nosuchgroup"
    local_site.write_settings(f'[defaults]\nshared_group = "{group}"\nhf_endpoint = "http://127.0.0.1:{closed_port()}"\n')
    result = cli("doctor", "--json")
    assert result.exit_code == 1
    found = checks(result.stdout)[f"shared_group {group}"]
    assert found["status"] == "fail" and found["detail"] == f"no group '{group}' on this machine"
    assert found["fix"] == "fix shared_group in the site file or bfjobs.toml (getent group lists the groups)"
    assert result.stderr.strip() == f"bfjobs: error: 1 check(s) failed: shared_group {group}"


def test_as_a_researcher_an_unreadable_cache_fails_and_a_private_install_warns_until_fixed(nobody_env):
    """As ``nobody``: a cache_dir only root can read fails; an install only nobody can read (its
    package folder nobody's, 700) works for nobody but not for the site's other users: a warning.
    The fixes doctor gives (chmod -R a+rX) turn both to ok."""
    root = nobody_env
    app, home, cache = nobody_site(root)
    cache.mkdir(mode=0o700)  # root's, readable by root alone
    (app / "profiles.cfg").write_text(profiles_cfg({"mine": local_profile(home, cache)}))
    (app / "bfjobs.toml").write_text(f'[defaults]\nhf_endpoint = "http://127.0.0.1:{closed_port()}"\n')
    package = root / "lib" / "blackfish_jobs"
    subprocess.run(["chown", "-R", "nobody", str(package)], check=True)
    package.chmod(0o700)
    try:
        proc = as_nobody(root, app, "doctor", "--json")
        assert proc.returncode == 1 and proc.stdout, proc.stdout + proc.stderr
        found = checks(proc.stdout)
        assert found["cache_dir"] == {
            "name": "cache_dir", "status": "fail", "detail": f"{cache}: not readable by you",
            "fix": "ask its admins to make it readable (chmod -R a+rX), or fix the profile's cache_dir",
        }
        interpreter = found["interpreter"]
        assert interpreter["status"] == "warn"
        assert interpreter["detail"] == f"/usr/bin/python3.11 runs the jobs; not readable by every user: {package}"
        assert "a site install must be readable by all" in interpreter["fix"]

        subprocess.run(["chmod", "-R", "a+rX", str(cache), str(package)], check=True)  # the fixes
        proc = as_nobody(root, app, "doctor", "--json")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        found = checks(proc.stdout)
        assert found["cache_dir"]["status"] == "ok" and "read-only for you" in found["cache_dir"]["detail"]
        assert found["interpreter"]["status"] == "ok", found["interpreter"]
    finally:  # the copy stays usable by the module's other tests
        subprocess.run(["chown", "-R", "root", str(package)], check=True)
        subprocess.run(["chmod", "-R", "a+rX", str(package)], check=True)
