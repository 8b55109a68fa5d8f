"""The remote backend: a ``slurm`` profile whose ``host`` is another machine, reached over ssh.

Blackfish on a laptop names its cluster in a profile (``host``, ``user``); bfjobs there keeps the
job history and Blackfish's ``model`` table, and everything that must happen on the cluster (its
caches, its Slurm, its site file and templates) is done by bfjobs installed there: ``python -m
blackfish_jobs.agent`` (``remote_python`` in bfjobs.toml), one ssh call per request, whatever
the number of jobs. The cluster keeps nothing: each request carries what it needs.

The protocol is versioned (:data:`PROTOCOL`). The agent first prints a line
``BFJOBS-AGENT <protocol> <version>``; only then is the request (JSON) sent on its stdin, so a
failure to connect, to log in or to start bfjobs there is known to have sent nothing. The answer
is one line ``BFJOBS-AGENT-ANSWER <json>``; whatever a login shell prints before is ignored.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from .. import errors
from ..errors import ClusterError, ConnectionLost, MalformedAnswer, RemoteUnreachable
from ..states import State
from . import ssh
from .base import Backend, CancelRequest, Observation, Submitted, Survey, Task
from .protocol import AGENT_MODULE, ANSWER, MARK, PROGRESS, PROTOCOL, SERVES, SLURM_ID, one_line

if TYPE_CHECKING:
    from pathlib import Path

    from ..config import Profile
    from ..specs import JobSpec
    from ..store import JobRow
    from .session import Held

#: How long the cluster may take to start bfjobs and say it is ready (a login, a slow filesystem).
READY_TIMEOUT_S = 60.0
#: How long one request may take there (a submission asks the hub, renders and runs sbatch).
CALL_TIMEOUT_S = 300.0
#: How long a survey may take over a held session before it is asked the plain way instead.
HELD_TIMEOUT_S = 60.0
MAX_ANSWER = 64 * 1024 * 1024
#: The errors an answer may name: the same type is raised here.
ERROR_TYPES = {
    name: getattr(errors, name)
    for name in (
        "BadInput",
        "ConfigError",
        "NotWritable",
        "JobNotFound",
        "TemplateError",
        "NameCollision",
        "TagMoved",
        "RegistryRefused",
        "ClusterError",
        "HubRefused",
        "BfjobsError",
    )
}


class Agent:
    """bfjobs on one cluster, as a remote profile reaches it."""

    def __init__(self, profile: Profile, python: str, session_s: int = 0) -> None:
        assert profile.host is not None
        self.profile = profile
        self.target = ssh.Target(profile.name, profile.host, profile.user)
        self.python = python
        self.session_s = session_s  # remote_session: how long a held session waits (0: never hold one)
        self.calls = 0  # ssh invocations made (the benchmark and tests count round trips)
        self.held_calls = 0  # requests answered over a held session (a round trip, no ssh invocation)
        self._early: list[tuple[subprocess.Popen[bytes], _Lines]] = []  # started by prestart(), not asked yet
        self._held: Held | None = None  # a held session the entry point connected to (and hinted)
        self._serves = False  # the cluster's bfjobs said it can be held (its ready line)

    def start(self) -> tuple[subprocess.Popen[bytes], _Lines]:
        """ssh to the cluster's bfjobs, which says it is ready and then waits for one request."""
        argv = self.target.argv(self._agent_line())
        self.calls += 1
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except FileNotFoundError:
            raise RemoteUnreachable(
                f"profile {self.profile.name!r}: the ssh client ({argv[0]}) is not installed"
            ) from None
        return proc, _Lines(proc)

    def prestart(self) -> None:
        """Start the next call's connection now: the login, the interpreter and bfjobs' imports on
        the cluster overlap this command's own start-up (``status``: see :mod:`blackfish_jobs.entry`)."""
        self._early.append(self.start())

    def adopt(self, held: Held) -> None:
        """Use ``held`` (connected, and hinted, by the entry point) for the next survey, if this
        profile holds sessions at all."""
        if self.session_s:
            self._held = held
        else:
            held.close()

    def session_argv(self) -> list[str]:
        """The ssh command a session holder runs: ``bfjobs --serve`` there, never prompting."""
        return self.target.argv(self._agent_line("--serve"), batch=True)

    def _agent_line(self, *options: str) -> list[str]:
        """bfjobs' agent run by the cluster's login shell (modules, Slurm's PATH and configuration)."""
        return ["bash", "-lc", ssh.remote_line([self.python, "-m", AGENT_MODULE, *options])]

    def close(self) -> None:
        """End a started connection nobody asked anything (it has been sent nothing)."""
        if self._held is not None:
            self._held.close()
            self._held = None
        while self._early:
            proc, _reader = self._early.pop()
            if proc.poll() is None:
                proc.kill()
            proc.wait()

    def call(
        self,
        op: str,
        args: dict[str, Any],
        timeout: float = CALL_TIMEOUT_S,
        progress: Callable[[int, int], None] | None = None,
    ) -> Any:
        """One request: its answer, or the error the cluster raised (same type, one line);
        ``progress`` hears the cluster's progress lines before the answer."""
        from .. import __version__

        held = op == "survey" and self.session_s > 0  # read-only: safe to ask again the plain way
        if held:
            request = json.dumps({"protocol": PROTOCOL, "version": __version__, "op": op, "args": args}).encode()
            line = self._ask_held(request, timeout)
            if line is not None:
                self.held_calls += 1
                return self._answer(line)
        proc, reader = self._early.pop() if self._early else self.start()
        try:
            if not held:  # encoded while the cluster gets ready, not after: 10,000 rows are several MB
                request = json.dumps({"protocol": PROTOCOL, "version": __version__, "op": op, "args": args}).encode()
            ready = reader.until(MARK + " ", time.monotonic() + READY_TIMEOUT_S)
            if ready is None:
                raise self._not_started(proc, reader)
            words = ready.split()
            if len(words) < 3 or words[1] != str(PROTOCOL):
                raise RemoteUnreachable(
                    f"profile {self.profile.name!r}: bfjobs on {self.target.host} speaks protocol "
                    f"{words[1] if len(words) > 1 else '?'} (version {words[2] if len(words) > 2 else '?'}), "
                    f"this bfjobs {PROTOCOL} (version {__version__}): install the same bfjobs on both sides"
                )
            self._serves = words[-1] == SERVES
            deadline = time.monotonic() + timeout
            try:
                if not _send(proc, request, deadline):
                    raise self._lost(proc, reader, "while sending the request (it stopped reading)")
            except BrokenPipeError:
                raise self._lost(proc, reader, "while sending the request") from None
            line = reader.until(ANSWER + " ", deadline, _progress_reader(progress))
            if line is None:
                raise self._lost(proc, reader, "before it answered")
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        answer = self._answer(line)
        if held and self._serves:  # the next survey (a wait's refresh, the next status) is held
            from . import session

            session.spawn(ssh.control_dir(), self.profile.name, self.session_argv(), self.session_s)
        return answer

    def _ask_held(self, request: bytes, timeout: float) -> str | None:
        """The answer line of this profile's session holder, or None (none, stale, gone)."""
        from . import session

        held, self._held = self._held, None
        if held is None:
            held = session.connect(ssh.control_dir(), self.profile.name)
        if held is None:
            return None
        # bounded: a holder busy with another command's survey, or stuck, costs a minute at most
        return held.ask(session.key(self.session_argv(), self.session_s), request, min(timeout, HELD_TIMEOUT_S))

    def _answer(self, line: str) -> Any:
        """The ``ok`` of an answer line, or the error it names raised (same type, one line)."""
        try:
            answer = json.loads(line[len(ANSWER) + 1 :])
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or not ("ok" in answer or isinstance(answer.get("error"), str)):
            raise MalformedAnswer(f"profile {self.profile.name!r}: {self.target.host} answered with no bfjobs answer")
        if "error" in answer:
            kind = ERROR_TYPES.get(str(answer.get("type")), ClusterError)
            raise kind(f"on {self.target.host}: {one_line(answer['error'])}")
        return answer["ok"]

    @contextlib.contextmanager
    def reading(self, op: str) -> Iterator[None]:
        """Around the reading of an answer: a malformed one (a cluster's answer is input too) is one
        line, not a traceback."""
        try:
            yield
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, errors.BadInput):
            raise MalformedAnswer(
                f"profile {self.profile.name!r}: {self.target.host} answered {op!r} with something malformed"
            ) from None

    def _not_started(self, proc: subprocess.Popen[bytes], reader: _Lines) -> Exception:
        status = _finish(proc)
        text = reader.stderr_text()
        name = self.profile.name
        if status == 255:
            return RemoteUnreachable(ssh.describe_failure(self.target, text))
        if status is None:
            return RemoteUnreachable(
                f"profile {name!r}: {self.target.where()} did not start bfjobs within "
                f"{READY_TIMEOUT_S:.0f} s (a login prompt nobody can answer?)"
            )
        if status == 127 or "command not found" in text or "No such file" in text:
            return RemoteUnreachable(
                f"profile {name!r}: {self.python} not found on {self.target.host} (exit {status}): set "
                f"remote_python in bfjobs.toml [profiles.{name}] to the cluster's Python that has bfjobs"
            )
        if "No module named" in text:
            return RemoteUnreachable(
                f"profile {name!r}: bfjobs is not installed for {self.python} on {self.target.host}: install it "
                f"there (docs/remote.md), or set remote_python in bfjobs.toml [profiles.{name}]"
            )
        last = one_line(text.strip().splitlines()[-1][-300:]) if text.strip() else "no message"
        return RemoteUnreachable(
            f"profile {name!r}: bfjobs did not start on {self.target.host} (exit {status}): {last}"
        )

    def _lost(self, proc: subprocess.Popen[bytes], reader: _Lines, when: str) -> Exception:
        status = _finish(proc)
        text = reader.stderr_text().strip()
        last = one_line(text.splitlines()[-1][-300:]) if text else f"exit {status}"
        return ConnectionLost(
            f"profile {self.profile.name!r}: the connection to {self.target.host} broke {when}: {last}"
        )


def _send(proc: subprocess.Popen[bytes], data: bytes, deadline: float) -> bool:
    """Write ``data`` to the process's stdin and close it, by the deadline (False if not: the far
    side stopped reading, and a plain write would block for ever)."""
    if not write_by(proc, data, deadline):
        return False
    assert proc.stdin is not None
    proc.stdin.close()
    return True


def write_by(proc: subprocess.Popen[bytes], data: bytes, deadline: float) -> bool:
    """Write ``data`` to the process's stdin by the deadline, leaving it open (False if not: it
    stopped reading); OSError if it went away (BrokenPipeError)."""
    assert proc.stdin is not None
    fd = proc.stdin.fileno()
    view = memoryview(data)
    os.set_blocking(fd, False)
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_WRITE)
            while view:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                if selector.select(min(left, 1.0)):
                    try:
                        view = view[os.write(fd, view[:65536]) :]
                    except BlockingIOError:
                        continue
    finally:
        os.set_blocking(fd, True)
    return True


def _finish(proc: subprocess.Popen[bytes]) -> int | None:
    """The process's exit status once it ended (a few seconds), else None (it is killed)."""
    try:
        return proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


def _progress_reader(progress: Callable[[int, int], None] | None) -> Callable[[bytes], None] | None:
    """What hears the lines before an answer: progress lines, parsed, go to ``progress``."""
    if progress is None:
        return None
    want = PROGRESS.encode() + b" "

    def hear(line: bytes) -> None:
        words = line[len(want) :].split() if line.startswith(want) else []
        if len(words) == 2 and all(w.isdigit() and len(w) < 20 for w in words):
            progress(int(words[0]), int(words[1]))

    return hear


class _Lines:
    """ssh's stdout read line by line under a deadline (stderr kept for messages)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.selector = selectors.DefaultSelector()
        assert proc.stdout is not None and proc.stderr is not None
        self.selector.register(proc.stdout, selectors.EVENT_READ, "out")
        self.selector.register(proc.stderr, selectors.EVENT_READ, "err")
        self.out = b""
        self.err = b""
        self.open = 2

    def until(
        self, prefix: str, deadline: float, other: Callable[[bytes], None] | None = None
    ) -> str | None:
        """The first line starting with ``prefix`` (earlier lines dropped, or given to ``other``),
        or None if the process ended or the deadline passed without one."""
        want = prefix.encode()
        while True:
            while b"\n" in self.out:
                line, self.out = self.out.split(b"\n", 1)
                if line.startswith(want):
                    return line.decode("utf-8", "replace")
                if other is not None:
                    other(line)
            left = deadline - time.monotonic()
            if left <= 0 or not self.open:
                return None
            for key, _ in self.selector.select(min(left, 1.0)):
                chunk = os.read(key.fileobj.fileno(), 65536)  # type: ignore[union-attr]
                if not chunk:
                    self.selector.unregister(key.fileobj)
                    self.open -= 1
                elif key.data == "out":
                    self.out += chunk
                    if len(self.out) > MAX_ANSWER:
                        raise ClusterError("the cluster's answer is larger than 64 MiB")
                else:
                    self.err = (self.err + chunk)[-65536:]

    def stderr_text(self) -> str:
        deadline = time.monotonic() + 2
        while self.open and time.monotonic() < deadline:  # the rest of stderr, once ssh ended
            if self.until("\0never", deadline) is None:
                break
        return self.err.decode("utf-8", "replace")


# ---------------------------------------------------------------------------------------- rows


def encode_rows(rows: Sequence[JobRow]) -> list[dict[str, Any]]:
    """Rows as JSON objects (datetimes as ISO text); :func:`blackfish_jobs.api.cluster.decode_rows`
    reads them back."""
    encoded = []
    for row in rows:
        fields = {name: getattr(row, name) for name in row.__dataclass_fields__}
        encoded.append({k: v.isoformat(sep=" ") if isinstance(v, datetime) else v for k, v in fields.items()})
    return encoded


def _text(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError("not text")
    return None if value is None else one_line(value)


def decode_observation(raw: dict[str, Any]) -> Observation:
    """An observation as the cluster sent it, each field checked (TypeError/ValueError if not)."""
    result = raw.get("result")
    if result is not None and not isinstance(result, dict):
        raise TypeError("result")
    native = raw.get("native_id")
    if native is not None and not (isinstance(native, str) and SLURM_ID.fullmatch(native)):
        raise ValueError("native_id")
    return Observation(
        state=State(raw["state"]),
        node=_text(raw.get("node")),
        reason=_text(raw.get("reason")),
        result=result,
        known=bool(raw.get("known", True)),
        gone=bool(raw.get("gone")),
        touch=bool(raw.get("touch")),
        native_id=native,
        folder=_text(raw.get("folder")),
    )


# ------------------------------------------------------------------------------------ backend


class RemoteBackend(Backend):
    """Jobs on remote profiles' clusters: each method is one request to the cluster's bfjobs per
    cluster (profile), whatever the number of jobs."""

    name: ClassVar[str] = "remote"
    uses_script: ClassVar[bool] = True
    submits_arrays: ClassVar[bool] = True
    here: ClassVar[bool] = False

    def __init__(self, early: dict[str, Agent] | None = None) -> None:
        self._agents: dict[str, Agent] = dict(early or {})  # prestarted by the entry point (status)
        self.in_place: dict[str, bool] = {}  # learnt by surveys: completed jobs' artefacts checked there
        self.progress: dict[str, dict[str, Any]] = {}  # learnt by surveys: running and ended jobs' records

    def close(self) -> None:
        for name, agent in self._agents.items():
            agent.close()
            if agent.calls or agent.held_calls:
                import logging

                logging.getLogger(__name__).debug(
                    "profile %r: %d ssh call(s), %d request(s) over a held session", name, agent.calls, agent.held_calls
                )

    def agent(self, profile_name: str) -> Agent:
        """The cluster of ``profile_name`` (its profile and ``remote_python`` read once per command)."""
        found = self._agents.get(profile_name)
        if found is None:
            found = self._agents[profile_name] = agent_for(profile_name)
        return found

    @property
    def calls(self) -> int:
        return sum(a.calls for a in self._agents.values())

    def submit(self, spec: JobSpec, job_folder: Path, script: str | None, task: Task) -> Submitted:
        raise ClusterError("internal: remote jobs are submitted by the cluster (api.remote)")

    def survey(self, rows: Sequence[JobRow], *, verify: bool = False, reasons: bool = False) -> Survey:
        done = Survey()
        for profile, group in _by_profile(rows).items():
            try:
                agent = self.agent(profile)
                answer = agent.call("survey", {"rows": encode_rows(group), "verify": verify, "reasons": reasons})
                known = {r.id for r in group}
                with agent.reading("survey"):
                    observed = {k: decode_observation(v) for k, v in answer["observed"].items() if k in known}
                    problems = [f"on {agent.target.host}: {one_line(str(p))}" for p in answer["problems"]]
                    seen = {str(i) for i in answer["reason_seen"]} & known
                    in_place = {str(k): bool(v) for k, v in answer["in_place"].items() if k in known}
                    progress = {k: _progress(v) for k, v in answer.get("progress", {}).items() if k in known}
            except (ClusterError, errors.BadInput) as exc:
                done.problems.append(f"cannot ask the cluster of profile {profile!r} about {len(group)} job(s): {exc}")
                continue
            done.observed.update(observed)
            done.problems += problems
            done.reason_seen |= seen
            self.in_place.update(in_place)
            self.progress.update(progress)
        return done

    def read_progress(self, rows: Sequence[JobRow]) -> dict[str, dict[str, Any]]:
        """What the last survey of each job's cluster said of its progress (no round trip: ``list``
        never connects)."""
        return {r.id: self.progress[r.id] for r in rows if r.id in self.progress}

    def cancel(self, rows: Sequence[JobRow], *, grace_s: float = 20.0) -> CancelRequest:
        done = CancelRequest()
        for profile, group in _by_profile(rows).items():
            try:  # one cluster out of reach refuses its own jobs, not every other backend's
                agent = self.agent(profile)
                answer = agent.call("cancel", {"rows": encode_rows(group)})
                with agent.reading("cancel"):
                    done.refused.update({str(k): one_line(str(v)) for k, v in answer["refused"].items()})
            except (ClusterError, errors.BadInput) as exc:
                done.refused.update({r.id: f"cannot ask the cluster of profile {profile!r}: {exc}" for r in group})
        return done

    def artefact_in_place(self, row: JobRow) -> bool:
        """Is a completed job's artefact in place on its cluster (learnt by the survey that saw it
        complete, else asked)?"""
        if row.id not in self.in_place:
            self.check_in_place([row])
        return self.in_place[row.id]

    def check_in_place(self, rows: Sequence[JobRow]) -> None:
        """Ask each cluster once about all these completed jobs' artefacts (``wait`` on jobs that
        ended before it started: one round trip, not one per job)."""
        for profile, group in _by_profile([r for r in rows if r.id not in self.in_place]).items():
            agent = self.agent(profile)
            answer = agent.call("in_place", {"rows": encode_rows(group)})
            with agent.reading("in_place"):
                self.in_place.update({r.id: bool(answer[r.id]) for r in group})

    def read_log(self, row: JobRow, stream: str, offset: int) -> bytes | None:
        import base64

        agent = self.agent(row.profile)
        answer = agent.call("read_log", {"rows": encode_rows([row]), "stream": stream, "offset": offset})
        with agent.reading("read_log"):
            return None if answer is None else base64.b64decode(answer, validate=True)


def _progress(raw: Any) -> dict[str, Any]:
    """A progress record as the cluster sent it: its known fields, numbers as numbers, times as
    one line of text (TypeError otherwise)."""
    from ..node.progress import FIELDS

    if not isinstance(raw, dict):
        raise TypeError("progress")
    record: dict[str, Any] = {}
    for key in (*FIELDS, "final"):
        value = raw.get(key)
        if key.endswith("_at"):
            record[key] = _text(value)
        elif key == "final":
            record[key] = bool(value)
        elif value is None or (isinstance(value, int | float) and not isinstance(value, bool) and value >= 0):
            record[key] = value
        else:
            raise TypeError(key)
    return record


def agent_for(profile_name: str) -> Agent:
    """The cluster of ``profile_name`` (a remote profile), as its ``bfjobs.toml`` settings name it."""
    from .. import config

    profile = config.load_profile(profile_name, check_dirs=False)
    if not profile.remote:
        raise ClusterError(f"profile {profile_name!r} no longer names a remote host (host = {profile.host})")
    settings = config.profile_settings(profile_name)
    return Agent(profile, settings.remote_python, settings.remote_session)


def _by_profile(rows: Sequence[JobRow]) -> dict[str, list[JobRow]]:
    groups: dict[str, list[JobRow]] = {}
    for row in rows:
        groups.setdefault(row.profile, []).append(row)
    return groups
