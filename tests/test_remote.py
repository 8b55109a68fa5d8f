"""Remote profiles: bfjobs on a laptop, the cluster over a real ssh (scripts/sshd-up.sh).

The laptop user (``bflaptop``) runs bfjobs from its own install with nothing but ``ssh`` on PATH;
the cluster user (``bfcluster``, a Slurm association on the test cluster) has bfjobs in its own
venv (``remote_python``); the test cluster runs the jobs. See tests/support/remote.py.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from support.blackfish import create_blackfish_db
from support.hub import DEMO_REPO_ID
from support.remote import CLUSTER, Laptop, cluster_login_profile
from support.site import as_job, as_jobs


def _owner(path) -> str:
    import pwd

    return pwd.getpwuid(path.stat().st_uid).pw_name


def test_pull_image_from_the_laptop_lands_in_the_clusters_cache(laptop: Laptop):
    done = laptop.bfjobs("submit", "pull-image", "docker://alpine:3.20", "--profile", "cluster", "--to", "home",
                         "--wait", "--json")
    assert done.returncode == 0, done.stderr
    job = as_job(done)
    assert job["state"] == "COMPLETED" and job["slurm_job_id"], job
    sif = laptop.home_dir / "images" / "alpine_3.20.sif"
    assert job["target"] == str(sif) and sif.is_file() and _owner(sif) == CLUSTER  # the cluster user's job made it
    assert (sif.stat().st_mode & 0o777) == 0o755
    # the history is the laptop's: list works without asking the cluster at all
    before = laptop.ssh_calls()
    listed = laptop.bfjobs("list", "--json")
    assert listed.returncode == 0 and [j["id"] for j in as_jobs(listed)] == [job["id"]]
    assert laptop.ssh_calls() == before
    logs = laptop.bfjobs("logs", job["id"])
    assert logs.returncode == 0 and "Creating SIF file" in logs.stdout, logs.stderr
    again = laptop.bfjobs("submit", "pull-image", "docker://alpine:3.20", "--profile", "cluster", "--to", "home")
    assert again.returncode == 0 and f"already present: {sif}" in again.stdout, again.stderr
    shared = laptop.bfjobs("submit", "pull-image", "docker://alpine:3.20", "--profile", "cluster", "--wait", "--json")
    assert shared.returncode == 0, shared.stderr  # the cluster user keeps this cache: --to shared (the default)
    assert as_job(shared)["target"] == str(laptop.cache_dir / "images" / "alpine_3.20.sif")
    assert (laptop.cache_dir / "images" / "alpine_3.20.sif").is_file()


def test_images_are_pinned_on_the_cluster_and_a_moved_tag_refused_from_the_laptop(laptop: Laptop, registry):
    """The cluster (its login node and its nodes) reaches the registry: the tag is resolved there,
    the job pulls that digest, and a moved tag is refused with both digests, from the laptop."""
    cluster_login_profile()  # this test's cluster is not air-gapped: no BFJOBS_REGISTRY_OFFLINE there
    try:
        laptop.write_settings(f'insecure_registries = ["{registry.host}"]')
        name = registry.unique_name("remote/image")
        first = registry.push(name, "v1", "pulled from the laptop")
        uri = registry.uri(name, "v1")
        argv = ("submit", "pull-image", uri, "--profile", "cluster", "--to", "home")
        done = laptop.bfjobs(*argv, "--wait", "--json")
        assert done.returncode == 0, done.stderr
        job = as_job(done)
        assert job["state"] == "COMPLETED" and job["request"]["digest"] == first, job
        assert job["result"]["digest"] == first and job["result"]["pulled"].endswith(f"@{first}")
        moved = registry.push(name, "v1", "moved meanwhile")
        again = laptop.bfjobs(*argv)
        assert again.returncode == 1, again.stderr
        assert first[:19] in again.stderr and moved[:19] in again.stderr and "--force" in again.stderr
        assert len(as_jobs(laptop.bfjobs("list", "--json"))) == 1  # nothing submitted
        checked = laptop.bfjobs("cache", "ls", "--profile", "cluster", "--check-upstream", "--json")
        assert checked.returncode == 0, checked.stderr
        [image] = [a for a in json.loads(checked.stdout)["artefacts"] if a["kind"] == "image"]
        assert image["digest"] == first and image["upstream"]["moved"] is True
    finally:
        cluster_login_profile("BFJOBS_REGISTRY_OFFLINE=1")


def test_render_shows_what_the_cluster_would_submit(laptop: Laptop):
    laptop.write_settings('partition = "debug"')
    shown = laptop.bfjobs("render", "pull-image", "docker://alpine:3.21", "--profile", "cluster", "--to", "home")
    assert shown.returncode == 0, shown.stderr
    assert "#SBATCH --partition=debug" in shown.stdout
    assert f"{laptop.home_dir}/jobs/bfjobs/" in shown.stdout  # the cluster's job folder
    assert str(laptop.cluster_install.prefix) in shown.stdout  # the cluster's interpreter runs the job
    assert laptop.bfjobs("list", "--json").stdout.count('"id"') == 0  # nothing submitted


def test_a_list_is_one_round_trip_and_one_array_and_status_one_more(laptop: Laptop):
    names = [f"docker://alpine:3.{n}" for n in range(10, 16)]
    listed = laptop.write_list("images.txt", names)
    before = laptop.ssh_calls()
    done = laptop.bfjobs("submit", "pull-image", "--from-file", str(listed), "--profile",
                         "cluster", "--to", "home", "--json")
    assert done.returncode == 0, done.stderr
    jobs = as_jobs(done)
    assert len(jobs) == len(names) and len({j["slurm_job_id"].split("_")[0] for j in jobs}) == 1  # one array
    assert laptop.ssh_calls() == before + 1
    before = laptop.ssh_calls()
    status = laptop.bfjobs("status", "--json")
    assert status.returncode == 0, status.stderr
    assert len(as_jobs(status)) == len(names)
    assert laptop.ssh_calls() == before + 1  # all six jobs in one request (one sacct there)
    waited = laptop.bfjobs("wait", *[j["id"] for j in jobs], "--timeout", "180", "--json")
    assert waited.returncode == 0, waited.stderr
    assert {j["state"] for j in as_jobs(waited)} == {"COMPLETED"}
    before = laptop.ssh_calls()
    again = laptop.bfjobs("wait", *[j["id"] for j in jobs], "--json")  # ended: only "in place?" is asked
    assert again.returncode == 0, again.stderr
    assert laptop.ssh_calls() == before + 1  # all six artefacts in one request


def test_cancel_from_the_laptop(laptop: Laptop):
    laptop.write_settings('setup = ["export FAKE_APPTAINER_SLEEP=120"]')
    done = laptop.bfjobs("submit", "pull-image", "docker://alpine:3.19", "--profile", "cluster", "--to", "home",
                         "--json")
    assert done.returncode == 0, done.stderr
    job_id = as_job(done)["id"]
    cancelled = laptop.bfjobs("cancel", job_id, "--json")
    assert cancelled.returncode == 0, cancelled.stderr
    waited = laptop.bfjobs("wait", job_id, "--timeout", "120", "--json")
    assert as_job(waited)["state"] == "CANCELLED", waited.stdout
    assert not (laptop.home_dir / "images" / "alpine_3.19.sif").exists()


@pytest.mark.parametrize(
    ("host", "expect"),
    [("bfcluster-wrongkey", "its host key is unknown or has CHANGED"), ("bfcluster-otherkey", "the login was refused")],
)
def test_a_wrong_host_key_or_login_key_is_one_line_and_nothing_is_recorded(laptop: Laptop, host, expect):
    laptop.write_profiles(host=host)
    done = laptop.bfjobs("submit", "pull-image", "docker://alpine:3.20", "--profile", "cluster", "--to", "home")
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert "profile 'cluster'" in line and expect in line and host in line, line
    assert "Traceback" not in done.stderr
    assert laptop.bfjobs("list", "--json").stdout.count('"id"') == 0


def test_bfjobs_missing_on_the_cluster_is_one_line(laptop: Laptop):
    laptop.write_settings(remote_python="/usr/bin/python3")  # no bfjobs there
    done = laptop.bfjobs("submit", "pull-image", "docker://alpine:3.20", "--profile", "cluster", "--to", "home")
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert "bfjobs is not installed for /usr/bin/python3" in line and "remote_python" in line, line
    laptop.write_settings(remote_python="/nonexistent/python3")
    done = laptop.bfjobs("submit", "pull-image", "docker://alpine:3.20", "--profile", "cluster", "--to", "home")
    assert done.returncode == 1 and "/nonexistent/python3 not found on bfcluster" in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("keys", "settings", "expect"),
    [
        ({"host": "-oProxyCommand=touch${IFS}/tmp/bfjobs-canary"}, (), "host"),
        ({"user": "x;touch /tmp/bfjobs-canary"}, (), "user"),
        ({"home_dir": "/tmp/$(touch /tmp/bfjobs-canary)"}, (), "home_dir"),
        ({"home_dir": "~/jobs"}, (), "absolute path"),
        ({}, ('remote_python = "python3; touch /tmp/bfjobs-canary"',), "remote_python"),
    ],
)
def test_hostile_profiles_are_refused_before_any_connection(laptop: Laptop, keys, settings, expect):
    canary = "/tmp/bfjobs-canary"
    laptop.write_profiles(**keys)
    if settings:
        (laptop.app / "bfjobs.toml").write_text("[profiles.cluster]\n" + "\n".join(settings) + "\n")
    done = laptop.bfjobs("submit", "pull-image", "docker://alpine:3.20", "--profile", "cluster", "--to", "home")
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert expect in line, line
    assert laptop.ssh_calls() == 0
    import os

    assert not os.path.exists(canary)


def test_the_clusters_site_file_is_not_the_laptops_to_undo(laptop: Laptop, tmp_path):
    site = laptop.cluster_root / "site.toml"
    site.write_text('[defaults]\npartition = "debug"\n[site]\nfixed = ["partition"]\n')
    shutil.chown(site, CLUSTER, CLUSTER)
    # the cluster's site file, as the agent's login shell sees it (a site sets it in /etc/profile.d)
    profile = laptop.cluster_root.parent / ".profile"
    saved = profile.read_text() if profile.exists() else None
    profile.write_text(f"export BFJOBS_SITE_CONFIG={site}\n")
    try:
        laptop.write_settings('partition = "other"')
        done = laptop.bfjobs("render", "pull-image", "docker://alpine:3.20", "--profile", "cluster", "--to", "home")
        assert done.returncode == 2, done.stderr
        assert "on bfcluster:" in done.stderr and "the site fixes this setting" in done.stderr, done.stderr
        laptop.write_settings()
        done = laptop.bfjobs("render", "pull-image", "docker://alpine:3.20", "--profile", "cluster", "--to", "home")
        assert done.returncode == 0 and "#SBATCH --partition=debug" in done.stdout, done.stderr
    finally:
        if saved is None:
            profile.unlink()
        else:
            profile.write_text(saved)


def test_a_download_registers_in_the_laptops_blackfish_table(laptop: Laptop, hub):
    db = create_blackfish_db(laptop.app / "app.sqlite")
    shutil.chown(db, "bflaptop", "bflaptop")
    laptop.write_settings(f'hf_endpoint = "{hub.url}"')
    done = laptop.bfjobs("submit", "download-model", DEMO_REPO_ID, "--profile", "cluster", "--to", "shared",
                         "--wait", "--json")
    assert done.returncode == 0, done.stderr
    job = as_job(done)
    # the download's progress record is the cluster's, sent with the survey that saw it end
    assert job["progress"] is not None and job["progress"]["final"] and job["progress"]["bytes_done"] > 0, job
    repo = laptop.cache_dir / "models" / ("models--" + DEMO_REPO_ID.replace("/", "--"))
    assert job["state"] == "COMPLETED" and (repo / "snapshots" / job["result"]["commit"]).is_dir(), job
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT repo, profile, revision, model_dir FROM model").fetchall()
    conn.close()
    assert rows == [(DEMO_REPO_ID, "cluster", job["result"]["commit"], str(repo))]
    synced = laptop.bfjobs("sync", "--json")  # nothing left to register; no round trip needed for that
    assert synced.returncode == 0, synced.stderr
    # the seed rule, against the cluster's shared cache: nothing submitted, the cached revision named
    before = laptop.ssh_calls()
    again = laptop.bfjobs("submit", "download-model", DEMO_REPO_ID, "--profile", "cluster")  # --to home
    assert again.returncode == 0, again.stderr
    assert f"already available: commit {job['result']['commit']} in the shared cache" in again.stdout, again.stdout
    assert laptop.ssh_calls() == before + 1
    assert not (laptop.home_dir / "models").exists()
    assert json.loads(laptop.bfjobs("list", "--json").stdout)["jobs"][0]["id"] == job["id"]
    # a list of models, checked against the cluster's caches: the shared copy answers for it...
    models = laptop.write_list("models.txt", [f"{DEMO_REPO_ID}@main  # the shared cache has it"])
    present = laptop.bfjobs("submit", "download-model", "--from-file", str(models), "--profile", "cluster")
    assert present.returncode == 0 and "already available" in present.stdout, present.stdout + present.stderr
    # ...and with --force it is one request and one job array, into the home cache
    before = laptop.ssh_calls()
    listed = laptop.bfjobs("submit", "download-model", "--from-file", str(models), "--profile", "cluster",
                           "--to", "home", "--force", "--wait", "--json")
    assert listed.returncode == 0, listed.stderr
    [home_job] = [j for j in as_jobs(listed) if j.get("id")]
    assert home_job["state"] == "COMPLETED" and home_job["slurm_job_id"].endswith("_0"), home_job
    home_repo = laptop.home_dir / "models" / repo.name
    assert (home_repo / "snapshots" / job["result"]["commit"]).is_dir()
    assert laptop.ssh_calls() >= before + 2  # the submission, then the wait's surveys


@pytest.fixture
def cluster_login(laptop: Laptop) -> Iterator[callable]:
    """Lines to put in the cluster user's ~/.profile (what its login shell, hence the agent, sees)."""
    profile = laptop.cluster_root.parent / ".profile"
    saved = profile.read_text() if profile.exists() else None

    def write(*lines: str) -> None:
        profile.write_text((saved or "") + "\n" + "\n".join(lines) + "\n")

    yield write
    if saved is None:
        profile.unlink(missing_ok=True)
    else:
        profile.write_text(saved)


def _kill_sessions() -> None:
    """End every ssh session of the cluster user (not the listening sshd): the connection drops."""
    import subprocess

    subprocess.run(["pkill", "-KILL", "-u", CLUSTER, "-f", f"sshd: {CLUSTER}"], check=False)


def test_a_connection_lost_during_submit_loses_no_job_and_submits_none_twice(laptop: Laptop, cluster_login):
    import subprocess
    import time

    from support.site import wait_for

    slow = laptop.cluster_root / "bin"
    slow.mkdir()
    started = laptop.cluster_root / "sbatch-started"
    (slow / "sbatch").write_text(f'#!/bin/sh\ntouch {started}\nsleep 3\nexec /usr/bin/sbatch "$@"\n')
    (slow / "sbatch").chmod(0o755)
    shutil.chown(slow, CLUSTER, CLUSTER)
    shutil.chown(slow / "sbatch", CLUSTER, CLUSTER)
    cluster_login(f'export PATH="{slow}:$PATH"')
    begun = datetime.now() - timedelta(seconds=2)  # sacct's -S is the controller's local time
    two = laptop.write_list("two.txt", ["docker://alpine:3.10", "docker://alpine:3.11"])
    argv = [laptop.laptop_install.prefix / "bin" / "bfjobs", "submit", "pull-image", "--from-file",
            str(two), "--profile", "cluster", "--to", "home"]
    from support.install import RUNUSER

    proc = subprocess.Popen([RUNUSER, "-u", "bflaptop", "--", *map(str, argv)], env=laptop.env(),
                            cwd=str(laptop.app), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(started.exists, timeout=60)
    _kill_sessions()  # while sbatch runs there
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    [line] = err.strip().splitlines()
    assert "connection to bfcluster broke" in line and "bfjobs status" in line, line
    listed = as_jobs(laptop.bfjobs("list", "--json"))
    assert len(listed) == 2 and all(j["slurm_job_id"] is None for j in listed), listed  # recorded, not lost
    time.sleep(5)  # the agent, not hung up on, finished the submission
    status = laptop.bfjobs("status", "--json")
    assert status.returncode == 0, status.stderr
    jobs = as_jobs(status)
    assert all(j["slurm_job_id"] for j in jobs), jobs
    assert len({j["slurm_job_id"].split("_")[0] for j in jobs}) == 1  # the one array the cluster submitted
    waited = laptop.bfjobs("wait", *[j["id"] for j in jobs], "--timeout", "180", "--json")
    assert waited.returncode == 0 and {j["state"] for j in as_jobs(waited)} == {"COMPLETED"}, waited.stderr
    for name in ("alpine_3.10.sif", "alpine_3.11.sif"):
        assert (laptop.home_dir / "images" / name).is_file()
    since = begun.strftime("%Y-%m-%dT%H:%M:%S")

    def submitted_since() -> list[str]:
        listed = subprocess.run(["sacct", "-n", "-P", "-X", "-u", CLUSTER, "-S", since, "--name",
                                 "bfjobs-pull-image-array", "-o", "JobID,Submit"],
                                capture_output=True, text=True).stdout.split()
        return [job for job, at in (line.split("|") for line in listed) if at >= since]  # not older jobs

    wait_for(submitted_since, timeout=30)  # accounting may lag the controller
    submitted = submitted_since()
    assert len({c.split("_")[0] for c in submitted}) == 1, submitted  # one sbatch: nothing submitted twice


@pytest.mark.parametrize("session", [0, None], ids=["plain", "held-session"])
def test_wait_says_when_the_cluster_cannot_be_reached_and_goes_on_when_it_is_back(laptop: Laptop, session):
    """Also with held sessions (the default): the holder's session dies with the others, its
    refreshes fall back to plain calls, which fail until the cluster is back."""
    import os
    import signal
    import subprocess
    import time

    from support.install import RUNUSER
    from support.remote import SSHD_DIR
    from support.site import REPO, wait_for

    laptop.write_settings('setup = ["export FAKE_APPTAINER_SLEEP=20"]', session=session)
    done = laptop.bfjobs("submit", "pull-image", "docker://alpine:3.18", "--profile", "cluster", "--to", "home",
                         "--json")
    assert done.returncode == 0, done.stderr
    job_id = as_job(done)["id"]
    argv = [str(laptop.laptop_install.prefix / "bin" / "bfjobs"), "wait", job_id, "--timeout", "240"]
    proc = subprocess.Popen([RUNUSER, "-u", "bflaptop", "--", *argv], env=laptop.env(), cwd=str(laptop.app),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(3)
        if session is None:  # the refreshes go through a held session by now
            wait_for(lambda: any(p.name.startswith("held-") and p.is_socket() for p in laptop.control.iterdir()))
        os.kill(int((SSHD_DIR / "sshd.pid").read_text()), signal.SIGTERM)  # the listener...
        _kill_sessions()  # ...and the session a multiplexed master keeps open
        time.sleep(10)  # a few polls fail meanwhile
    finally:
        up = subprocess.run(["bash", str(REPO / "scripts" / "sshd-up.sh")], capture_output=True, text=True)
    assert up.returncode == 0, up.stderr
    _out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    assert "cannot ask the cluster of profile 'cluster'" in err and "still waiting" in err, err
    assert "bfjobs: answered again" in err, err
    assert (laptop.home_dir / "images" / "alpine_3.18.sif").is_file()


def test_verify_and_logs_follow_run_on_the_cluster(laptop: Laptop):
    done = laptop.bfjobs("submit", "pull-image", "docker://alpine:3.17", "--profile", "cluster", "--to", "home",
                         "--json")
    assert done.returncode == 0, done.stderr
    job_id = as_job(done)["id"]
    followed = laptop.bfjobs("logs", "--follow", job_id, timeout=240)
    assert followed.returncode == 0, followed.stderr
    assert "Creating SIF file" in followed.stdout and "Job completed successfully" in followed.stdout
    checked = laptop.bfjobs("verify", job_id, "--json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    [finding] = json.loads(checked.stdout)["findings"]
    assert finding["status"] == "OK" and finding["path"] == str(laptop.home_dir / "images" / "alpine_3.17.sif")
    by_path = laptop.bfjobs("verify", str(laptop.home_dir / "images"), "--profile", "cluster", "--json")
    assert by_path.returncode == 0, by_path.stdout + by_path.stderr
    assert [f["status"] for f in json.loads(by_path.stdout)["findings"]] == ["OK"]
    # the image changed behind bfjobs' back, on the cluster: verify says so, from the laptop
    (laptop.home_dir / "images" / "alpine_3.17.sif").write_bytes(b"not the image")
    bad = laptop.bfjobs("verify", job_id, "--json")
    assert bad.returncode == 1 and json.loads(bad.stdout)["findings"][0]["status"] != "OK", bad.stdout


def test_a_home_dir_with_a_space_is_refused_in_one_line(laptop: Laptop):
    laptop.write_profiles(home_dir="/home/bfcluster/my home")
    done = laptop.bfjobs("submit", "pull-image", "docker://alpine:3.20", "--profile", "cluster", "--to", "home")
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert "home_dir" in line and "my home" in line, line
    assert laptop.ssh_calls() == 0


@pytest.mark.parametrize(
    ("agent", "expect"),
    [
        ('echo "BFJOBS-AGENT 2 9.9.9"', "speaks protocol 2 (version 9.9.9)"),
        ('echo "BFJOBS-AGENT 1 0.1.0"; cat >/dev/null; echo "BFJOBS-AGENT-ANSWER {not json"', "no bfjobs answer"),
        ('echo "BFJOBS-AGENT 1 0.1.0"; cat >/dev/null; echo \'BFJOBS-AGENT-ANSWER {"ok": {"outcomes": 5}}\'',
         "may have submitted"),
        ('echo "BFJOBS-AGENT 1 0.1.0"; cat >/dev/null; printf \'BFJOBS-AGENT-ANSWER {"error": "x\\\\u001b[2Jy", '
         '"type": "BadInput"}\\n\'', "on bfcluster: x [2Jy"),
    ],
    ids=["other-protocol", "not-json", "malformed", "escape-codes"],
)
def test_hostile_or_broken_answers_from_the_cluster_are_one_line(laptop: Laptop, agent, expect):
    """What runs as ``remote_python`` on the cluster is not bfjobs: each answer is checked."""
    fake = laptop.cluster_root / "fake-python"
    fake.write_text(f"#!/bin/sh\n{agent}\n")
    fake.chmod(0o755)
    shutil.chown(fake, CLUSTER, CLUSTER)
    laptop.write_settings(remote_python=str(fake))
    done = laptop.bfjobs("submit", "pull-image", "docker://alpine:3.20", "--profile", "cluster", "--to", "home")
    assert done.returncode in (1, 2), done.stderr
    [line] = done.stderr.strip().splitlines()
    assert expect in line and "\x1b" not in line, line
    rows = as_jobs(laptop.bfjobs("list", "--json"))
    if "ANSWER" in agent and "error" not in agent:  # answered after the request: recorded, for status to settle
        assert "may have submitted" in line
        assert len(rows) == 1 and rows[0]["slurm_job_id"] is None
    else:
        assert rows == []


def test_an_unreachable_cluster_is_one_line_and_list_still_works(laptop: Laptop):
    done = laptop.bfjobs("submit", "pull-image", "docker://alpine:3.20", "--profile", "cluster", "--to", "home",
                         "--json")
    assert done.returncode == 0, done.stderr
    laptop.write_profiles(host="bfcluster-down")
    failed = laptop.bfjobs("submit", "pull-image", "docker://alpine:3.21", "--profile", "cluster", "--to", "home")
    assert failed.returncode == 1
    [line] = failed.stderr.strip().splitlines()
    assert "profile 'cluster': the host cannot be reached" in line and "Connection refused" in line, line
    listed = laptop.bfjobs("list", "--json")  # the history is the laptop's
    assert listed.returncode == 0 and len(as_jobs(listed)) == 1
    status = laptop.bfjobs("status", "--json")  # says it could not ask, shows what it knows
    assert "cannot ask the cluster of profile 'cluster'" in status.stderr, status.stderr
    assert len(as_jobs(status)) == 1


def test_templates_dir_is_the_clusters(laptop: Laptop):
    templates = laptop.cluster_root / "templates"
    templates.mkdir()
    source = laptop.cluster_install.prefix
    [shipped] = source.glob("lib/python3*/site-packages/blackfish_jobs/templates/sbatch/pull-image.sh.j2")
    (templates / "pull-image.sh.j2").write_text("# the site's own template\n" + shipped.read_text())
    for path in (templates, templates / "pull-image.sh.j2"):
        shutil.chown(path, CLUSTER, CLUSTER)
    laptop.write_settings(f'templates_dir = "{templates}"')  # a folder the laptop does not have
    shown = laptop.bfjobs("render", "pull-image", "docker://alpine:3.20", "--profile", "cluster", "--to", "home")
    assert shown.returncode == 0, shown.stderr
    assert "# the site's own template" in shown.stdout
    laptop.write_settings('templates_dir = "/nonexistent/templates"')
    missing = laptop.bfjobs("render", "pull-image", "docker://alpine:3.20", "--profile", "cluster", "--to", "home")
    assert missing.returncode == 2 and "on bfcluster:" in missing.stderr and "/nonexistent/templates" in missing.stderr


def test_doctor_checks_the_cluster_in_one_round_trip(laptop: Laptop, hub):
    laptop.write_settings(f'hf_endpoint = "{hub.url}"', 'partition = "nosuchpartition"')
    done = laptop.bfjobs("doctor", "--profile", "cluster", "--json")
    assert done.returncode == 1, done.stdout + done.stderr  # the partition is wrong there
    found = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    assert found["ssh"]["status"] == "ok"
    on = " (on bfcluster)"
    # Slurm's commands are the cluster's (the laptop has none on PATH)
    assert found["slurm commands" + on]["status"] == "ok", found
    assert found["partition" + on]["status"] == "fail" and "nosuchpartition" in found["partition" + on]["detail"]
    assert found["home_dir" + on]["status"] == "ok" and str(laptop.home_dir) in found["home_dir" + on]["detail"]
    assert found["hub" + on]["status"] == "ok"
    assert laptop.ssh_calls() == 1
    laptop.write_profiles(host="bfcluster-down")
    down = laptop.bfjobs("doctor", "--profile", "cluster", "--json")
    found = {c["name"]: c for c in json.loads(down.stdout)["checks"]}
    assert found["ssh"]["status"] == "fail" and "cannot be reached" in found["ssh"]["detail"]


PARTIAL_AGENT = """#!/usr/bin/python3
# Not bfjobs: answers a submission as a cluster whose second array was refused would, after the
# first was submitted (a row for the first job only).
import json, sys
print("BFJOBS-AGENT 1 0.1.0", flush=True)
request = json.loads(sys.stdin.read())
ids = request["args"]["ids"]
row = {"id": ids[0], "kind": "pull-image", "profile": "cluster", "backend": "slurm", "native_id": "4242_0",
       "state": "PENDING", "reason": None, "folder": "FOLDER/" + ids[0], "target": "TARGET",
       "request": {"uri": "docker://alpine:3.10"}, "result": None, "node": None, "user": "bfcluster",
       "submitted_at": "2026-01-01 00:00:00", "ended_at": None, "updated_at": "2026-01-01 00:00:00",
       "registered_at": None, "location": "home"}
answer = {"ok": {"partial": [row], "error": "sbatch: error: QOSMaxSubmitJobPerUserLimit", "type": "ClusterError",
                 "notes": []}}
print("BFJOBS-AGENT-ANSWER " + json.dumps(answer))
"""


def test_a_list_refused_halfway_keeps_the_jobs_already_submitted(laptop: Laptop):
    listed = laptop.write_list("two.txt", ["docker://alpine:3.10", "docker://alpine:3.11"])
    fake = laptop.cluster_root / "partial-agent"
    text = PARTIAL_AGENT.replace("FOLDER", str(laptop.home_dir / "jobs" / "bfjobs"))
    fake.write_text(text.replace("TARGET", str(laptop.home_dir / "images" / "alpine_3.10.sif")))
    fake.chmod(0o755)
    shutil.chown(fake, CLUSTER, CLUSTER)
    laptop.write_settings(remote_python=str(fake))
    done = laptop.bfjobs("submit", "pull-image", "--from-file", str(listed), "--profile", "cluster", "--to", "home")
    assert done.returncode == 1, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert "QOSMaxSubmitJobPerUserLimit" in line and "1 job(s) of the list were submitted before it" in line, line
    [job] = as_jobs(laptop.bfjobs("list", "--json"))  # the submitted one is recorded, the other is not
    assert job["slurm_job_id"] == "4242_0" and job["target"].endswith("alpine_3.10.sif")


def test_cache_commands_from_the_laptop_act_on_the_clusters_caches(laptop: Laptop, hub):
    """``cache ls`` is one round trip; ``cache rm``/``prune`` act on the cluster's caches and keep the
    laptop's Blackfish table in step; ``jobs prune`` removes the cluster's job folders of finished jobs."""
    import subprocess

    db = create_blackfish_db(laptop.app / "app.sqlite")
    shutil.chown(db, "bflaptop", "bflaptop")
    laptop.write_settings(f'hf_endpoint = "{hub.url}"')
    shared = as_job(laptop.bfjobs("submit", "download-model", DEMO_REPO_ID, "--profile", "cluster", "--to", "shared",
                                  "--wait", "--json"))
    home = as_job(laptop.bfjobs("submit", "download-model", DEMO_REPO_ID, "--revision", "v1.0", "--profile",
                                "cluster", "--to", "home", "--wait", "--json"))
    assert shared["state"] == home["state"] == "COMPLETED", (shared, home)
    folder = "models--" + DEMO_REPO_ID.replace("/", "--")
    home_repo = laptop.home_dir / "models" / folder
    leftover = laptop.home_dir / "models" / f".bfjobs-staging-{folder}@{'a' * 40}-77-0123abcd"
    leftover.mkdir()
    (leftover / "blob.incomplete").write_bytes(b"x" * 1234)
    subprocess.run(["chown", "-R", f"{CLUSTER}:{CLUSTER}", str(leftover)], check=True)

    before = laptop.ssh_calls()
    listed = laptop.bfjobs("cache", "ls", "--profile", "cluster", "--json")
    assert listed.returncode == 0, listed.stderr
    assert laptop.ssh_calls() == before + 1  # one round trip
    found = {(a["where"], a["commit"]) for a in json.loads(listed.stdout)["artefacts"] if a["kind"] == "model"}
    assert found == {("shared", shared["result"]["commit"]), ("home", home["result"]["commit"])}
    assert all(a["blackfish"] for a in json.loads(listed.stdout)["artefacts"])
    assert [c["where"] for c in json.loads(listed.stdout)["caches"]] == ["shared", "home"]

    hostile = laptop.bfjobs("cache", "rm", "--profile", "cluster", "--", "../../etc")
    assert hostile.returncode == 2 and laptop.ssh_calls() == before + 1  # refused on the laptop, nothing sent

    removed = laptop.bfjobs("cache", "rm", f"{DEMO_REPO_ID}@v1.0", "--profile", "cluster", "--json")
    assert removed.returncode == 0, removed.stderr
    result = json.loads(removed.stdout)
    assert result["removed"][0]["where"] == "home" and result["blackfish_rows"] == 1
    assert not (home_repo / "snapshots" / home["result"]["commit"]).exists()
    assert (laptop.cache_dir / "models" / folder / "snapshots" / shared["result"]["commit"]).is_dir()
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT revision, model_dir FROM model").fetchall()
    conn.close()
    assert rows == [(shared["result"]["commit"], str(laptop.cache_dir / "models" / folder))]

    pruned = laptop.bfjobs("cache", "prune", "--profile", "cluster", "--json")
    assert pruned.returncode == 0, pruned.stderr
    assert [x["what"] for x in json.loads(pruned.stdout)["leftovers"]] == ["staging"]
    assert not leftover.exists()

    jobs = laptop.bfjobs("jobs", "prune", "--profile", "cluster", "--json")
    assert jobs.returncode == 0, jobs.stderr
    folders = {f["path"] for f in json.loads(jobs.stdout)["folders"]}
    assert folders == {shared["folder"], home["folder"]}
    assert not any(map(lambda f: (laptop.home_dir / "jobs" / "bfjobs" / f.rsplit("/", 1)[-1]).exists(), folders))
    assert len(json.loads(laptop.bfjobs("list", "--json").stdout)["jobs"]) == 2  # the rows keep the results


def test_hostile_cache_answers_are_one_line_and_choose_no_rows(laptop: Laptop):
    """A cluster's answer to ``cache ls``/``rm`` is input: malformed is one line, escape codes never
    reach the terminal, and it never chooses which of the laptop's Blackfish rows are deleted."""
    db = create_blackfish_db(laptop.app / "app.sqlite")
    shutil.chown(db, "bflaptop", "bflaptop")
    other = str(laptop.cache_dir / "models" / "models--other--model")
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("INSERT INTO model (id, repo, profile, revision, image, created_at, updated_at, model_dir) "
                     "VALUES (x'00', 'other/model', 'cluster', ?, 'x', '2026-12-01', '2026-12-01', ?)",
                     ("a" * 40, other))
    conn.close()
    fake = laptop.cluster_root / "fake-python"
    shutil.chown(laptop.cluster_root, CLUSTER, CLUSTER)

    said = laptop.cluster_root / "answer.txt"

    def answer(payload: str) -> None:
        said.write_text(f"BFJOBS-AGENT-ANSWER {payload}\n")
        fake.write_text(f"#!/bin/sh\necho 'BFJOBS-AGENT 1 0.1.0'\ncat >/dev/null\ncat {said}\n")
        fake.chmod(0o755)
        for path in (fake, said):
            shutil.chown(path, CLUSTER, CLUSTER)
        laptop.write_settings(remote_python=str(fake))

    answer('{"ok": {"entries": [{"kind": "model", "where": "home", "path": "/x", "bytes": "lots"}], "spaces": []}}')
    bad = laptop.bfjobs("cache", "ls", "--profile", "cluster")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    [line] = bad.stderr.strip().splitlines()
    assert "answered 'cache ls' with something malformed" in line, line
    answer('{"ok": {"entries": [{"kind": "image", "where": "home", "path": "/x\\u001b[2Jy.sif", "bytes": 5}], '
           '"spaces": []}}')
    shown = laptop.bfjobs("cache", "ls", "--profile", "cluster")
    assert shown.returncode == 0 and "\x1b" not in shown.stdout and "/x?[2Jy.sif" in shown.stdout, shown.stdout
    removal = ('{"ok": {"removed": [{"target": "x/y", "kind": "model", "where": "home", "path": "/p", "bytes": 1, '
               f'"repo_id": "other/model", "model_dir": "{other}", "commits": ["{"a" * 40}"], "removed": true}}], '
               '"error": null, "type": null}}')
    answer(removal)
    done = laptop.bfjobs("cache", "rm", "x/y", "--profile", "cluster", "--json")
    assert done.returncode == 0, done.stderr
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM model").fetchone() == (1,)  # not asked for: kept
    conn.close()
    # the cluster removed the first target, then failed on the second: the first one's row goes
    shared = str(laptop.cache_dir / "models" / "models--other--model")
    first = ('{"ok": {"removed": [{"target": "other/model", "kind": "model", "where": "shared", "path": "/p", '
             f'"bytes": 1, "repo_id": "other/model", "model_dir": "{shared}", "commits": ["{"a" * 40}"], '
             '"whole_repo": true, "removed": true}], "error": "x/y is being written by a running job", '
             '"type": "Busy"}}')
    answer(first)
    failed = laptop.bfjobs("cache", "rm", "other/model", "x/y", "--shared", "--profile", "cluster")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    [line] = failed.stderr.strip().splitlines()
    assert "on bfcluster: x/y is being written by a running job" in line, line
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM model").fetchone() == (0,)
    conn.close()
