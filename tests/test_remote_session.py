"""Held sessions over the real test sshd (backends/session.py): a remote ``status`` after the first
is answered by bfjobs held open on the cluster, with the same answer, no ssh invocation, and every
failure of it falling back to the plain call. Fixtures: tests/conftest.py, tests/support/remote.py."""

from __future__ import annotations

import re
import subprocess
import time

from support.remote import CLUSTER, Laptop
from support.site import as_job, as_jobs, wait_for


def _debug_counts(stderr: str) -> tuple[int, int]:
    """(ssh calls, requests over a held session) of one command, from its BFJOBS_DEBUG record."""
    found = re.search(r"(\d+) ssh call\(s\), (\d+) request\(s\) over a held session", stderr)
    assert found, stderr
    return int(found.group(1)), int(found.group(2))


def _holders(laptop: Laptop) -> list:
    """The holders' sockets in the laptop's ssh control folder (not their lock files)."""
    return sorted(p.name for p in laptop.control.iterdir() if p.name.startswith("held-") and p.is_socket())


def _serving_agents(laptop: Laptop) -> list[str]:
    """The cluster user's held agents of this test's cluster install (not another site's)."""
    python = laptop.cluster_install.prefix / "bin" / "python"
    found = subprocess.run(["pgrep", "-u", CLUSTER, "-f", f"{python} -m blackfish_jobs.agent --serve"],
                           capture_output=True, text=True)
    return found.stdout.split()


def _running_jobs(laptop: Laptop, *tags: str) -> list[str]:
    laptop.write_settings('setup = ["export FAKE_APPTAINER_SLEEP=120"]', session=None)  # the default: held
    entries = laptop.write_list("jobs.txt", [f"docker://alpine:{t}" for t in tags])
    done = laptop.bfjobs("submit", "pull-image", "--from-file", str(entries), "--profile", "cluster", "--to", "home",
                         "--json")
    assert done.returncode == 0, done.stderr
    return [job["id"] for job in as_jobs(done)]


def _jobs(done: subprocess.CompletedProcess[str]) -> dict[str, dict]:
    """Each job's fields as ``status --json`` shows them, but the time of the refresh."""
    assert done.returncode == 0, done.stderr
    return {job["id"]: {k: v for k, v in job.items() if k != "updated_at"} for job in as_jobs(done)}


def _states(done: subprocess.CompletedProcess[str]) -> dict[str, str]:
    assert done.returncode == 0, done.stderr
    return {job["id"]: job["state"] for job in as_jobs(done)}


def test_the_next_status_is_answered_by_the_held_session_as_the_plain_call_would(laptop: Laptop):
    ids = _running_jobs(laptop, "3.12", "3.13")
    before = laptop.ssh_calls()
    first = laptop.bfjobs("status", "--json", BFJOBS_DEBUG="1")
    assert _debug_counts(first.stderr) == (1, 0)  # the plain way: one ssh call...
    wait_for(lambda: _holders(laptop), timeout=60)  # ...after which a holder is started (its own ssh call)
    wait_for(lambda: laptop.ssh_calls() == before + 2, timeout=30)
    assert _serving_agents(laptop)
    held = laptop.bfjobs("status", "--json", BFJOBS_DEBUG="1")
    assert _debug_counts(held.stderr) == (0, 1) and laptop.ssh_calls() == before + 2  # one round trip, no ssh
    assert set(_states(held)) == set(ids)
    plain_settings = laptop.app / "plain.toml"
    plain_settings.write_text((laptop.app / "bfjobs.toml").read_text() + "remote_session = 0\n")
    # the same answer, every field but the refresh time (a job may start between two calls: retried)
    answers = [_jobs(held)]
    for _ in range(3):
        plain = laptop.bfjobs("status", "--json", BFJOBS_DEBUG="1", BFJOBS_CONFIG=str(plain_settings))
        assert _debug_counts(plain.stderr) == (1, 0)
        again = laptop.bfjobs("status", "--json", BFJOBS_DEBUG="1")
        assert _debug_counts(again.stderr) == (0, 1)
        answers += [_jobs(plain), _jobs(again)]
        if answers[-3] == answers[-2] or answers[-2] == answers[-1]:
            break
    else:
        raise AssertionError(f"the held and plain answers differ: {answers}")
    # changes never go through it: cancel is its own ssh call; the held session then sees them
    cancelled = laptop.bfjobs("cancel", *ids, "--json", BFJOBS_DEBUG="1")
    assert cancelled.returncode == 0 and _debug_counts(cancelled.stderr)[0] == 1, cancelled.stderr

    def cancelled_seen() -> bool:
        seen = laptop.bfjobs("status", *ids, "--json", BFJOBS_DEBUG="1")
        assert "ssh call" not in seen.stderr or _debug_counts(seen.stderr)[0] == 0, seen.stderr
        return set(_states(seen).values()) == {"CANCELLED"}

    wait_for(cancelled_seen, timeout=60)
    waited = laptop.bfjobs("wait", ids[0], "--timeout", "60", "--json")
    assert as_job(waited)["state"] == "CANCELLED", waited.stdout


def test_the_held_session_goes_when_idle_and_with_its_master(laptop: Laptop):
    _running_jobs(laptop, "3.14")
    laptop.write_settings('setup = ["export FAKE_APPTAINER_SLEEP=120"]', session=3)
    assert laptop.bfjobs("status").returncode == 0
    wait_for(lambda: _holders(laptop) and _serving_agents(laptop), timeout=60)
    wait_for(lambda: not _holders(laptop) and not _serving_agents(laptop), timeout=30)  # 3 s idle: gone, both ends
    laptop.write_settings('setup = ["export FAKE_APPTAINER_SLEEP=120"]', session=None)
    assert laptop.bfjobs("status").returncode == 0
    wait_for(lambda: _holders(laptop) and _serving_agents(laptop), timeout=60)
    masters = [p for p in laptop.control.iterdir() if not p.name.startswith("held-")]
    for master in masters:  # the user ends the master (ssh -O exit): the held session ends with it
        subprocess.run(["runuser", "-u", "bflaptop", "--", "/usr/bin/ssh", "-o", f"ControlPath={master}", "-O",
                        "exit", "bfcluster"], capture_output=True, timeout=30)
    wait_for(lambda: not _holders(laptop) and not _serving_agents(laptop), timeout=30)
    again = laptop.bfjobs("status", "--json", BFJOBS_DEBUG="1")
    assert _debug_counts(again.stderr) == (1, 0) and len(as_jobs(again)) == 1  # the plain way, as before


def test_a_changed_profile_is_never_answered_by_the_old_session(laptop: Laptop):
    _running_jobs(laptop, "3.15")
    assert laptop.bfjobs("status").returncode == 0
    wait_for(lambda: _holders(laptop) and _serving_agents(laptop), timeout=60)
    old = _serving_agents(laptop)
    # another remote_python (a wrapper of the same interpreter): the holder's command line is not this one
    wrapper = laptop.cluster_root / "python-wrapper"
    wrapper.write_text(f'#!/bin/sh\nexec {laptop.cluster_install.prefix / "bin" / "python"} "$@"\n')
    wrapper.chmod(0o755)
    subprocess.run(["chown", f"{CLUSTER}:{CLUSTER}", str(wrapper)], check=True)
    laptop.write_settings('setup = ["export FAKE_APPTAINER_SLEEP=120"]', remote_python=str(wrapper), session=None)
    changed = laptop.bfjobs("status", "--json", BFJOBS_DEBUG="1")
    assert _debug_counts(changed.stderr) == (1, 0) and len(as_jobs(changed)) == 1  # asked the plain way
    wait_for(lambda: not set(old) & set(_serving_agents(laptop)), timeout=30)  # the stale one went
    wait_for(lambda: _holders(laptop) and _serving_agents(laptop), timeout=60)  # and a new one holds the new line
    new = subprocess.run(["pgrep", "-a", "-u", "bflaptop", "-f", "agent --serve"], capture_output=True, text=True)
    assert str(wrapper) in new.stdout, new.stdout
    held = laptop.bfjobs("status", "--json", BFJOBS_DEBUG="1")
    assert _debug_counts(held.stderr) == (0, 1)


def test_a_dropped_session_falls_back_to_the_plain_call(laptop: Laptop):
    _running_jobs(laptop, "3.16")
    assert laptop.bfjobs("status").returncode == 0
    wait_for(lambda: _holders(laptop) and _serving_agents(laptop), timeout=60)
    # the link drops: every ssh session of the cluster user dies (not the listening sshd)
    subprocess.run(["pkill", "-KILL", "-u", CLUSTER, "-f", f"sshd: {CLUSTER}"], check=False)
    time.sleep(1)
    after = laptop.bfjobs("status", "--json", BFJOBS_DEBUG="1")
    assert after.returncode == 0 and _debug_counts(after.stderr) == (1, 0), after.stderr
    assert len(as_jobs(after)) == 1
    assert "Traceback" not in after.stderr


def test_remote_session_zero_holds_nothing(laptop: Laptop):
    _running_jobs(laptop, "3.17")
    laptop.write_settings('setup = ["export FAKE_APPTAINER_SLEEP=120"]', session=0)
    for _ in range(2):
        done = laptop.bfjobs("status", BFJOBS_DEBUG="1")
        assert _debug_counts(done.stderr) == (1, 0)
    time.sleep(2)
    assert _holders(laptop) == []
    laptop.write_settings('setup = ["export FAKE_APPTAINER_SLEEP=120"]', "remote_session = -1", session=None)
    refused = laptop.bfjobs("status")  # status says it could not ask, and shows what it knows (exit 1)
    [line] = [x for x in refused.stderr.splitlines() if "remote_session" in x]
    assert refused.returncode == 1 and "expected an integer from 0 to 86400, got '-1'" in line, refused.stderr
    assert "Traceback" not in refused.stderr
