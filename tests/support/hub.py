"""A small, stdlib-only, Hugging Face Hub-compatible HTTP server for tests.

The real ``huggingface_hub`` client (``snapshot_download``, ``hf_hub_download``, ``HfApi().model_info``, the ``hf``
CLI) can download from it through ``endpoint=`` or ``HF_ENDPOINT``. It mimics the read-only part of the Hub
protocol used by huggingface_hub 2.4:

* ``GET /api/{models,datasets}/{repo_id}[/revision/{rev}]`` - repo info (``sha``, ``siblings``, ``pipeline_tag``...)
* ``GET /api/{type}s/{repo_id}/tree/{rev}[/{path}]?recursive=...`` - listing, cursor-paginated with ``Link``
* ``GET /api/{type}s/{repo_id}/refs`` and ``/commits/{rev}`` - refs and history
* ``HEAD|GET /[datasets/]{repo_id}/resolve/{rev}/{path}`` - regular files are served directly (``ETag`` = quoted git
  blob sha1, ``Content-Length``, ``Range``); "LFS" files answer ``302`` to a content-addressed CDN URL with
  ``X-Linked-Etag`` (sha256) and ``X-Linked-Size``. Every answer carries ``X-Repo-Commit``.
* Errors carry ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``, ``GatedRepo``) and
  ``X-Error-Message`` plus a JSON body ``{"error": ...}``, like the Hub.

Deliberate limits (be honest about what this is): read-only (no uploads), no Xet (never sends ``X-Xet-*`` headers or
``xetHash``, so the client always uses plain HTTP), no compression, one default CDN per server. The CDN listens on a
second port by default: the client follows same-origin redirects during its metadata ``HEAD`` (and would then miss
``X-Repo-Commit``), and strips ``Authorization`` only for other origins, exactly as with the real Hub's CDN.

``minimal=True`` (``--minimal``) serves only what a minimal mirror serves - the requests ``snapshot_download``
makes and nothing else, as many self-hosted mirrors do (huggingface_hub issue #3681):

* ``GET /api/models/{repo_id}/revision/{rev}`` with ``id`` and ``sha`` only (no ``pipeline_tag``, ``siblings``,
  ``cardData``, ``lastModified``, ``private``, ``gated``...);
* ``GET /api/models/{repo_id}/tree/{commit}?recursive=true`` of a full commit sha (no ``lastCommit``);
* ``HEAD|GET /{repo_id}/resolve/{commit}/{path}`` of a full commit sha, and the CDN.

Everything else - the bare ``GET /api/models/{repo_id}``, refs, commits, a tree or file by branch name, datasets -
answers a plain ``404`` ``{"detail": "Not Found"}`` (a web framework's default: no ``X-Error-Code``, no
``X-Error-Message``), the way such mirrors answer an endpoint they lack. The endpoints served still answer a missing
repo, revision or file like the Hub (``X-Error-Code``). ``unserved`` (a set of route names: ``info``, ``revision``,
``tree``, ``commits``, ``refs``, ``resolve``) turns more routes into that plain 404, on either kind of server.

Run ``python tests/hubserver.py --port 8080`` to serve the demo repo by hand (``--minimal`` for a minimal mirror).
"""

from __future__ import annotations

import argparse
import base64
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
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

__all__ = [
    "DEMO_REPO_ID",
    "Commit",
    "HubFile",
    "HubRepo",
    "HubServer",
    "MiB",
    "RecordedRequest",
    "make_demo_repo",
    "pseudo_random_bytes",
    "tiny_safetensors",
]

MiB = 1024 * 1024
DEMO_REPO_ID = "bfjobs-test/tiny-model"
DEFAULT_LFS_PATTERNS: tuple[str, ...] = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.gguf", "*.onnx")
_FULL_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
_SHORT_SHA_RE = re.compile(r"^[0-9a-f]{7,39}$")
_BASE_DATE = datetime(2024, 1, 1, tzinfo=UTC)
_REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_RESOLVE_PREFIXES = {"datasets": "dataset", "spaces": "space"}
#: Routes a minimal mirror lacks: the bare repo info, refs and commit history.
_MIRROR_UNSERVED = {"info", "refs", "commits"}


def _git_blob_sha1(data: bytes) -> str:
    """Return the git object id of a blob with this content."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _iso(date: datetime) -> str:
    """Format a date like the Hub does (``2024-01-01T00:00:00.000Z``)."""
    return date.strftime("%Y-%m-%dT%H:%M:%S.000Z")


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
    """An immutable commit: a 40-hex ``sha``, its parent and a full snapshot of the files."""

    sha: str
    parent: str | None
    message: str
    date: datetime
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
    """An in-memory repo with branches and tags pointing to commits; thread-safe for concurrent reads/updates.

    Files whose size is ``>= lfs_threshold`` or whose basename matches ``lfs_patterns`` are "LFS" files.
    Branch names may also be full refs such as ``refs/pr/1`` (listed as pull requests by ``/refs``).
    """

    def __init__(
        self,
        repo_id: str,
        *,
        repo_type: Literal["model", "dataset", "space"] = "model",
        pipeline_tag: str | None = None,
        library_name: str | None = None,
        tags: Iterable[str] = (),
        lfs_threshold: int = MiB,
        lfs_patterns: Iterable[str] = DEFAULT_LFS_PATTERNS,
        default_branch: str = "main",
    ) -> None:
        self.repo_id = repo_id
        self.repo_type = repo_type
        self.pipeline_tag = pipeline_tag
        self.library_name = library_name
        self.tags_list = list(tags)
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
            seq = len(self.commits)
            listing = "".join(f"{p}\0{f.blob_id}\n" for p, f in sorted(snapshot.items()))
            header = f"repo {self.repo_type}/{self.repo_id}\nseq {seq}\nparent {parent}\nmessage {message}\n"
            sha = hashlib.sha1((header + listing).encode()).hexdigest()
            self.commits[sha] = Commit(sha, parent, message, _BASE_DATE + timedelta(hours=seq), snapshot)
            for f in snapshot.values():
                if f.sha256 is not None:
                    self._lfs_blobs.setdefault(f.sha256, f.data)
            self.branches[branch] = sha
            return sha

    def create_branch(self, name: str, revision: str | None = None) -> str:
        """Create (or reset) branch ``name`` at ``revision`` (default branch head by default); return the sha."""
        return self.set_branch(name, revision or self.default_branch)

    def set_branch(self, name: str, revision: str) -> str:
        """Point branch ``name`` at ``revision`` (e.g. to move it back in history); return the sha."""
        with self._lock:
            sha = self._must_resolve(revision)
            self.branches[name] = sha
            return sha

    def create_tag(self, name: str, revision: str | None = None) -> str:
        """Create (or move) tag ``name`` at ``revision``; return the sha."""
        with self._lock:
            sha = self._must_resolve(revision or self.default_branch)
            self.tags[name] = sha
            return sha

    def resolve(self, revision: str) -> str | None:
        """Resolve a branch, tag, ``refs/heads/x``, ``refs/tags/x``, ``refs/pr/n`` or (short) sha to a commit sha."""
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

    def history(self, revision: str) -> list[Commit]:
        """Commits reachable from ``revision``, newest first."""
        out: list[Commit] = []
        commit = self.get_commit(revision)
        while commit is not None:
            out.append(commit)
            commit = self.commits.get(commit.parent) if commit.parent else None
        return out

    def last_commit_for(self, commit: Commit, path: str, oid: str) -> Commit:
        """The most recent ancestor of ``commit`` that changed ``path`` (file or directory oid ``oid``)."""
        while commit.parent is not None:
            parent = self.commits[commit.parent]
            f = parent.files.get(path)
            if f is not None:
                parent_oid: str | None = f.blob_id
            else:
                parent_oid = parent.tree_oid(path) if path in parent.directories() else None
            if parent_oid != oid:
                break
            commit = parent
        return commit

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
        """The path with percent-escapes decoded (``refs%2Fpr%2F1`` -> ``refs/pr/1``)."""
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


class HubServer:
    """Hub-compatible server on ``host`` (127.0.0.1) with a free port by default; use as a context manager.

    Switches (plain attributes, may be changed while running):

    * ``require_token``: when set, every hub request (not the CDN, which uses "signed" URLs like the real one) needs
      ``Authorization: Bearer <token>``. Missing -> 401 with ``X-Error-Code: GatedRepo`` (``auth_mode="gated"``,
      client raises ``GatedRepoError``) or ``RepoNotFound`` (``auth_mode="private"``, ``RepositoryNotFoundError``).
      Wrong token -> 401 "Invalid credentials in Authorization header" (plain ``HfHubHTTPError``).
    * ``fail_mid_file``: repo path of a file whose GET body is broken at byte ``fail_at`` (default: half the file),
      ``fail_times`` more times (decremented on each injected failure; ``failures_injected`` counts them).
      ``fail_mode="close"`` ends the connection cleanly (the client sees a truncated body, waits 1 s and retries up
      to 5 times without progress, resuming with ``Range`` from the last 10 MiB boundary it received), ``"reset"``
      aborts it with a TCP RST (buffered bytes may be lost; huggingface_hub 2.4 does not retry that). A response
      whose range starts at/after the break point sends its headers only.
    * ``delay_per_chunk``: seconds to sleep after each ``chunk_size`` bytes of file bodies (slow downloads).
    * ``tree_page_size``: entries per page of ``/tree`` (``Link: <...>; rel="next"`` pagination).
    * ``minimal``: serve only what a minimal mirror serves (see the module docstring); ``unserved``: route names
      answered with a plain 404 (no ``X-Error-Code``) as by a mirror lacking them.

    ``host`` must be an IPv4 address. ``separate_cdn=False`` serves the CDN on the hub port instead; huggingface_hub
    then follows the redirect in its metadata HEAD and fails on the missing ``X-Repo-Commit`` (kept to show why).
    """

    def __init__(
        self,
        repos: Iterable[HubRepo] = (),
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        cdn_port: int = 0,
        separate_cdn: bool = True,
        require_token: str | None = None,
        auth_mode: Literal["gated", "private"] = "gated",
        fail_mid_file: str | None = None,
        fail_times: int = 1,
        fail_at: int | None = None,
        fail_mode: Literal["close", "reset"] = "close",
        delay_per_chunk: float = 0.0,
        chunk_size: int = 64 * 1024,
        tree_page_size: int = 1000,
        minimal: bool = False,
        unserved: Iterable[str] = (),
        quiet: bool = True,
    ) -> None:
        self.repos: dict[tuple[str, str], HubRepo] = {}
        for repo in repos:
            self.add_repo(repo)
        self.host = host
        self.require_token = require_token
        self.auth_mode = auth_mode
        self.fail_mid_file = fail_mid_file
        self.fail_times = fail_times
        self.fail_at = fail_at
        self.fail_mode = fail_mode
        self.failures_injected = 0
        self.delay_per_chunk = delay_per_chunk
        self.chunk_size = chunk_size
        self.tree_page_size = tree_page_size
        self.minimal = minimal
        self.unserved = set(unserved) | (_MIRROR_UNSERVED if minimal else set())
        self.quiet = quiet
        self.separate_cdn = separate_cdn
        self._want_port = port
        self._want_cdn_port = cdn_port
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._stopping = threading.Event()
        self._listeners: list[_Listener] = []
        self._threads: list[threading.Thread] = []

    # -- repos & request log ------------------------------------------------------------------------------------
    def add_repo(self, repo: HubRepo) -> HubRepo:
        """Serve ``repo`` (replacing a repo with the same type and id)."""
        self.repos[(repo.repo_type, repo.repo_id)] = repo
        return repo

    def get_repo(self, repo_id: str, repo_type: str = "model") -> HubRepo:
        """The served repo with this id."""
        return self.repos[(repo_type, repo_id)]

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot (copy) of every request received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        """Forget the recorded requests."""
        with self._lock:
            self._requests.clear()

    def _record(self, rec: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(rec)

    def _take_failure(self, path: str, size: int, start: int, end: int) -> int | None:
        """Return how many body bytes to send before breaking this response, or None to send it all."""
        with self._lock:
            if self.fail_mid_file is None or path != self.fail_mid_file or self.fail_times <= 0 or size == 0:
                return None
            cut = size // 2 if self.fail_at is None else self.fail_at
            if cut > end:  # this range ends before the break point
                return None
            self.fail_times -= 1
            self.failures_injected += 1
            return max(0, cut - start)

    # -- lifecycle ----------------------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        """Port of the hub listener."""
        return self._started()[0].server_address[1]

    @property
    def cdn_port(self) -> int:
        """Port of the CDN listener (same as ``port`` when ``separate_cdn=False``)."""
        return self._started()[-1].server_address[1]

    def _started(self) -> list[_Listener]:
        if not self._listeners:
            raise RuntimeError("HubServer is not running: call start() or use it as a context manager")
        return self._listeners

    @property
    def url(self) -> str:
        """Endpoint to pass as ``endpoint=`` / ``HF_ENDPOINT`` (no trailing slash)."""
        return f"http://{self.host}:{self.port}"

    @property
    def cdn_url(self) -> str:
        """Base URL of the CDN that LFS files redirect to."""
        return f"http://{self.host}:{self.cdn_port}"

    def start(self) -> HubServer:
        """Bind the listeners and serve in background threads."""
        if self._listeners:
            raise RuntimeError("server already started")
        self._stopping.clear()
        self._listeners.append(_Listener((self.host, self._want_port), self, "hub"))
        if self.separate_cdn:
            self._listeners.append(_Listener((self.host, self._want_cdn_port), self, "cdn"))
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
        return f"HubServer({state}, repos={sorted(r for _, r in self.repos)})"


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

    def do_POST(self) -> None:
        self._dispatch(head=False, unsupported=True)

    do_PUT = do_DELETE = do_PATCH = do_POST

    def _dispatch(self, *, head: bool, unsupported: bool = False) -> None:
        hub = self.server.hub
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
        hub._record(self.rec)
        self.head_only = head
        self.query = parse_qs(split.query)
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)  # keep the keep-alive connection usable
        try:
            segments = split.path.split("/")[1:]
            if unsupported:
                self._error(405 if self.server.name == "hub" else 404, None, "Method not supported by test hub")
            elif segments and segments[0] == "cdn" and (self.server.name == "cdn" or not hub.separate_cdn):
                self._cdn(segments[1:])
            elif self.server.name == "cdn":
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
        if "X-Request-Id" not in headers:
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
            if hub.auth_mode == "private":
                self._error(401, "RepoNotFound", "Invalid username or password.")
            else:
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
        if self._served(segments):
            self._route_hub(segments)
        else:
            self._not_found_plain()

    def _served(self, segments: list[str]) -> bool:
        """Whether this server serves the route (``minimal`` and ``unserved``); the Hub serves all."""
        hub = self.server.hub
        api = len(segments) >= 3 and segments[0] == "api" and segments[1] in _REPO_TYPES
        if hub.minimal and (segments[1:2] in (["datasets"], ["spaces"]) or segments[:1] in (["datasets"], ["spaces"])):
            return False  # models only
        if not api:
            if "resolve" not in segments:
                return True  # unknown paths answer the Hub's own 404 (or the minimal mirror's below)
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

    def _route_hub(self, segments: list[str]) -> None:
        if len(segments) >= 3 and segments[0] == "api" and segments[1] in _REPO_TYPES:
            repo_type = _REPO_TYPES[segments[1]]
            repo, rest = self._match_repo(repo_type, segments[2:])
            if repo is None:
                return self._repo_not_found()
            if not rest:
                return self._info(repo, repo.default_branch)
            if rest[0] == "revision" and len(rest) >= 2:
                return self._info(repo, unquote("/".join(rest[1:])))
            if rest[0] in ("tree", "commits") and len(rest) >= 2:
                revision, path_segments = _split_revision(rest[1:])
                path = "/".join(unquote(s) for s in path_segments).strip("/")
                if rest[0] == "tree":
                    return self._tree(repo, revision, path)
                if not path:
                    return self._commits(repo, revision)
            if rest == ["refs"]:
                return self._refs(repo)
            return self._page_not_found()
        repo_type = "model"
        if segments and segments[0] in _RESOLVE_PREFIXES:
            repo_type, segments = _RESOLVE_PREFIXES[segments[0]], segments[1:]
        if "resolve" in segments:
            repo, rest = self._match_repo(repo_type, segments)
            if repo is None:
                return self._repo_not_found()
            if len(rest) >= 3 and rest[0] == "resolve":
                revision, path_segments = _split_revision(rest[1:])
                if path_segments:
                    return self._resolve(repo, revision, "/".join(unquote(s) for s in path_segments))
        return self._page_not_found()

    def _page_not_found(self) -> None:
        if self.server.hub.minimal:
            return self._not_found_plain()
        return self._error(404, None, "Sorry, we can't find the page you are looking for.")

    def _match_repo(self, repo_type: str, segments: list[str]) -> tuple[HubRepo | None, list[str]]:
        repos = self.server.hub.repos
        names = [unquote(s) for s in segments[:2]]
        if len(names) == 2 and (repo_type, "/".join(names)) in repos:
            return repos[(repo_type, "/".join(names))], segments[2:]
        if names and (repo_type, names[0]) in repos:
            return repos[(repo_type, names[0])], segments[1:]
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
        hub = self.server.hub
        blobs = self.query.get("blobs", ["false"])[0].lower() in ("1", "true")
        siblings = []
        for path, f in sorted(commit.files.items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                sibling.update(size=f.size, blobId=f.blob_id)
                if f.is_lfs:
                    sibling["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": f.pointer_size}
            siblings.append(sibling)
        if hub.minimal:  # what snapshot_download needs (ModelInfo requires ``id``), nothing optional
            return self._json({"id": repo.repo_id, "sha": commit.sha})
        first = repo.history(revision)[-1]
        gated: str | bool = "auto" if hub.require_token and hub.auth_mode == "gated" else False
        data: dict[str, Any] = {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0] if "/" in repo.repo_id else None,
            "sha": commit.sha,
            "lastModified": _iso(commit.date),
            "createdAt": _iso(first.date),
            "private": bool(hub.require_token and hub.auth_mode == "private"),
            "gated": gated,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": list(repo.tags_list),
            "siblings": siblings,
            "usedStorage": sum(f.size for f in commit.files.values()),
        }
        if repo.repo_type == "model":
            data.update(modelId=repo.repo_id, pipeline_tag=repo.pipeline_tag, library_name=repo.library_name)
        expand = self.query.get("expand", []) + self.query.get("expand[]", [])
        if expand:
            data = {k: v for k, v in data.items() if k in ("_id", "id") or k in expand}
        self._json(data)

    def _tree(self, repo: HubRepo, revision: str, path: str) -> None:
        commit = self._commit_or_error(repo, revision)
        if commit is None:
            return
        directories = commit.directories()
        if path and path not in directories:
            self._error(404, "EntryNotFound", f'{path} does not exist on "{revision}"', _commit_header(commit))
            return
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        expand = self.query.get("expand", ["false"])[0].lower() in ("1", "true")
        prefix = path + "/" if path else ""

        def wanted(p: str) -> bool:
            return p.startswith(prefix) and (recursive or "/" not in p[len(prefix) :])

        entries: list[dict[str, Any]] = []
        for p in sorted(set(commit.files) | directories):
            if not wanted(p):
                continue
            f = commit.files.get(p)
            if f is None:
                entry: dict[str, Any] = {"type": "directory", "oid": commit.tree_oid(p), "size": 0, "path": p}
            else:
                entry = {"type": "file", "oid": f.blob_id, "size": f.size, "path": p}
                if f.is_lfs:
                    entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": f.pointer_size}
            if expand and not self.server.hub.minimal:
                last = repo.last_commit_for(commit, p, entry["oid"])
                entry["lastCommit"] = {"id": last.sha, "title": last.message, "date": _iso(last.date)}
            entries.append(entry)
        self._paginated(entries, _commit_header(commit))

    def _paginated(self, items: list[Any], headers: dict[str, str]) -> None:
        """Send one page of ``items`` with an opaque ``cursor`` and a ``Link: rel="next"`` header if needed."""
        page_size = max(1, self.server.hub.tree_page_size)
        cursor = self.query.get("cursor", [""])[0]
        try:
            offset = int(base64.urlsafe_b64decode(cursor.encode()).decode()) if cursor else 0
        except ValueError:
            self._error(400, None, "Invalid cursor")
            return
        page = items[offset : offset + page_size]
        if offset + page_size < len(items):
            params = {k: v[-1] for k, v in self.query.items()}
            params["cursor"] = base64.urlsafe_b64encode(str(offset + page_size).encode()).decode()
            host = self.headers.get("Host") or f"{self.server.hub.host}:{self.server.hub.port}"
            headers = {**headers, "Link": f'<http://{host}{urlsplit(self.path).path}?{urlencode(params)}>; rel="next"'}
        self._json(page, headers)

    def _commits(self, repo: HubRepo, revision: str) -> None:
        if self._commit_or_error(repo, revision) is None:
            return
        items = [
            {
                "id": c.sha,
                "title": c.message,
                "message": c.message,
                "authors": [{"user": "bfjobs-test"}],
                "date": _iso(c.date),
            }
            for c in repo.history(revision)
        ]
        self._paginated(items, {})

    def _refs(self, repo: HubRepo) -> None:
        with repo._lock:
            branches = dict(repo.branches)
            tags = dict(repo.tags)

        def ref(name: str, full: str, sha: str) -> dict[str, str]:
            return {"name": name, "ref": full, "targetCommit": sha}

        data: dict[str, Any] = {
            "branches": [ref(n, f"refs/heads/{n}", s) for n, s in branches.items() if not n.startswith("refs/")],
            "converts": [],
            "tags": [ref(n, f"refs/tags/{n}", s) for n, s in tags.items()],
        }
        if self.query.get("include_prs"):
            data["pullRequests"] = [ref(n, n, s) for n, s in branches.items() if n.startswith("refs/pr/")]
        self._json(data)

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
            "Access-Control-Expose-Headers": "X-Repo-Commit,X-Linked-Etag,X-Linked-Size,ETag,Content-Range",
        }
        if f.is_lfs:
            location = f"{self.server.hub.cdn_url}/cdn/{f.sha256}?{urlencode({'path': path})}"
            headers.update({"X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(f.size), "Location": location})
            body = f"Found. Redirecting to {location}".encode()
            self._send(302, {"Content-Type": "text/plain; charset=utf-8", **headers}, body)
            return
        self._send_file(f.data, path, {"Content-Type": _content_type(path), **headers})

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
            "Cache-Control": "public, max-age=604800, immutable",
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
            chunk = view[pos : min(pos + hub.chunk_size, stop_at)]
            self.wfile.write(chunk)
            pos += len(chunk)
            self.rec.body_bytes += len(chunk)
            if hub.delay_per_chunk and hub._stopping.wait(hub.delay_per_chunk):
                to_send = to_send if to_send is not None else pos - start  # server stopping: abort
                break
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
    """The route of ``/api/{type}s/{segments}``: ``info`` (the bare repo), ``revision``, ``tree``... (repo ids have
    one or two segments; the route is known even for a repo the server lacks)."""
    for at in (1, 2):
        if len(segments) > at and segments[at] in ("revision", "tree", "commits", "refs"):
            return segments[at]
    return "info" if len(segments) <= 2 else "other"


def _split_revision(segments: list[str]) -> tuple[str, list[str]]:
    """Split ``[rev, *path]``; also accepts an unencoded ``refs/pr/1`` (``refs/heads/x``...) spanning 3 segments."""
    revision = unquote(segments[0])
    if revision == "refs" and len(segments) >= 3:
        return "/".join(unquote(s) for s in segments[:3]), segments[3:]
    return revision, segments[1:]


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


def _content_type(path: str) -> str:
    if path.endswith(".json"):
        return "application/json; charset=utf-8"
    if path.endswith((".md", ".txt", ".py", ".gitattributes", ".yaml", ".yml")):
        return "text/plain; charset=utf-8"
    return "application/octet-stream"


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
    repo = HubRepo(
        repo_id,
        pipeline_tag="text-generation",
        library_name="transformers",
        tags=["transformers", "safetensors", "text-generation"],
    )
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
    """Serve the demo repo until interrupted."""
    parser = argparse.ArgumentParser(description="Serve a tiny Hugging Face Hub-compatible repo for tests.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="hub port (0 = any free port)")
    parser.add_argument("--cdn-port", type=int, default=0, help="CDN port (0 = any free port)")
    parser.add_argument("--model-mib", type=float, default=3.0, help="size of model.safetensors in MiB")
    parser.add_argument("--require-token", default=None)
    parser.add_argument("--delay-per-chunk", type=float, default=0.0)
    parser.add_argument("--minimal", action="store_true",
                        help="serve only what a minimal mirror serves (snapshot_download's requests)")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    repo = make_demo_repo(int(args.model_mib * MiB))
    server = HubServer(
        [repo],
        host=args.host,
        port=args.port,
        cdn_port=args.cdn_port,
        require_token=args.require_token,
        delay_per_chunk=args.delay_per_chunk,
        minimal=args.minimal,
        quiet=not args.verbose,
    )
    with server:
        print(server.url, flush=True)
        print(f"# HF_ENDPOINT={server.url} hf download {repo.repo_id} (CDN at {server.cdn_url})", flush=True)
        print(f"# refs: branches={repo.branches} tags={repo.tags}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
