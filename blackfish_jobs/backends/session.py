"""Held sessions: one ssh session per remote profile kept open a few minutes, for ``status``.

A remote ``status`` costs one ssh call, and each call pays the cluster's login shell, its
interpreter and bfjobs' imports before ``sacct`` can even start (~70 ms on the test cluster, far
more where a site's login scripts are heavy; benchmarks/README.md). After a survey over a plain
call, the laptop starts a **session holder**: a small detached process of the user's (this
module, ``python -m blackfish_jobs.backends.session``) that runs ``bfjobs --serve`` on the
cluster through the profile's ssh master and listens on a Unix socket in the private ssh control
folder. The next ``status``/``wait`` connects there, says which jobs it will ask about before it
has read its configuration (the cluster starts that ``sacct`` call at once), then sends its
request; the answer is the plain call's, byte for byte.

What keeps it honest:

- **Surveys only.** Nothing that changes the cluster (submit, cancel, removals) goes through it,
  and the cluster's bfjobs refuses anything else there too.
- **Never the only way.** Any failure (no holder, a stale one, a dropped session, a timeout) and
  the request goes the plain way, as if no holder existed; a survey is safe to ask twice.
- **Never a prompt.** The holder's ssh runs with ``BatchMode=yes`` through the master the plain
  call just used (it cannot ask for a password or a 2FA code nobody would see).
- **Never stale.** The holder serves only requests made with its exact ssh command line, its
  ``remote_session`` and this bfjobs version (:func:`key`); told otherwise, it answers ``STALE``
  and goes away. A hint it forwarded is dropped there unless its own request follows. It also
  goes away after ``remote_session`` seconds without a request (bfjobs.toml, default 300; 0:
  never hold one; the master then lives its ``ControlPersist`` on, as after any call), after
  :data:`LIFETIME_S` in all (the cluster's login environment is read afresh), and when its
  session ends (``ssh -O exit``, a dropped link). One holder per socket: it holds a lock file
  all its life, so commands in quick succession do not start several.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ClusterError
from .protocol import ANSWER, HINT, MARK, MAX_REQUEST, PROTOCOL, REQUEST, SERVES

if TYPE_CHECKING:
    import subprocess

#: How long a holder lives in all, however busy: the cluster's login environment (modules, Slurm's
#: configuration) is then read again by the next one.
LIFETIME_S = 3600
#: How long a client may take to send its hint and its request once connected (a holder serves
#: one client at a time).
CLIENT_S = 10.0
MAX_HINT = 4 * 1024 * 1024
STALE = b"STALE"
#: The variables a holder does not inherit (it never needs a token; ssh could be told to send one).
SECRET_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


def socket_path(control_dir: Path, profile_name: str) -> Path:
    """Where the holder of ``profile_name`` (of this Blackfish home) listens: in the private ssh
    control folder, short (a socket's path is limited to 104 bytes on macOS), distinct from ssh's
    own ``%C`` sockets."""
    from .. import constants

    named = f"{constants.blackfish_home()}\0{profile_name}".encode()
    return control_dir / f"held-{hashlib.sha256(named).hexdigest()[:16]}"


#: What :func:`key` gives.
KEY = re.compile(rb"[0-9a-f]{32}")


def key(argv: list[str], idle_s: int) -> str:
    """What a holder must have been started with to serve a request: its ssh command line (the
    host, user, ``remote_python``, options), its ``remote_session`` and this bfjobs' version and
    protocol."""
    from .. import __version__

    text = json.dumps([PROTOCOL, __version__, argv, idle_s])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


# ------------------------------------------------------------------------------- client side


class Held:
    """A connection to a profile's holder, for one request."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.hinted = False

    def hint(self, ids: list[str] | None = None, since: datetime | None = None) -> None:
        """Say which Slurm jobs the request will ask about (none: an empty hint), so that the
        cluster starts their ``sacct`` call now; must come first, once."""
        body = {"ids": ids, "since": since.isoformat()} if ids and since is not None else {}
        self.sock.sendall(json.dumps(body).encode() + b"\n")
        self.hinted = True

    def ask(self, key: str, request: bytes, timeout: float) -> str | None:
        """Send the request; the answer line, or None if the holder could not give one (stale,
        gone, late: the caller asks the plain way)."""
        try:
            if not self.hinted:
                self.hint()
            self.sock.settimeout(timeout)
            self.sock.sendall(key.encode() + b"\n")
            self.sock.sendall(request)
            self.sock.shutdown(socket.SHUT_WR)
            chunks: list[bytes] = []
            size = 0
            while chunk := self.sock.recv(1 << 20):
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_REQUEST:
                    return None
        except OSError:
            return None
        finally:
            self.close()
        line = b"".join(chunks).decode("utf-8", "replace")
        whole = line.startswith(ANSWER + " ") and line.endswith("\n") and line.count("\n") == 1
        return line[:-1] if whole else None  # a line cut short (the holder went) is no answer

    def close(self) -> None:
        self.sock.close()


def connect(control_dir: Path, profile_name: str) -> Held | None:
    """The holder of ``profile_name``'s connection, or None if none is listening."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(CLIENT_S)
        sock.connect(str(socket_path(control_dir, profile_name)))
    except OSError:
        sock.close()
        return None
    return Held(sock)


def spawn(control_dir: Path, profile_name: str, argv: list[str], idle_s: int) -> None:
    """Start a holder for ``profile_name`` (detached: it outlives this command) unless one is
    alive (starting or serving: it holds the lock). Its settings go on its stdin, not its command line."""
    path = socket_path(control_dir, profile_name)
    if _locked(path):
        return
    import subprocess  # here, not above: a status imports this module before its hint (every ms counts there)

    env = {k: v for k, v in os.environ.items() if k not in SECRET_VARS}
    try:
        holder = subprocess.Popen(
            [sys.executable, "-m", __name__],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # no terminal, and a Ctrl-C at the terminal does not reach it
            env=env,
            cwd="/",
        )
        assert holder.stdin is not None
        settings = {"argv": argv, "key": key(argv, idle_s), "path": str(path), "idle_s": idle_s}
        with holder.stdin:
            holder.stdin.write(json.dumps(settings).encode())
        holder.wait(timeout=10)  # it forks and exits at once: no zombie left for a long `wait`
    except (OSError, subprocess.TimeoutExpired):  # only ever a head start for later commands
        return


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def _locked(path: Path) -> bool:
    """Is a holder of ``path`` alive (starting or serving)? It holds its lock file all its life."""
    import fcntl

    try:
        with open(_lock_path(path), "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(lock, fcntl.LOCK_UN)
    except OSError:
        return False
    return False


# ------------------------------------------------------------------------------- holder side


class Holder:
    """The detached process: one ssh session to ``bfjobs --serve``, one listening socket."""

    def __init__(self, argv: list[str], key: str, path: Path, idle_s: float, lifetime_s: float = LIFETIME_S) -> None:
        self.argv, self.key, self.path = argv, key, path
        self.idle_s, self.ends = idle_s, time.monotonic() + lifetime_s
        self.listener: socket.socket | None = None

    def run(self) -> int:
        import subprocess

        from .remote import READY_TIMEOUT_S, _Lines

        proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        lines = _Lines(proc)
        try:
            ready = lines.until(MARK + " ", time.monotonic() + READY_TIMEOUT_S)
            words = ready.split() if ready else []
            if len(words) < 4 or words[1] != str(PROTOCOL) or words[3] != SERVES:
                return 1  # not a bfjobs that can be held (or no session at all): the plain way stays
            self.listen()
            self.serve(proc, lines)
            return 0
        finally:
            self.unlisten()
            with contextlib.suppress(OSError):
                assert proc.stdin is not None
                proc.stdin.close()  # the agent's stdin closes: it ends
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def listen(self) -> None:
        """Bind under a private name, then rename into place: a client never meets a half-made
        socket (one left by a holder that was killed is replaced; the lock says none is alive)."""
        temporary = self.path.with_name(f"{self.path.name}.{os.getpid()}")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        listener.bind(str(temporary))
        os.chmod(temporary, 0o600)
        listener.listen(16)
        os.replace(temporary, self.path)
        self.listener = listener
        self.inode = self.path.stat().st_ino

    def still_named(self) -> bool:
        """Does the socket's name still lead here (not removed behind the holder's back)?"""
        try:
            return self.path.stat().st_ino == self.inode
        except OSError:
            return False

    def unlisten(self) -> None:
        if self.listener is None:
            return
        self.path.unlink(missing_ok=True)  # ours: no other holder lives while this one holds the lock
        self.listener.close()
        self.listener = None

    def serve(self, proc: subprocess.Popen[bytes], lines: Any) -> None:
        """Serve clients one at a time until idle, too old, stale, or the session ends."""
        import selectors
        assert self.listener is not None and proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.listener, selectors.EVENT_READ, "client")
            selector.register(proc.stdout, selectors.EVENT_READ, "session")
            if proc.stderr is not None:
                selector.register(proc.stderr, selectors.EVENT_READ, "stderr")
            last = time.monotonic()
            while True:
                left = min(last + self.idle_s, self.ends) - time.monotonic()
                if left <= 0:
                    return  # idle, or old enough
                events = selector.select(min(left, 30.0))
                if not events:
                    if not self.still_named():  # removed: nobody can reach this holder any more
                        return
                    continue
                if any(k.data == "session" for k, _ in events):
                    return  # the agent said something unasked, or its session ended
                if any(k.data == "stderr" for k, _ in events):  # read (and dropped), so that it never fills
                    if not os.read(proc.stderr.fileno(), 65536):  # type: ignore[union-attr]
                        return
                    continue
                conn, _ = self.listener.accept()
                last = time.monotonic()
                with conn:
                    if not self.handle(conn, proc, lines):
                        return

    def handle(self, conn: socket.socket, proc: subprocess.Popen[bytes], lines: Any) -> bool:
        """One client: its hint goes to the agent at once, then its request; the answer back.
        False when the holder should end (stale, or the session broke)."""
        hinted = False
        try:
            hinted, request = self.receive(conn, proc)
        except _Stale:
            with contextlib.suppress(OSError):
                conn.sendall(STALE + b"\n")
            return False  # a client with another profile, setting or bfjobs: this holder is stale, it goes
        except _Broken:
            return False
        if request is None:  # no request after all: the hinted call is dropped there, never served later
            return not hinted or _write(proc, b"%s 2\n{}" % HINT.encode(), time.monotonic() + CLIENT_S)
        from .remote import CALL_TIMEOUT_S

        deadline = time.monotonic() + CALL_TIMEOUT_S
        if not _write(proc, b"%s %d\n" % (REQUEST.encode(), len(request)) + request, deadline):
            return False
        try:
            answer = lines.until(ANSWER + " ", deadline)
        except ClusterError:  # an answer beyond any bound: this session is of no more use
            return False
        if answer is None:
            return False
        with contextlib.suppress(OSError):
            conn.settimeout(CLIENT_S)
            conn.sendall(answer.encode() + b"\n")
        return True

    def receive(self, conn: socket.socket, proc: subprocess.Popen[bytes]) -> tuple[bool, bytes | None]:
        """A client's hint (forwarded at once: whether it was) and request (None: none came, or
        not one of ours). Raises :class:`_Stale` for another key, :class:`_Broken` if the agent
        stopped reading."""
        hinted = False
        conn.settimeout(CLIENT_S)
        reader = conn.makefile("rb")
        try:
            hint = reader.readline(MAX_HINT)
            if not hint.endswith(b"\n"):
                return hinted, None  # not a client of ours (or it gave up): dropped
            body = hint.strip()
            if body not in (b"", b"{}"):
                if not _write(proc, b"%s %d\n%s" % (HINT.encode(), len(body), body), time.monotonic() + CLIENT_S):
                    raise _Broken
                hinted = True
            asked = reader.readline(128).strip()
            if not KEY.fullmatch(asked):
                return hinted, None  # it left without asking (held sessions turned off there), or junk
            if asked.decode() != self.key:
                raise _Stale
            request = reader.read(MAX_REQUEST + 1)
        except (OSError, ValueError):
            return hinted, None
        finally:
            reader.close()
        return hinted, (request if request and len(request) <= MAX_REQUEST else None)


class _Stale(Exception):
    """A client sent another key."""


class _Broken(Exception):
    """The agent stopped reading."""


def _write(proc: subprocess.Popen[bytes], data: bytes, deadline: float) -> bool:
    """Write a message to the agent by the deadline, keeping its stdin open for the next one
    (False if not: it stopped reading, or went away)."""
    from .remote import write_by

    try:
        return write_by(proc, data, deadline)
    except OSError:
        return False


def main() -> int:
    """The holder process: its settings (from :func:`spawn`) on stdin. It forks once and the
    first process exits (the holder is then nobody's child: no zombie in a long command); it
    takes its lock or leaves (one holder per socket, starting or serving)."""
    import fcntl

    try:
        settings = json.loads(sys.stdin.buffer.read(1 << 20))
        holder = Holder(
            [str(a) for a in settings["argv"]], str(settings["key"]), Path(settings["path"]), float(settings["idle_s"])
        )
    except (ValueError, KeyError, TypeError):
        return 2
    sys.stdin.close()
    if os.fork():
        os._exit(0)
    try:
        lock = open(_lock_path(holder.path), "a")  # noqa: SIM115  held open for the holder's life
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # another holder is starting or serving
        return 0
    return holder.run()


if __name__ == "__main__":
    sys.exit(main())
