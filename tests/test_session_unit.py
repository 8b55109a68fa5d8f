"""Held sessions (backends/session.py) and the agent's ``--serve`` mode, on this machine: the holder
runs the agent locally instead of over ssh (its command line is all it is given), so these tests
need neither sshd nor Slurm; tests/test_remote_session.py holds a real session over the test sshd."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from blackfish_jobs import __version__
from blackfish_jobs.backends import session
from blackfish_jobs.backends.protocol import ANSWER, MARK, PROTOCOL, SERVES

AGENT = [sys.executable, "-m", "blackfish_jobs.agent", "--serve"]
EMPTY_SURVEY = {"protocol": PROTOCOL, "version": "0.1.0", "op": "survey", "args": {"rows": [], "verify": False}}


def _serve(data: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(AGENT, input=data, capture_output=True, timeout=60)


def _message(word: str, body: object) -> bytes:
    text = body if isinstance(body, bytes) else json.dumps(body).encode()
    return f"{word} {len(text)}\n".encode() + text


def _answers(out: bytes) -> list[dict]:
    return [json.loads(line[len(ANSWER) + 1 :]) for line in out.decode().splitlines() if line.startswith(ANSWER)]


def test_the_serving_agent_answers_surveys_one_after_another_and_nothing_else():
    cancel = {**EMPTY_SURVEY, "op": "cancel"}
    done = _serve(_message("REQUEST", EMPTY_SURVEY) + _message("REQUEST", cancel) + _message("REQUEST", EMPTY_SURVEY))
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines()[0] == f"{MARK} {PROTOCOL} {__version__} {SERVES}"
    first, refused, third = _answers(done.stdout)
    assert first == third and first["ok"]["observed"] == {}
    assert refused["type"] == "ClusterError" and "surveys" in refused["error"]


@pytest.mark.parametrize(
    "data",
    [b"DELETE 3\nabc", b"REQUEST x\n", b"REQUEST 10\nshort", b"REQUEST 0\n", b"\x00\x01binary\n" * 3,
     b"REQUEST 99999999999999\n"],
    ids=["unknown-word", "no-size", "truncated", "empty", "binary", "huge"],
)
def test_the_serving_agent_stops_at_anything_out_of_step(data):
    """Out of step, it answers nothing more (the holder then goes; the laptop asks the plain way)."""
    done = _serve(data + _message("REQUEST", EMPTY_SURVEY))
    assert done.returncode == 2 and not any("ok" in answer for answer in _answers(done.stdout))


def test_a_hint_with_hostile_ids_starts_nothing(tmp_path):
    from blackfish_jobs import agent

    canary = tmp_path / "canary"
    hostile = {"ids": [f"1;touch {canary}"], "since": "2026-12-07T00:00:00"}
    assert agent._hinted_sacct(json.dumps(hostile).encode()) is None
    assert agent._hinted_sacct(b'{"ids": ["1"], "since": "not a time"}') is None
    assert agent._hinted_sacct(b'{"ids": "1", "since": "2026-12-07T00:00:00"}') is None
    assert agent._hinted_sacct(b"[]") is None and agent._hinted_sacct(b"\xff") is None
    hint = _message("HINT", {"ids": [f"$(touch {canary})"], "since": "2026-12-07"})
    done = _serve(hint + _message("REQUEST", EMPTY_SURVEY))  # refused quietly: the survey is answered
    assert done.returncode == 0 and _answers(done.stdout)[0]["ok"]["observed"] == {}


@pytest.fixture
def control(tmp_path: Path) -> Path:
    folder = Path(f"/tmp/bfjs-{os.getpid()}-{tmp_path.name[-6:]}")  # short: a socket's path is limited
    folder.mkdir(mode=0o700)
    yield folder
    for path in folder.iterdir():
        path.unlink(missing_ok=True)  # a holder may be removing its own socket at this moment
    folder.rmdir()


def _wait(condition, timeout: float = 30.0) -> None:
    ends = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < ends, "timed out"
        time.sleep(0.05)


def _listening(control: Path, name: str) -> bool:
    held = session.connect(control, name)
    if held is not None:
        held.close()
    return held is not None


def _holder_pids(marker: str) -> list[str]:
    """Holders started with ``marker`` in their environment (this test's own)."""
    found = []
    for pid in subprocess.run(["pgrep", "-f", "blackfish_jobs.backends.session"], capture_output=True,
                              text=True).stdout.split():
        try:
            if marker.encode() in Path(f"/proc/{pid}/environ").read_bytes():
                found.append(pid)
        except OSError:  # gone, or not ours
            continue
    return found


def test_a_holder_serves_requests_until_idle_then_goes(control: Path, monkeypatch):
    marker = f"BFJOBS_TEST_HOLDER={os.getpid()}-{time.monotonic_ns()}"
    monkeypatch.setenv("BFJOBS_TEST_HOLDER", marker.split("=", 1)[1])
    monkeypatch.setenv("HF_TOKEN", "hf_secret_never_passed_on")
    session.spawn(control, "cluster", AGENT, idle_s=3)
    session.spawn(control, "cluster", AGENT, idle_s=3)  # at once: the first one's lock keeps this one out
    _wait(lambda: _listening(control, "cluster"))
    path = session.socket_path(control, "cluster")
    assert path.parent == control and path.name.startswith("held-") and (path.stat().st_mode & 0o777) == 0o600
    for _ in range(2):
        held = session.connect(control, "cluster")
        assert held is not None
        line = held.ask(session.key(AGENT, 3), json.dumps(EMPTY_SURVEY).encode(), timeout=30)
        assert line is not None and json.loads(line[len(ANSWER) + 1 :])["ok"]["observed"] == {}
    _wait(lambda: len(_holder_pids(marker)) == 1)  # one holder (the second lost the lock and left)...
    pids = _holder_pids(marker)
    assert len(pids) == 1, pids  # ...nobody's child (no zombie in a long command)
    assert Path(f"/proc/{pids[0]}/status").read_text().split("PPid:")[1].split()[0] != str(os.getpid())
    assert b"hf_secret_never_passed_on" not in Path(f"/proc/{pids[0]}/environ").read_bytes()
    _wait(lambda: not path.exists(), timeout=15)  # idle for 3 s: gone, its socket with it
    assert session.connect(control, "cluster") is None
    _wait(lambda: not _holder_pids(marker), timeout=15)


def test_a_stale_client_is_refused_and_the_holder_goes(control: Path):
    session.spawn(control, "cluster", AGENT, idle_s=60)
    _wait(lambda: _listening(control, "cluster"))
    held = session.connect(control, "cluster")
    assert held is not None
    other = session.key(AGENT, 61)  # a changed profile (host, user, remote_python, remote_session): another key
    assert held.ask(other, json.dumps(EMPTY_SURVEY).encode(), timeout=30) is None
    _wait(lambda: not session.socket_path(control, "cluster").exists())


def test_junk_on_the_holders_socket_is_dropped_and_it_goes_on(control: Path):
    import socket

    session.spawn(control, "cluster", AGENT, idle_s=60)
    _wait(lambda: _listening(control, "cluster"))
    for junk in (b"\x00\x00\x00\x05binary mux hello", b'{"ids": ["1"]}\n', b"{}\n" + b"x" * 200 + b"\n"):
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(str(session.socket_path(control, "cluster")))
        sock.sendall(junk)
        sock.close()
    held = session.connect(control, "cluster")
    assert held is not None
    line = held.ask(session.key(AGENT, 60), json.dumps(EMPTY_SURVEY).encode(), timeout=30)
    assert line is not None and line.startswith(ANSWER)
    stale = session.connect(control, "cluster")  # and it still goes when told it is stale
    assert stale is not None and stale.ask("0" * 32, b"{}", timeout=30) is None


def test_no_holder_for_an_agent_that_cannot_be_held(control: Path, tmp_path: Path):
    old = tmp_path / "old-agent"
    old.write_text(f'#!/bin/sh\necho "{MARK} {PROTOCOL} 0.0.9"\ncat >/dev/null\n')  # an older bfjobs: no --serve
    old.chmod(0o755)
    session.spawn(control, "c", [str(old)], idle_s=60)
    path = session.socket_path(control, "c")
    time.sleep(0.5)
    _wait(lambda: not session._locked(path))  # it gave up at the ready line
    assert not path.exists()


FAKE_AGENT = r"""
import sys
log = open(sys.argv[1], "ab")
print("BFJOBS-AGENT 1 0.1.0 serves", flush=True)
while True:
    head = sys.stdin.buffer.readline()
    if not head:
        break
    body = sys.stdin.buffer.read(int(head.split()[1]))
    log.write(head + body + b"\n")
    log.flush()
    if head.startswith(b"REQUEST"):
        print('BFJOBS-AGENT-ANSWER {"ok": "answered"}', flush=True)
"""


def test_a_hint_without_its_request_is_dropped_before_the_next_client(control: Path, tmp_path: Path):
    """Whatever way a client leaves after its hint, the agent is told to drop that call: the next
    client's request never collects another command's ``sacct``."""
    import socket

    script, log = tmp_path / "agent.py", tmp_path / "agent.log"
    script.write_text(FAKE_AGENT)
    argv = [sys.executable, str(script), str(log)]
    session.spawn(control, "c", argv, idle_s=60)
    _wait(lambda: _listening(control, "c"))
    hint = b'{"ids": ["123"], "since": "2026-12-07T00:00:00"}\n'
    for after_hint in (b"", b"junk key\n", b"%s\n" % session.key(argv, 60).encode()):  # no request, junk, empty
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(str(session.socket_path(control, "c")))
        sock.sendall(hint + after_hint)
        sock.shutdown(socket.SHUT_WR)
        sock.recv(100)
        sock.close()
    held = session.connect(control, "c")
    assert held is not None
    assert held.ask(session.key(argv, 60), b'{"op": "survey"}', timeout=30) == 'BFJOBS-AGENT-ANSWER {"ok": "answered"}'
    seen = log.read_bytes().split(b"\n")
    messages = [line for line in seen if line.startswith((b"HINT", b"REQUEST"))]
    assert messages == [b"HINT 48", b"HINT 2", b"HINT 48", b"HINT 2", b"HINT 48", b"HINT 2", b"REQUEST 16"], seen


def _answering(sent: bytes) -> session.Held:
    """A client whose holder reads the whole request, then sends ``sent`` and goes."""
    import socket
    import threading

    ours, theirs = socket.socketpair()

    def holder() -> None:
        while theirs.recv(65536):
            pass
        theirs.sendall(sent)
        theirs.close()

    threading.Thread(target=holder, daemon=True).start()
    return session.Held(ours)


def test_an_answer_cut_short_is_no_answer():
    assert _answering(b'BFJOBS-AGENT-ANSWER {"ok": {"obs').ask("0" * 32, b"{}", timeout=5) is None  # went mid-line
    assert _answering(b"STALE\n").ask("0" * 32, b"{}", timeout=5) is None
    whole = _answering(b'BFJOBS-AGENT-ANSWER {"ok": 1}\n').ask("0" * 32, b"{}", timeout=5)
    assert whole == 'BFJOBS-AGENT-ANSWER {"ok": 1}'


def test_status_tells_no_holder_in_a_control_folder_that_is_not_private(tmp_path: Path, monkeypatch):
    """Another user's /tmp/bfjobs-ssh-<uid> (made first, open to all) never hears the job ids."""
    import socket
    from datetime import datetime

    from blackfish_jobs import entry

    shared = Path(f"/tmp/bfjs-open-{os.getpid()}")
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("BFJOBS_SSH_CONTROL_DIR", str(shared))
    listener = socket.socket(socket.AF_UNIX)
    try:
        listener.bind(str(session.socket_path(shared, "cluster")))
        listener.listen(1)
        listener.settimeout(0.5)
        live = entry._Live([], None, ["cluster"], ["123"], datetime(2026, 12, 7))
        assert entry._hint_held("cluster", live) is None
        with pytest.raises(TimeoutError):
            listener.accept()  # nobody connected
        shared.chmod(0o700)  # private: then it is used
        held = entry._hint_held("cluster", live)
        assert held is not None
        conn, _ = listener.accept()
        assert json.loads(conn.makefile("rb").readline()) == {"ids": ["123"], "since": "2026-12-07T00:00:00"}
        conn.close()
        held.close()
    finally:
        listener.close()
        for path in shared.iterdir():
            path.unlink()
        shared.rmdir()
