"""A small, stdlib-only, Hugging Face Hub-compatible HTTP server: the hub bfjobs downloads from in tests.

It serves the read-only requests bfjobs makes through huggingface_hub (``HfApi().model_info`` with a revision, and
``snapshot_download``), nothing more:

* ``GET /api/models/{repo_id}[/revision/{rev}]`` - repo info (``id``, ``sha``, ``pipeline_tag``, ``siblings``...);
* ``GET /api/models/{repo_id}/tree/{rev}[/{path}]?recursive=...`` - the file listing (one page);
* ``HEAD|GET /{repo_id}/resolve/{rev}/{path}`` - regular files are served directly (``ETag`` = quoted git blob
  sha1, ``Content-Length``, ``Range``); "LFS" files answer ``302`` to a content-addressed CDN URL with
  ``X-Linked-Etag`` (sha256) and ``X-Linked-Size``. Every answer carries ``X-Repo-Commit``.
* Errors carry ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``, ``GatedRepo``) and
  ``X-Error-Message`` plus a JSON body ``{"error": ...}``, like the Hub.

Models only, no Xet (never an ``X-Xet-*`` header, so the client always uses plain HTTP), no compression. The CDN
listens on a second port: the client follows same-origin redirects during its metadata ``HEAD`` (and would then
miss ``X-Repo-Commit``), and strips ``Authorization`` only for other origins, exactly as with the real Hub's CDN.

``minimal=True`` (``--minimal``) serves only what a minimal mirror serves - the requests ``snapshot_download``
makes with an explicit revision, as many self-hosted mirrors do (huggingface_hub issue #3681):

* ``GET /api/models/{repo_id}/revision/{rev}`` with ``id`` and ``sha`` only (no ``pipeline_tag``, ``siblings``...);
* ``GET /api/models/{repo_id}/tree/{commit}?recursive=true`` of a full commit sha;
* ``HEAD|GET /{repo_id}/resolve/{commit}/{path}`` of a full commit sha, and the CDN.

Everything else - the bare ``GET /api/models/{repo_id}``, a tree or file by branch name, any other path - answers
a plain ``404`` ``{"detail": "Not Found"}`` (a web framework's default: no ``X-Error-Code``, no
``X-Error-Message``), the way such mirrors answer an endpoint they lack. The endpoints served still answer a missing
repo, revision or file like the Hub (``X-Error-Code``). ``unserved`` (a set of route names: ``info``, ``revision``,
``tree``, ``resolve``) turns more routes into that plain 404, on either kind of server.

Run ``python tests/support/hub.py`` to serve the demo repo by hand (``--minimal`` for a minimal mirror).
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import hashlib
import json
import random
import re
import socket
import struct
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

R = TypeVar("R")  # a recorded request (RequestLog)

__all__ = [
    "DEMO_FOLDER",
    "DEMO_REPO_ID",
    "Commit",
    "HubFile",
    "HubRepo",
    "HubServer",
    "MiB",
    "RecordedRequest",
    "make_demo_repo",
    "pseudo_random_bytes",
    "snapshot_files",
    "tiny_safetensors",
]

MiB = 1024 * 1024
DEMO_REPO_ID = "bfjobs-test/tiny-model"
DEMO_FOLDER = "models--bfjobs-test--tiny-model"  # the demo repo's folder in a huggingface_hub cache
HOST = "127.0.0.1"
DEFAULT_LFS_PATTERNS: tuple[str, ...] = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.gguf", "*.onnx")
_FULL_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
_SHORT_SHA_RE = re.compile(r"^[0-9a-f]{7,39}$")
_API_ROUTES = ("revision", "tree")


def _git_blob_sha1(data: bytes) -> str:
    """Return the git object id of a blob with this content."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class HubFile:
    """One file of a commit. ``blob_id`` is the git oid (of the pointer file for LFS files)."""

    path: str
    data: bytes = field(repr=False)
    blob_id: str
    sha256: str | None = None
    pointer_size: int | None = None

    @property
    def size(self) -> int:
        """Size of the real content in bytes."""
        return len(self.data)

    @property
    def is_lfs(self) -> bool:
        """Whether the file is stored with git-lfs (served through the CDN redirect)."""
        return self.sha256 is not None

    @classmethod
    def build(cls, path: str, data: bytes, *, lfs: bool) -> HubFile:
        """Compute the hashes of a file; ``lfs`` stores it as an LFS pointer."""
        if not lfs:
            return cls(path=path, data=data, blob_id=_git_blob_sha1(data))
        sha256 = hashlib.sha256(data).hexdigest()
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(data)}\n".encode()
        return cls(path=path, data=data, blob_id=_git_blob_sha1(pointer), sha256=sha256, pointer_size=len(pointer))


@dataclass(frozen=True)
class Commit:
    """An immutable commit: a 40-hex ``sha`` and a full snapshot of the files."""

    sha: str
    files: Mapping[str, HubFile] = field(repr=False)

    def directories(self) -> set[str]:
        """All directories (``a``, ``a/b``...) that contain at least one file."""
        dirs: set[str] = set()
        for path in self.files:
            parts = path.split("/")[:-1]
            dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        return dirs

    def tree_oid(self, directory: str) -> str:
        """A deterministic oid for a directory (not git's exact algorithm)."""
        prefix = directory + "/"
        listing = "\n".join(f"{p} {f.blob_id}" for p, f in sorted(self.files.items()) if p.startswith(prefix))
        return hashlib.sha1(f"tree {directory}\n{listing}".encode()).hexdigest()


class HubRepo:
    """An in-memory model repo with branches and tags pointing to commits; thread-safe for concurrent reads/updates.

    Files whose size is ``>= lfs_threshold`` or whose basename matches ``lfs_patterns`` are "LFS" files.
    """

    def __init__(
        self,
        repo_id: str,
        *,
        pipeline_tag: str | None = None,
        library_name: str | None = None,
        lfs_threshold: int = MiB,
        lfs_patterns: Iterable[str] = DEFAULT_LFS_PATTERNS,
        default_branch: str = "main",
    ) -> None:
        self.repo_id = repo_id
        self.pipeline_tag = pipeline_tag
        self.library_name = library_name
        self.lfs_threshold = lfs_threshold
        self.lfs_patterns = tuple(lfs_patterns)
        self.default_branch = default_branch
        self.branches: dict[str, str] = {}
        self.tags: dict[str, str] = {}
        self.commits: dict[str, Commit] = {}
        self._lfs_blobs: dict[str, bytes] = {}
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"HubRepo({self.repo_id!r}, branches={self.branches}, tags={self.tags})"

    def is_lfs(self, path: str, data: bytes) -> bool:
        """Whether a file with this path and content is stored as LFS."""
        name = path.rsplit("/", 1)[-1]
        return len(data) >= self.lfs_threshold or any(fnmatch.fnmatch(name, pat) for pat in self.lfs_patterns)

    def commit(
        self,
        files: Mapping[str, bytes | str | None],
        *,
        branch: str | None = None,
        message: str = "Update files",
        replace: bool = False,
    ) -> str:
        """Commit on ``branch`` (default branch by default, created if missing) and move it; return the sha.

        ``files`` maps paths to content (``str`` is UTF-8 encoded); ``None`` deletes a path. Unless ``replace``,
        the other files of the branch head are kept.
        """
        branch = branch or self.default_branch
        with self._lock:
            parent = self.branches.get(branch)
            snapshot: dict[str, HubFile] = {} if replace or parent is None else dict(self.commits[parent].files)
            for path, content in files.items():
                path = path.strip("/")
                if not path or any(part in ("", ".", "..") for part in path.split("/")):
                    raise ValueError(f"invalid path in repo: {path!r}")
                if content is None:
                    snapshot.pop(path, None)
                    continue
                data = content.encode() if isinstance(content, str) else bytes(content)
                snapshot[path] = HubFile.build(path, data, lfs=self.is_lfs(path, data))
            listing = "".join(f"{p}\0{f.blob_id}\n" for p, f in sorted(snapshot.items()))
            header = f"repo model/{self.repo_id}\nseq {len(self.commits)}\nparent {parent}\nmessage {message}\n"
            sha = hashlib.sha1((header + listing).encode()).hexdigest()
            self.commits[sha] = Commit(sha, snapshot)
            for f in snapshot.values():
                if f.sha256 is not None:
                    self._lfs_blobs.setdefault(f.sha256, f.data)
            self.branches[branch] = sha
            return sha

    def create_branch(self, name: str, revision: str | None = None) -> str:
        """Create (or reset) branch ``name`` at ``revision`` (default branch head by default); return the sha."""
        with self._lock:
            sha = self._must_resolve(revision or self.default_branch)
            self.branches[name] = sha
            return sha

    def create_tag(self, name: str, revision: str | None = None) -> str:
        """Create (or move) tag ``name`` at ``revision``; return the sha."""
        with self._lock:
            sha = self._must_resolve(revision or self.default_branch)
            self.tags[name] = sha
            return sha

    def resolve(self, revision: str) -> str | None:
        """Resolve a branch, tag, ``refs/heads/x``, ``refs/tags/x`` or (short) sha to a commit sha."""
        with self._lock:
            if revision in self.branches:
                return self.branches[revision]
            if revision in self.tags:
                return self.tags[revision]
            if revision.startswith("refs/heads/"):
                return self.branches.get(revision[len("refs/heads/") :])
            if revision.startswith("refs/tags/"):
                return self.tags.get(revision[len("refs/tags/") :])
            if _FULL_SHA_RE.match(revision):
                return revision if revision in self.commits else None
            if _SHORT_SHA_RE.match(revision):
                matches = [sha for sha in self.commits if sha.startswith(revision)]
                return matches[0] if len(matches) == 1 else None
            return None

    def get_commit(self, revision: str) -> Commit | None:
        """Return the commit a revision points to, or None."""
        with self._lock:
            sha = self.resolve(revision)
            return self.commits.get(sha) if sha else None

    def files_at(self, revision: str) -> dict[str, bytes]:
        """Path -> content of every file at ``revision``."""
        commit = self.get_commit(revision)
        if commit is None:
            raise KeyError(f"unknown revision {revision!r}")
        return {path: f.data for path, f in commit.files.items()}

    def lfs_blob(self, sha256: str) -> bytes | None:
        """Content of an LFS object by sha256, if any commit of this repo has it."""
        with self._lock:
            return self._lfs_blobs.get(sha256)

    def _must_resolve(self, revision: str) -> str:
        sha = self.resolve(revision)
        if sha is None:
            raise KeyError(f"unknown revision {revision!r} in {self.repo_id}")
        return sha


@dataclass
class RecordedRequest:
    """One request seen by the server. ``headers`` keys are lower-case and never include ``authorization``."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    has_auth: bool
    listener: Literal["hub", "cdn"]
    status: int | None = None
    body_bytes: int = 0
    aborted: bool = False

    @property
    def decoded_path(self) -> str:
        """The path with percent-escapes decoded (``refs%2Fheads%2Fx`` -> ``refs/heads/x``)."""
        return unquote(self.path)


class _Listener(ThreadingHTTPServer):
    """A threading HTTP server that knows its ``HubServer`` and tracks open connections."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], hub: HubServer, name: Literal["hub", "cdn"]) -> None:
        self.hub = hub
        self.name: Literal["hub", "cdn"] = name
        self.connections: set[socket.socket] = set()
        self.conn_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.conn_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.conn_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not self.hub.quiet:
            super().handle_error(request, client_address)

    def close_connections(self) -> None:
        """Abort every open (keep-alive or in-flight) connection."""
        with self.conn_lock:
            conns = list(self.connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class RequestLog(Generic[R]):
    """The requests a test server received, recorded by its handler threads (``_lock``, ``_requests``:
    the server's own)."""

    _lock: Any
    _requests: list[R]

    @property
    def requests(self) -> list[R]:
        """A snapshot (copy) of every request received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        """Forget the recorded requests."""
        with self._lock:
            self._requests.clear()

    def _record(self, rec: R) -> None:
        with self._lock:
            self._requests.append(rec)


class HubServer(RequestLog[RecordedRequest]):
    """Hub-compatible server on 127.0.0.1 (a free port unless ``port``), its CDN on another; a context manager.

    Switches (plain attributes, may be changed while running), the faults and hubs tests need:

    * ``require_token``: when set, every hub request (not the CDN, which uses "signed" URLs like the real one) needs
      ``Authorization: Bearer <token>``. Missing -> 401 with ``X-Error-Code: GatedRepo`` (the client raises
      ``GatedRepoError``); wrong token -> 401 "Invalid credentials in Authorization header" (``HfHubHTTPError``).
    * ``fail_mid_file``: repo path of a file whose GET body is broken halfway, ``fail_times`` more times
      (decremented on each injected failure; ``failures_injected`` counts them). ``fail_mode="close"`` ends the
      connection cleanly (the client sees a truncated body and retries), ``"reset"`` aborts it with a TCP RST
      (buffered bytes may be lost; huggingface_hub 2.4 does not retry that). A response whose range starts
      at/after the break point sends its headers only.
    * ``delay_per_chunk``: seconds to sleep before each ``chunk_size`` bytes of file bodies (slow downloads).
    * ``minimal``: serve only what a minimal mirror serves (see the module docstring); ``unserved``: route names
      answered with a plain 404 (no ``X-Error-Code``) as by a mirror lacking them.
    """

    def __init__(
        self,
        repos: Iterable[HubRepo] = (),
        *,
        port: int = 0,
        require_token: str | None = None,
        fail_mid_file: str | None = None,
        fail_times: int = 1,
        fail_mode: Literal["close", "reset"] = "close",
        delay_per_chunk: float = 0.0,
        chunk_size: int = 64 * 1024,
        minimal: bool = False,
        unserved: Iterable[str] = (),
        quiet: bool = True,
    ) -> None:
        self.repos: dict[str, HubRepo] = {repo.repo_id: repo for repo in repos}
        self.host = HOST
        self.require_token = require_token
        self.fail_mid_file = fail_mid_file
        self.fail_times = fail_times
        self.fail_mode = fail_mode
        self.failures_injected = 0
        self.delay_per_chunk = delay_per_chunk
        self.chunk_size = chunk_size
        self.minimal = minimal
        self.unserved = set(unserved) | ({"info"} if minimal else set())
        self.quiet = quiet
        self._want_port = port
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._stopping = threading.Event()
        self._listeners: list[_Listener] = []
        self._threads: list[threading.Thread] = []

    # -- repos & request log ------------------------------------------------------------------------------------
    def get_repo(self, repo_id: str) -> HubRepo:
        """The served repo with this id."""
        return self.repos[repo_id]


    def _take_failure(self, path: str, size: int, start: int, end: int) -> int | None:
        """Return how many body bytes to send before breaking this response, or None to send it all."""
        with self._lock:
            if self.fail_mid_file is None or path != self.fail_mid_file or self.fail_times <= 0 or size == 0:
                return None
            cut = size // 2
            if cut > end:  # this range ends before the break point
                return None
            self.fail_times -= 1
            self.failures_injected += 1
            return max(0, cut - start)

    # -- lifecycle ----------------------------------------------------------------------------------------------
    def _started(self) -> list[_Listener]:
        if not self._listeners:
            raise RuntimeError("HubServer is not running: call start() or use it as a context manager")
        return self._listeners

    @property
    def url(self) -> str:
        """Endpoint to pass as ``endpoint=`` / ``HF_ENDPOINT`` (no trailing slash)."""
        return f"http://{self.host}:{self._started()[0].server_address[1]}"

    @property
    def cdn_url(self) -> str:
        """Base URL of the CDN that LFS files redirect to."""
        return f"http://{self.host}:{self._started()[1].server_address[1]}"

    def start(self) -> HubServer:
        """Bind the listeners and serve in background threads."""
        if self._listeners:
            raise RuntimeError("server already started")
        self._stopping.clear()
        self._listeners += [
            _Listener((self.host, self._want_port), self, "hub"),
            _Listener((self.host, 0), self, "cdn"),
        ]
        for listener in self._listeners:
            thread = threading.Thread(
                target=listener.serve_forever, kwargs={"poll_interval": 0.01}, name=f"hubserver-{listener.name}"
            )
            thread.daemon = True
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop serving, abort open connections and free the ports."""
        self._stopping.set()
        for listener in self._listeners:
            listener.shutdown()
            listener.close_connections()
            listener.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._listeners.clear()
        self._threads.clear()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = self.url if self._listeners else "stopped"
        return f"HubServer({state}, repos={sorted(self.repos)})"


class _Handler(BaseHTTPRequestHandler):
    """Request handler implementing the Hub routes."""

    protocol_version = "HTTP/1.1"
    server_version = "bfjobs-hubserver/1.0"
    timeout = 60  # idle keep-alive connections are closed after this
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid the 40 ms delayed-ACK stall
    server: _Listener

    # -- plumbing -----------------------------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:
        if not self.server.hub.quiet:
            super().log_message(format, *args)

    def send_response(self, code: int, message: str | None = None) -> None:
        rec = getattr(self, "rec", None)  # None for errors raised by http.server itself (400, 501...)
        if rec is not None:
            rec.status = code
        super().send_response(code, message)

    def send_header(self, keyword: str, value: str) -> None:
        super().send_header(keyword, str(value).encode("latin-1", "replace").decode("latin-1"))

    def do_GET(self) -> None:
        self._dispatch(head=False)

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def _dispatch(self, *, head: bool) -> None:
        split = urlsplit(self.path)
        headers = {k.lower(): v for k, v in self.headers.items() if k.lower() != "authorization"}
        self.rec = RecordedRequest(
            method=self.command,
            path=split.path,
            query=split.query,
            headers=headers,
            has_auth="authorization" in {k.lower() for k in self.headers},
            listener=self.server.name,
        )
        self.server.hub._record(self.rec)
        self.head_only = head
        self.query = parse_qs(split.query)
        try:
            segments = split.path.split("/")[1:]
            if self.server.name == "cdn":
                if segments[:1] == ["cdn"]:
                    self._cdn(segments[1:])
                else:
                    self._error(404, None, "Not found")
            elif self._auth_ok():
                self._route(segments)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.rec.aborted = True
            self.close_connection = True
        except Exception:  # pragma: no cover - a bug in the test server
            traceback.print_exc(file=sys.stderr)
            self.close_connection = True
            if self.rec.status is None:
                self._error(500, None, "Internal test hub error")

    def _send(self, status: int, headers: Mapping[str, str], body: bytes = b"") -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("X-Request-Id", "Root=1-" + uuid.uuid4().hex[:24])
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and not self.head_only:
            self.wfile.write(body)
            self.rec.body_bytes += len(body)

    def _json(self, obj: Any, headers: Mapping[str, str] | None = None, status: int = 200) -> None:
        body = json.dumps(obj).encode()
        self._send(status, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}, body)

    def _error(self, status: int, code: str | None, message: str, headers: Mapping[str, str] | None = None) -> None:
        extra = {"X-Error-Message": message, **(headers or {})}
        if code:
            extra["X-Error-Code"] = code
        self._json({"error": message}, extra, status)

    def _auth_ok(self) -> bool:
        """Enforce ``require_token``; send the error and return False when the request is not authorized."""
        hub = self.server.hub
        if hub.require_token is None:
            return True
        auth = self.headers.get("Authorization")
        if auth is None:
            self._error(
                401,
                "GatedRepo",
                "Access to this repository is restricted. You must have access to it and be authenticated "
                "to access it. Please log in.",
            )
            return False
        if auth != f"Bearer {hub.require_token}":
            self._error(401, None, "Invalid credentials in Authorization header")
            return False
        return True

    # -- routing ------------------------------------------------------------------------------------------------
    def _route(self, segments: list[str]) -> None:
        if not self._served(segments):
            self._not_found_plain()
        elif len(segments) >= 3 and segments[:2] == ["api", "models"]:
            self._route_api(segments[2:])
        elif "resolve" in segments:
            self._route_resolve(segments)
        else:
            self._page_not_found()

    def _served(self, segments: list[str]) -> bool:
        """Whether this server serves the route (``minimal`` and ``unserved``); the Hub serves all."""
        hub = self.server.hub
        if not (len(segments) >= 3 and segments[:2] == ["api", "models"]):
            if "resolve" not in segments:
                return True  # unknown paths answer the Hub's own 404 (or the minimal mirror's)
            at = segments.index("resolve")
            revision = unquote(segments[at + 1]) if len(segments) > at + 1 else ""
            return "resolve" not in hub.unserved and (not hub.minimal or bool(_FULL_SHA_RE.match(revision)))
        route = _api_route(segments[2:])
        if route in hub.unserved:
            return False
        if hub.minimal and route == "tree":
            recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
            after = segments[segments.index("tree") + 1 :]
            return recursive and bool(after) and bool(_FULL_SHA_RE.match(unquote(after[0])))
        return True

    def _not_found_plain(self) -> None:
        """A web framework's default 404, as a mirror lacking the endpoint answers: no Hub error headers."""
        self._json({"detail": "Not Found"}, status=404)

    def _route_api(self, segments: list[str]) -> None:
        repo, rest = self._match_repo(segments)
        if repo is None:
            return self._repo_not_found()
        if not rest:
            return self._info(repo, repo.default_branch)
        if rest[0] == "revision" and len(rest) >= 2:
            return self._info(repo, unquote("/".join(rest[1:])))
        if rest[0] == "tree" and len(rest) >= 2:
            path = "/".join(unquote(s) for s in rest[2:]).strip("/")
            return self._tree(repo, unquote(rest[1]), path)
        return self._page_not_found()

    def _route_resolve(self, segments: list[str]) -> None:
        repo, rest = self._match_repo(segments)
        if repo is None:
            return self._repo_not_found()
        if len(rest) >= 3 and rest[0] == "resolve":
            return self._resolve(repo, unquote(rest[1]), "/".join(unquote(s) for s in rest[2:]))
        return self._page_not_found()

    def _page_not_found(self) -> None:
        if self.server.hub.minimal:
            return self._not_found_plain()
        return self._error(404, None, "Sorry, we can't find the page you are looking for.")

    def _match_repo(self, segments: list[str]) -> tuple[HubRepo | None, list[str]]:
        repos = self.server.hub.repos
        names = [unquote(s) for s in segments[:2]]
        if len(names) == 2 and "/".join(names) in repos:
            return repos["/".join(names)], segments[2:]
        if names and names[0] in repos:
            return repos[names[0]], segments[1:]
        return None, []

    def _repo_not_found(self) -> None:
        # Like the Hub: 401 for anonymous callers (does not leak existence), 404 when authenticated.
        status = 404 if self.rec.has_auth else 401
        self._error(status, "RepoNotFound", "Repository not found")

    def _commit_or_error(self, repo: HubRepo, revision: str) -> Commit | None:
        commit = repo.get_commit(revision)
        if commit is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return commit

    # -- API endpoints ------------------------------------------------------------------------------------------
    def _info(self, repo: HubRepo, revision: str) -> None:
        commit = self._commit_or_error(repo, revision)
        if commit is None:
            return
        if self.server.hub.minimal:  # what snapshot_download needs (ModelInfo requires ``id``), nothing optional
            return self._json({"id": repo.repo_id, "sha": commit.sha})
        self._json({
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "sha": commit.sha,
            "private": False,
            "gated": "auto" if self.server.hub.require_token else False,
            "pipeline_tag": repo.pipeline_tag,
            "library_name": repo.library_name,
            "siblings": [{"rfilename": path} for path in sorted(commit.files)],
        })

    def _tree(self, repo: HubRepo, revision: str, path: str) -> None:
        commit = self._commit_or_error(repo, revision)
        if commit is None:
            return
        directories = commit.directories()
        if path and path not in directories:
            self._error(404, "EntryNotFound", f'{path} does not exist on "{revision}"', _commit_header(commit))
            return
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        prefix = path + "/" if path else ""
        entries: list[dict[str, Any]] = []
        for p in sorted(set(commit.files) | directories):
            if not p.startswith(prefix) or (not recursive and "/" in p[len(prefix) :]):
                continue
            f = commit.files.get(p)
            if f is None:
                entries.append({"type": "directory", "oid": commit.tree_oid(p), "size": 0, "path": p})
                continue
            entry: dict[str, Any] = {"type": "file", "oid": f.blob_id, "size": f.size, "path": p}
            if f.is_lfs:
                entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": f.pointer_size}
            entries.append(entry)
        self._json(entries, _commit_header(commit))

    # -- file endpoints -----------------------------------------------------------------------------------------
    def _resolve(self, repo: HubRepo, revision: str, path: str) -> None:
        commit = self._commit_or_error(repo, revision)
        if commit is None:
            return
        f = commit.files.get(path)
        if f is None:
            self._error(404, "EntryNotFound", f"Entry not found: {path}", _commit_header(commit))
            return
        headers = {
            **_commit_header(commit),
            "ETag": f'"{f.blob_id}"',
            "Accept-Ranges": "bytes",
            "Content-Disposition": _content_disposition(path),
        }
        if f.is_lfs:
            location = f"{self.server.hub.cdn_url}/cdn/{f.sha256}?{urlencode({'path': path})}"
            headers.update({"X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(f.size), "Location": location})
            body = f"Found. Redirecting to {location}".encode()
            self._send(302, {"Content-Type": "text/plain; charset=utf-8", **headers}, body)
            return
        self._send_file(f.data, path, {"Content-Type": "application/octet-stream", **headers})

    def _cdn(self, segments: list[str]) -> None:
        sha256 = segments[0] if len(segments) == 1 else ""
        data = None
        for repo in list(self.server.hub.repos.values()):
            data = repo.lfs_blob(sha256)
            if data is not None:
                break
        if data is None:
            self._send(404, {"Content-Type": "application/xml"}, b"<Error><Code>NoSuchKey</Code></Error>")
            return
        path = self.query.get("path", [sha256])[0]
        headers = {
            "Content-Type": "application/octet-stream",
            "ETag": f'"{sha256}"',
            "Accept-Ranges": "bytes",
            "Content-Disposition": _content_disposition(path),
        }
        self._send_file(data, path, headers)

    def _send_file(self, data: bytes, path: str, headers: dict[str, str]) -> None:
        """Send ``data`` honouring ``Range``, ``delay_per_chunk`` and the mid-file failure switch."""
        hub = self.server.hub
        size = len(data)
        start, end, status = 0, size - 1, 200
        range_header = self.headers.get("Range")
        if range_header:
            parsed = _parse_range(range_header, size)
            if parsed is None:
                self._send(416, {"Content-Range": f"bytes */{size}", "Content-Type": "text/plain"})
                return
            start, end = parsed
            status = 206
            headers = {**headers, "Content-Range": f"bytes {start}-{end}/{size}"}
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        if self.head_only:
            return
        to_send = hub._take_failure(path, size, start, end)
        stop_at = end + 1 if to_send is None else start + to_send
        pos = start
        view = memoryview(data)
        while pos < stop_at:
            # The delay comes before each chunk, so a file of one chunk is slow too (after the
            # last chunk the client already has the whole body and would not notice a delay).
            if hub.delay_per_chunk and hub._stopping.wait(hub.delay_per_chunk):
                to_send = to_send if to_send is not None else pos - start  # server stopping: abort
                break
            chunk = view[pos : min(pos + hub.chunk_size, stop_at)]
            self.wfile.write(chunk)
            pos += len(chunk)
            self.rec.body_bytes += len(chunk)
        if to_send is not None:
            self.rec.aborted = True
            self.close_connection = True
            with contextlib.suppress(OSError):  # the client may already be gone
                self.wfile.flush()
                if hub.fail_mode == "reset":  # linger 0 + close (no FIN first) => RST; unsent data is dropped
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                else:
                    self.connection.shutdown(socket.SHUT_WR)


def _api_route(segments: list[str]) -> str:
    """The route of ``/api/models/{segments}``: ``info`` (the bare repo), ``revision``, ``tree`` (repo ids have
    one or two segments; the route is known even for a repo the server lacks)."""
    for at in (1, 2):
        if len(segments) > at and segments[at] in _API_ROUTES:
            return segments[at]
    return "info" if len(segments) <= 2 else "other"


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """Parse a single ``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` range; None if unsatisfiable or invalid."""
    match = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header, re.IGNORECASE)
    if not match or not any(match.groups()):
        return None
    first, last = match.groups()
    if not first:
        suffix = int(last)
        if suffix == 0 or size == 0:
            return None
        return max(0, size - suffix), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        return None
    return start, end


def _commit_header(commit: Commit) -> dict[str, str]:
    return {"X-Repo-Commit": commit.sha}


def _content_disposition(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return f"inline; filename*=UTF-8''{quote(name)}; filename=\"{name}\";"


def snapshot_files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (following the snapshot's symlinks), keyed by its posix path relative to it."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# -- demo repo --------------------------------------------------------------------------------------------------------
def pseudo_random_bytes(size: int, seed: str) -> bytes:
    """Deterministic pseudo-random bytes (stable across runs and Python versions)."""
    return random.Random(seed).randbytes(size)


def tiny_safetensors(size: int, seed: str) -> bytes:
    """A valid safetensors file of exactly ``size`` bytes (one ``U8`` tensor named ``weight``)."""
    n = size
    for _ in range(4):
        header = {"__metadata__": {"format": "pt"}, "weight": {"dtype": "U8", "shape": [n], "data_offsets": [0, n]}}
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        n = size - 8 - len(raw)
    if n < 0:
        raise ValueError("size too small for a safetensors file")
    return struct.pack("<Q", len(raw)) + raw + pseudo_random_bytes(n, seed)


def _config(revision: str) -> str:
    return json.dumps({"model_type": "tiny", "hidden_size": 8, "num_layers": 1, "revision": revision}, indent=2) + "\n"


_GITATTRIBUTES = "".join(f"{pat} filter=lfs diff=lfs merge=lfs -text\n" for pat in DEFAULT_LFS_PATTERNS)


def make_demo_repo(model_size: int = 3 * MiB, repo_id: str = DEMO_REPO_ID) -> HubRepo:
    """Build the standard test repo.

    History: commit 1 (tag ``v1.0``) has ``pytorch_model.bin`` (256 KiB, LFS by pattern); ``main`` (commit 2) drops
    it and changes ``config.json`` and ``sub/extra.txt`` (``model.safetensors`` blob unchanged); ``dev`` (commit 3,
    child of ``main``) changes ``config.json``, retrains ``model.safetensors`` and adds ``sub/dev-notes.txt``.
    Every revision has ``.gitattributes``, ``README.md``, ``config.json``, ``tokenizer.json``, ``sub/extra.txt`` and
    a ``model_size``-byte valid ``model.safetensors`` (LFS).
    """
    repo = HubRepo(repo_id, pipeline_tag="text-generation", library_name="transformers")
    tokenizer = json.dumps({"version": "1.0", "model": {"type": "WordLevel", "vocab": {"<unk>": 0, "a": 1, "b": 2}}})
    v1 = repo.commit(
        {
            ".gitattributes": _GITATTRIBUTES,
            "README.md": "---\npipeline_tag: text-generation\nlibrary_name: transformers\n---\n# tiny-model\n",
            "config.json": _config("v1.0"),
            "tokenizer.json": tokenizer + "\n",
            "sub/extra.txt": "extra v1\n",
            "model.safetensors": tiny_safetensors(model_size, "weights-v1"),
            "pytorch_model.bin": pseudo_random_bytes(256 * 1024, "bin-v1"),
        },
        message="Initial commit",
    )
    repo.create_tag("v1.0", v1)
    repo.commit(
        {"pytorch_model.bin": None, "config.json": _config("main"), "sub/extra.txt": "extra v2\n"},
        message="Drop pytorch_model.bin",
    )
    repo.create_branch("dev", "main")
    repo.commit(
        {
            "config.json": _config("dev"),
            "model.safetensors": tiny_safetensors(model_size, "weights-dev"),
            "sub/dev-notes.txt": "dev branch only\n",
        },
        branch="dev",
        message="Retrain on dev",
    )
    return repo


def main(argv: list[str] | None = None) -> None:
    """Serve the demo repo until interrupted; the first line printed is the endpoint."""
    parser = argparse.ArgumentParser(description="Serve a tiny Hugging Face Hub-compatible repo for tests.")
    parser.add_argument("--port", type=int, default=0, help="hub port (0 = any free port)")
    parser.add_argument("--model-mib", type=float, default=3.0, help="size of model.safetensors in MiB")
    parser.add_argument("--minimal", action="store_true",
                        help="serve only what a minimal mirror serves (snapshot_download's requests)")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    repo = make_demo_repo(int(args.model_mib * MiB))
    with HubServer([repo], port=args.port, minimal=args.minimal, quiet=not args.verbose) as server:
        print(server.url, flush=True)
        print(f"# HF_ENDPOINT={server.url} hf download {repo.repo_id} (CDN at {server.cdn_url})", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)


if __name__ == "__main__":
    main()
