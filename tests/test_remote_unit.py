"""The remote backend's parts that need no cluster: quoting, which host is this one, the control
folder, and the time limits of a call (an ``ssh`` stand-in plays a login that hangs and an agent
that never answers: failure modes a real sshd does not produce on demand; the real path is
tests/test_remote.py)."""

from __future__ import annotations

import os
import shlex
import socket
import stat

import pytest

from blackfish_jobs import config
from blackfish_jobs.backends import remote, ssh
from blackfish_jobs.errors import ConfigError, ConnectionLost, RemoteUnreachable


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "::1", "LOCALHOST", socket.gethostname()])
def test_these_hosts_are_this_machine(host):
    assert config.is_this_host(host)


@pytest.mark.parametrize("host", ["della.princeton.edu", "bfcluster", "10.0.0.1", "localhost.example.org"])
def test_other_hosts_are_remote(host):
    assert not config.is_this_host(host)


@pytest.mark.parametrize("word", ["a b", "$(touch /tmp/x)", "`id`", "x;y", "'", '"', "a\nb", "--", "~", "*"])
def test_every_remote_word_reaches_the_remote_shell_as_one_word(word):
    line = ssh.remote_line(["python3", word, "-m", "x"])
    assert shlex.split(line) == ["python3", word, "-m", "x"]


def test_the_control_folder_must_be_private_and_ours(tmp_path, monkeypatch):
    folder = tmp_path / "cm"
    monkeypatch.setenv("BFJOBS_SSH_CONTROL_DIR", str(folder))
    assert ssh.control_dir() == folder and stat.S_IMODE(folder.stat().st_mode) == 0o700
    folder.chmod(0o777)
    with pytest.raises(ConfigError, match="not a private folder of yours"):
        ssh.control_dir()
    folder.rmdir()
    folder.symlink_to(tmp_path)  # planted by someone else in /tmp
    with pytest.raises(ConfigError, match="not a private folder of yours"):
        ssh.control_dir()


def _agent(tmp_path, monkeypatch, script: str) -> remote.Agent:
    fake = tmp_path / "ssh"
    fake.write_text(f"#!/bin/sh\n{script}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("BFJOBS_SSH", str(fake))
    monkeypatch.setenv("BFJOBS_SSH_CONTROL_DIR", str(tmp_path / "cm"))
    profile = config.Profile("della", "slurm", tmp_path, tmp_path, host="della.example.org", user="alice")
    return remote.Agent(profile, "python3")


def test_a_login_that_hangs_is_one_line_within_the_time_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(remote, "READY_TIMEOUT_S", 1.0)
    agent = _agent(tmp_path, monkeypatch, "exec sleep 600")
    with pytest.raises(RemoteUnreachable, match="did not start bfjobs within 1 s"):
        agent.call("survey", {})


def test_an_agent_that_never_answers_is_a_lost_connection(tmp_path, monkeypatch):
    agent = _agent(tmp_path, monkeypatch, 'echo "BFJOBS-AGENT 1 0.1.0"; exec sleep 600')
    with pytest.raises(ConnectionLost, match="broke before it answered"):
        agent.call("survey", {}, timeout=1.0)


def test_an_agent_that_stops_reading_cannot_block_the_request(tmp_path, monkeypatch):
    agent = _agent(tmp_path, monkeypatch, 'echo "BFJOBS-AGENT 1 0.1.0"; exec sleep 600')  # never reads stdin
    with pytest.raises(ConnectionLost, match="stopped reading"):
        agent.call("survey", {"rows": "x" * 4_000_000}, timeout=1.0)  # far more than a pipe holds


def test_the_ssh_command_line_never_lets_a_word_become_an_option(tmp_path, monkeypatch):
    log = tmp_path / "argv"
    agent = _agent(tmp_path, monkeypatch, f'printf "%s\\n" "$@" > {log}; exit 255')
    with pytest.raises(RemoteUnreachable):
        agent.call("survey", {})
    argv = log.read_text().splitlines()
    assert argv[argv.index("--") + 1] == "della.example.org"  # the host after "--"
    for option in ("StrictHostKeyChecking=yes", "ControlMaster=auto", "ConnectTimeout=15", "RequestTTY=no"):
        assert option in argv
    assert "BatchMode=yes" not in argv  # it breaks keyboard-interactive and Kerberos logins
    assert f"ControlPath={tmp_path / 'cm'}/%C" in argv


def test_the_default_control_path_fits_macos_socket_limit(monkeypatch):
    from blackfish_jobs import constants

    monkeypatch.delenv("BFJOBS_SSH_CONTROL_DIR", raising=False)
    socket_path = f"{constants.ssh_control_dir()}/{'x' * 40}"  # %C: a 40-digit hash
    assert len(socket_path) < 104


# ---------------------------------------------------------------------------- the cluster's side


def _row(tmp_path, job_id: str, **columns):
    from support.rows import job_row

    values = {"backend": "remote", "native_id": None, "folder": str(tmp_path / job_id), **columns}
    return job_row(0, id=job_id, **values)


def test_rows_cross_the_wire_unchanged(tmp_path):
    from blackfish_jobs.api.cluster import decode_rows

    row = _row(tmp_path, "a" * 12, native_id="77_3", result={"sha256": "x"}, request={"uri": "docker://a:1"})
    [back] = decode_rows(remote.encode_rows([row]))
    assert back == row


@pytest.mark.parametrize(
    "raw",
    [
        {"state": "NOPE"},
        {"state": "RUNNING", "native_id": "77; rm -rf /"},
        {"state": "RUNNING", "result": "not a dict"},
        {"state": "RUNNING", "reason": ["not", "text"]},
    ],
)
def test_an_observation_from_the_cluster_is_checked(raw):
    with pytest.raises((TypeError, ValueError)):
        remote.decode_observation(raw)


def test_a_reason_from_the_cluster_becomes_one_printable_line():
    obs = remote.decode_observation({"state": "PENDING", "reason": "a\nb\x1b[2Jc\x07"})
    assert obs.reason is not None and "\x1b" not in obs.reason and "\n" not in obs.reason
    assert obs.reason is not None and all(ch.isprintable() for ch in obs.reason)


def test_a_lost_submission_is_found_in_its_folders(tmp_path):
    import json
    import socket
    from datetime import timedelta

    from blackfish_jobs.api import cluster
    from blackfish_jobs.backends.base import Observation
    from blackfish_jobs.states import FAILED
    from blackfish_jobs.store import utcnow

    first, second, never = "1" * 12, "2" * 12, "3" * 12
    array = tmp_path / first  # an array's folder is named after its first job
    array.mkdir()
    (array / "bfjobs-ids.json").write_text(json.dumps({first: 0, second: 1}))
    (array / "4242_1_submitted.pkl").write_bytes(b"")
    (array / "4242_0_submitted.pkl").write_bytes(b"")
    note = tmp_path / ".bfjobs-submissions" / f"{first}.json"
    note.parent.mkdir()

    def noted(done: bool, pid: int) -> None:
        note.write_text(json.dumps({"ids": [first, second, never], "host": socket.gethostname(), "pid": pid,
                                    "done": done}))

    rows = [_row(tmp_path, i, request={"submission": first}) for i in (first, second, never)]
    noted(done=False, pid=os.getpid())  # the agent is still at work
    found = cluster._recover(rows)
    assert found[first] == ("4242_0", str(array)) and found[second] == ("4242_1", str(array))
    assert isinstance(found[never], Observation) and found[never].known is False
    noted(done=True, pid=os.getpid())  # done: what it did not submit, it will not
    settled = cluster._recover(rows)[never]
    assert isinstance(settled, Observation) and settled.state == FAILED and "did not submit it" in str(settled.reason)
    noted(done=False, pid=2**22 + 7)  # not done, but its agent is gone (killed mid-way)
    assert cluster._recover(rows)[never].state == FAILED  # type: ignore[union-attr]
    old = utcnow() - cluster.SUBMITTING_GRACE - timedelta(seconds=1)
    lost = _row(tmp_path, "4" * 12, submitted_at=old, request={"submission": "5" * 12})  # no note: never got it
    young = _row(tmp_path, "6" * 12, request={"submission": "7" * 12})  # no note yet: maybe on its way
    found = cluster._recover([lost, young])
    assert found[lost.id].state == FAILED and "never got the request" in str(found[lost.id].reason)  # type: ignore[union-attr]
    assert found[young.id].known is False  # type: ignore[union-attr]


def test_a_progress_record_from_the_cluster_is_checked():
    good = {"bytes_done": 5, "bytes_total": 10, "files_done": 1, "files_total": None, "rate": 2.5,
            "eta_seconds": 2, "started_at": "2026-12-06T10:00:00Z", "updated_at": "x\x1b[2J", "final": False}
    record = remote._progress(good)
    assert record["bytes_done"] == 5 and record["rate"] == 2.5 and "\x1b" not in record["updated_at"]
    for bad in ({**good, "bytes_done": "5; rm"}, {**good, "rate": -1}, {**good, "files_done": True}, "x"):
        with pytest.raises(TypeError):
            remote._progress(bad)
