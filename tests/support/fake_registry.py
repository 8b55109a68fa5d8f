"""A hostile OCI registry for fault tests: stdlib only, 127.0.0.1, a free port.

It serves ``GET|HEAD /v2/``, ``/v2/<name>/manifests/<tag or digest>`` and ``/v2/<name>/blobs/<digest>`` for any
repository name. Each repository holds one small, valid single-platform OCI image (a config and one layer, both
derived from the name, so two names have two digests); the *mode*, the first component of the name that is one
(``docker://127.0.0.1:PORT/test/wrong-digest:v1`` and ``.../wrong-digest/image:v1`` are both in mode
``wrong-digest``), decides how it is served. Any tag names the image, a digest only its own; names without a mode
are served honestly (mode ``good``).

Modes (:data:`MODES`):

``good``                the image, ``Docker-Content-Digest`` right, as a real registry serves it.
``missing``             every manifest ``404 MANIFEST_UNKNOWN`` (the registry's body), as for an unknown tag.
``bad-digest``          ``Docker-Content-Digest: sha256:xyz`` (malformed), body the good manifest.
``bad-digest-long``     ``Docker-Content-Digest`` of ``sha256:`` and 16 KiB of hex digits.
``bad-digest-newline``  ``Docker-Content-Digest`` folded over two lines (obs-fold: ``sha256:<32 hex>\\r\\n <32 hex>``).
``wrong-digest``        ``Docker-Content-Digest`` a well-formed digest that is not the body's.
``no-digest``           no ``Docker-Content-Digest`` at all (``HEAD`` and ``GET``); ``GET`` gives the valid manifest.
``bad-blob``            manifest right, but the layer blob's bytes do not match their digest.
``huge``                a 64 MiB manifest (valid JSON, a huge annotation), streamed with an honest
                        ``Content-Length`` and its true digest.
``huge-chunked``        the same without ``Content-Length``: the body ends when the connection closes.
``slow``                every request under the name waits :attr:`FakeRegistry.slow_seconds` (default 30) first.
``bearer``              without ``Authorization: Bearer <token>``: ``401`` + ``WWW-Authenticate: Bearer
                        realm="http://HOST/token",service="fake",scope="repository:<name>:pull"``; ``GET /token``
                        answers ``{"token": ..., "access_token": ...}``; with the token: the good image.
``private-bearer``      as ``bearer``, but the token service refuses anonymous requests (``401``, as private
                        ghcr.io packages) and hands a token only for the basic :attr:`credentials`.
``basic``               without ``Authorization: Basic`` of :attr:`FakeRegistry.credentials`: ``401`` +
                        ``WWW-Authenticate: Basic realm="fake"`` and ``UNAUTHORIZED``; then the good image.
``redirect``            the good image, but blobs answer ``307`` to ``...?cdn=1`` first (as registries send
                        clients to a CDN); the redirected request is recorded like the others.
``redirect-loop``       manifests and blobs answer ``302`` to ``...?loop=1``, which answers ``302`` back.
``html``                ``200 text/html`` garbage (a captive portal or a proxy's error page) for manifests and blobs.

Every request is recorded (:attr:`FakeRegistry.requests`, :class:`FakeRequest`: method, path, query, headers -
looked up case-insensitively, ``Authorization`` with its scheme only, ``"Basic [redacted]"`` -, the auth scheme and,
for Basic, the user name; never a password or token), so tests can assert what a client sent, e.g. whether basic
credentials reached the token endpoint. A record also reads like a dict: ``rec["path"]``.

    with FakeRegistry() as fake:
        uri = fake.uri("test/wrong-digest", "v1")   # docker://127.0.0.1:PORT/test/wrong-digest:v1
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from support.hub import RequestLog
from support.registry import Addresses

__all__ = ["HUGE_SIZE", "MODES", "FakeRegistry", "FakeRequest", "Headers"]

MODES = (
    "good", "missing", "bad-digest", "bad-digest-long", "bad-digest-newline", "wrong-digest", "no-digest", "bad-blob",
    "huge", "huge-chunked", "slow", "bearer", "private-bearer", "basic", "redirect", "redirect-loop", "html",
)
HUGE_SIZE = 64 * 1024 * 1024
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
_CHUNK = 1024 * 1024


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Headers(dict):
    """Request headers, keys lower-case, looked up case-insensitively (``"Authorization" in headers``)."""

    def __contains__(self, key: object) -> bool:
        return super().__contains__(key.lower() if isinstance(key, str) else key)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)


@dataclass
class FakeRequest:
    """One request the fake registry received. ``headers[\"authorization\"]`` holds the scheme only
    (``"Bearer [redacted]"``); ``auth`` is that scheme (``"basic"``, ``"bearer"`` or ``None``), ``auth_user`` the
    Basic user name. ``rec["path"]`` reads a field like ``rec.path``."""

    method: str
    path: str
    query: str
    headers: Headers
    auth: str | None
    auth_user: str | None
    status: int | None = None

    def __getitem__(self, field: str) -> Any:
        return getattr(self, field)


@dataclass
class _Image:
    config: bytes
    layer: bytes
    manifest: bytes

    @property
    def digest(self) -> str:
        return _digest(self.manifest)


def _image(name: str, padding: int = 0) -> _Image:
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []},
                         "config": {"Labels": {"name": name}}}).encode()
    layer = b"layer of " + name.encode() + b"\n"
    manifest: dict[str, Any] = {
        "schemaVersion": 2, "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _digest(config),
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": _digest(layer),
                    "size": len(layer)}],
    }
    body = json.dumps(manifest).encode()
    if padding:  # a valid manifest of exactly `padding` bytes: an annotation fills it up
        manifest["annotations"] = {"pad": ""}
        fill = padding - len(json.dumps(manifest).encode())
        manifest["annotations"]["pad"] = "x" * fill
        body = json.dumps(manifest).encode()
        assert len(body) == padding
    return _Image(config, layer, body)


class FakeRegistry(Addresses, RequestLog["FakeRequest"]):
    """The hostile registry; a context manager. ``slow_seconds``, ``credentials`` and ``token`` may be changed
    while it runs."""

    def __init__(self, *, slow_seconds: float = 30.0, credentials: tuple[str, str] = ("fake-user", "fake-pass"),
                 token: str = "fake-token-0123456789") -> None:
        self.slow_seconds = slow_seconds
        self.credentials = credentials
        self.token = token
        self._requests: list[FakeRequest] = []
        self._lock = threading.Lock()
        self._images: dict[tuple[str, int], _Image] = {}
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle ---------------------------------------------------------------------------------------------
    def start(self) -> FakeRegistry:
        if self._server is not None:
            raise RuntimeError("fake registry already started")
        self._stopping.clear()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.fake = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-registry", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes the `slow` handlers
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> FakeRegistry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses and content ----------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("fake registry not started")
        return self._server.server_address[1]

    @staticmethod
    def mode(name: str) -> str:
        """The mode of repository ``name``: its first path component that names one, else ``good``."""
        return next((part for part in name.split("/") if part in MODES), "good")

    def image(self, name: str) -> _Image:
        """The image ``name`` holds (``.manifest``, ``.config``, ``.layer`` bytes, ``.digest``)."""
        padding = HUGE_SIZE if self.mode(name).startswith("huge") else 0
        with self._lock:
            if (name, padding) not in self._images:
                self._images[(name, padding)] = _image(name, padding)
            return self._images[(name, padding)]

    def manifest_digest(self, name: str) -> str:
        """The true digest of the manifest ``name`` serves."""
        return self.image(name).digest


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "bfjobs-fake-registry/1.0"
    disable_nagle_algorithm = True
    timeout = 60

    def log_message(self, format: str, *args: Any) -> None:
        pass

    @property
    def fake(self) -> FakeRegistry:
        return self.server.fake  # type: ignore[attr-defined]

    def send_response(self, code: int, message: str | None = None) -> None:
        rec = getattr(self, "rec", None)  # None for errors raised by http.server itself (400, 501...)
        if rec is not None:
            rec.status = code
        super().send_response(code, message)

    def do_GET(self) -> None:
        self._dispatch(head=False)

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def _dispatch(self, *, head: bool) -> None:
        split = urlsplit(self.path)
        auth = self.headers.get("Authorization", "")
        scheme, _, value = auth.partition(" ")
        user = None
        if scheme.lower() == "basic":
            with contextlib.suppress(ValueError):
                user = base64.b64decode(value).decode(errors="replace").partition(":")[0]
        headers = Headers({k.lower(): v for k, v in self.headers.items()})
        if auth:
            headers["authorization"] = f"{scheme} [redacted]"
        self.rec = FakeRequest(self.command, split.path, split.query, headers, scheme.lower() or None, user)
        self.fake._record(self.rec)
        self.head, self.auth, self.query = head, auth, parse_qs(split.query)
        try:
            self._route(split.path)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True

    # -- answers ------------------------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Docker-Distribution-Api-Version", "registry/2.0")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not self.head:
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        body = json.dumps({"errors": [{"code": code, "message": message, "detail": None}]}).encode()
        self._send(status, body, headers)

    def _route(self, path: str) -> None:
        fake = self.fake
        if path == "/token":
            scope = (self.query.get("scope") or [""])[0]
            basic = "Basic " + base64.b64encode(":".join(fake.credentials).encode()).decode()
            token = fake.token
            if fake.mode(scope.split(":")[1] if scope.count(":") == 2 else "") == "private-bearer":
                if self.auth != basic:  # as private ghcr.io packages: no anonymous token at all
                    return self._error(401, "UNAUTHORIZED", "authentication required")
                token = fake.token + "-private"
            body = json.dumps({"token": token, "access_token": token, "expires_in": 300}).encode()
            return self._send(200, body)
        if path in ("/v2", "/v2/"):
            return self._send(200, b"{}")
        parts = path[len("/v2/"):].split("/") if path.startswith("/v2/") else []
        if len(parts) < 3 or parts[-2] not in ("manifests", "blobs"):
            return self._error(404, "NOT_FOUND", "not found")
        name, kind, ref = "/".join(parts[:-2]), parts[-2], parts[-1]
        mode = fake.mode(name)
        if mode == "slow" and fake._stopping.wait(fake.slow_seconds):
            return
        wanted = f"Bearer {fake.token}-private" if mode == "private-bearer" else f"Bearer {fake.token}"
        if mode in ("bearer", "private-bearer") and self.auth != wanted:
            challenge = f'Bearer realm="{fake.url}/token",service="fake",scope="repository:{name}:pull"'
            return self._error(401, "UNAUTHORIZED", "authentication required", {"WWW-Authenticate": challenge})
        basic = "Basic " + base64.b64encode(":".join(fake.credentials).encode()).decode()
        if mode == "basic" and self.auth != basic:
            return self._error(401, "UNAUTHORIZED", "authentication required",
                               {"WWW-Authenticate": 'Basic realm="fake"'})
        if mode == "redirect" and kind == "blobs" and not self.query.get("cdn"):
            return self._send(307, b"", {"Location": f"{path}?cdn=1"})
        if mode == "redirect-loop":
            target = path if self.query.get("loop") else f"{path}?loop=1"
            return self._send(302, b"", {"Location": target})
        if mode == "html":
            return self._send(200, b"<html><body><h1>Welcome to the proxy</h1>not a manifest</html>",
                              content_type="text/html")
        image = fake.image(name)
        if kind == "blobs":
            return self._blob(image, ref, mode)
        if mode == "missing" or (ref.startswith("sha256:") and ref != image.digest):
            return self._error(404, "MANIFEST_UNKNOWN", "manifest unknown")
        self._manifest(image, mode)

    def _blob(self, image: _Image, ref: str, mode: str) -> None:
        blobs = {_digest(image.config): image.config, _digest(image.layer): image.layer}
        if ref not in blobs:
            return self._error(404, "BLOB_UNKNOWN", "blob unknown to registry")
        data = blobs[ref]
        if mode == "bad-blob" and data is image.layer:
            data = data.replace(b"layer", b"LAYER")
        self._send(200, data, {"Docker-Content-Digest": ref}, content_type="application/octet-stream")

    def _manifest(self, image: _Image, mode: str) -> None:
        digest = image.digest
        header = {
            "bad-digest": "sha256:xyz",
            "bad-digest-long": "sha256:" + "ab" * 8192,
            "bad-digest-newline": f"{digest[:39]}\r\n {digest[39:]}",
            "wrong-digest": _digest(b"not the manifest"),
            "no-digest": None,
        }.get(mode, digest)
        headers = {"Docker-Content-Digest": header} if header else {}
        if not mode.startswith("huge"):
            return self._send(200, image.manifest, headers, content_type=MANIFEST_TYPE)
        self.send_response(200)
        self.send_header("Content-Type", MANIFEST_TYPE)
        self.send_header("Docker-Content-Digest", digest)
        if mode == "huge":
            self.send_header("Content-Length", str(len(image.manifest)))
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if not self.head:
            view = memoryview(image.manifest)
            for start in range(0, len(view), _CHUNK):
                self.wfile.write(view[start:start + _CHUNK])
