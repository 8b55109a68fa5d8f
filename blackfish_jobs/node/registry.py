"""Asking an OCI registry (the Docker Registry v2 / OCI distribution API) which digest a tag names.

Used at submit (a tag is pinned to its manifest digest before a job is sent, and a moved tag is
seen before anything is replaced), on the node (a tag the login node could not resolve; the
platform manifest an index resolves to), and by ``cache ls --check-upstream``. Only the read
requests a pull starts with: ``HEAD``/``GET /v2/<name>/manifests/<ref>`` and the token flow of
Docker Hub, ghcr.io and quay.io. Blobs are Apptainer's business.

Stdlib only (``urllib``): the node side stays light, and a dozen lines of auth flow did not
justify another dependency. Every answer is distrusted: digests must match ``sha256:<64 hex>``
and the body they name, manifests are read up to :data:`MAX_MANIFEST` bytes, and all requests of
one call share one deadline. Credentials are read when a request needs them, from where
Apptainer keeps them, and never leave this module except in an ``Authorization`` header.

Node-side code: no Click, no database.
"""

from __future__ import annotations

import base64
import hashlib
import json
import platform
import re
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

from .. import constants
from . import records
from .records import short

#: Seconds for every request of one resolution together (connect, token, manifest).
TIMEOUT = 10.0
#: distribution's own limit for a manifest; a bigger answer is refused, not read.
MAX_MANIFEST = 4 * 1024 * 1024
MAX_TOKEN_ANSWER = 64 * 1024
DOCKER_HUB = "registry-1.docker.io"
_HUB_NAMES = ("docker.io", "index.docker.io", DOCKER_HUB)

INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
ACCEPT = ", ".join(INDEX_TYPES + MANIFEST_TYPES)
DIGEST = records.DIGEST
PINNABLE = ("docker", "oras")
_AUTH_PARAM = re.compile(r'(\w+)="([^"]*)"')


class RegistryError(Exception):
    """A registry's answer, in one line with no secret in it."""


class Miss(RegistryError):
    """The registry answered: no such repository, tag or digest."""


class Denied(RegistryError):
    """The registry refused the credentials (or wants some and none are set)."""


class BadAnswer(RegistryError):
    """The registry answered something no registry should: a malformed or mismatched digest,
    an oversized manifest, a token flow that leads nowhere."""


class Unreachable(RegistryError):
    """The registry could not be asked from here: network, TLS, timeout, 5xx."""


@dataclass(frozen=True)
class Reference:
    """A ``docker://`` or ``oras://`` reference split the way ``distribution/reference`` does."""

    scheme: str
    domain: str | None  # as written (None: Docker Hub)
    path: str  # as written (``alpine``, ``vllm/vllm-openai``)
    tag: str | None
    digest: str | None

    @property
    def host(self) -> str:
        """Where the API lives: Docker Hub's names all go to ``registry-1.docker.io``."""
        if self.domain is None or self.domain in _HUB_NAMES:
            return DOCKER_HUB
        return self.domain

    @property
    def repository(self) -> str:
        """The name in API paths: Docker Hub's official images are ``library/<name>``."""
        if self.host == DOCKER_HUB and "/" not in self.path:
            return f"library/{self.path}"
        return self.path

    def pinned(self, digest: str) -> str:
        """The reference a job pulls: the same name, exactly this digest (``docker://x@sha256:…``)."""
        where = f"{self.domain}/" if self.domain else ""
        return f"{self.scheme}://{where}{self.path}@{digest}"


def parse(uri: str) -> Reference | None:
    """``uri`` split for the API, or None for a source whose tags cannot be pinned
    (``library://``, ``shub://``, ``https://``). ``uri`` was validated at submit."""
    scheme, _, rest = uri.partition("://")
    if scheme not in PINNABLE:
        return None
    rest, _, digest = rest.partition("@")
    first, slash, remainder = rest.partition("/")
    domain = None
    if slash and ("." in first or ":" in first or first == "localhost"):
        domain, rest = first, remainder
    path, _, tag = rest.partition(":")  # a path component has no ':' (checked at submit)
    return Reference(scheme, domain, path, tag or None, digest or None)



def node_arch() -> str:
    """This machine's architecture in OCI's words (what Apptainer pulls for it)."""
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)


@dataclass(frozen=True)
class Resolved:
    """A reference's digest and whether it names an index (a multi-arch image) or one manifest."""

    digest: str
    media_type: str

    @property
    def index(self) -> bool:
        return self.media_type in INDEX_TYPES


def _opener() -> Any:
    """An opener that follows a redirect without taking the credentials to another host or down
    to plain HTTP (urllib keeps ``Authorization`` across hosts). urllib is imported here, when a
    registry is asked: ``cache ls`` and the presence checks import this module too."""
    import urllib.request

    class Redirects(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
            new = super().redirect_request(req, fp, code, msg, headers, newurl)
            if new is None:
                return None
            old, moved = urllib.parse.urlsplit(req.full_url), urllib.parse.urlsplit(new.full_url)
            if moved.scheme not in ("https", "http"):
                raise BadAnswer(f"registry {old.netloc} redirected to a {moved.scheme}: URL")
            if old.scheme == "https" and moved.scheme != "https":
                raise BadAnswer(f"registry {old.netloc} redirected to plain HTTP ({moved.netloc})")
            if moved.netloc != old.netloc:
                new.headers.pop("Authorization", None)
                new.unredirected_hdrs.pop("Authorization", None)
            return new

    return urllib.request.build_opener(Redirects())


class Client:
    """One caller's conversation with registries: ``insecure`` lists the ``host:port`` entries
    asked over plain HTTP (``insecure_registries``); tokens are kept per repository for the
    life of the object (one command)."""

    def __init__(self, insecure: tuple[str, ...] | frozenset[str] = (), timeout: float = TIMEOUT) -> None:
        self.insecure = frozenset(insecure)
        self.timeout = timeout
        self._tokens: dict[tuple[str, str], str] = {}
        self._opener = _opener()

    # ------------------------------------------------------------------ public

    def resolve(self, ref: Reference) -> Resolved:
        """The digest ``ref``'s tag (or digest) names now, and its media type.

        ``HEAD`` first (Docker Hub does not count it against pull limits); a registry that sends no
        ``Docker-Content-Digest`` is asked with ``GET`` and the body hashed. A reference by digest
        is checked to exist: the registry's answer must name that digest.
        """
        deadline = time.monotonic() + self.timeout
        wanted = ref.digest or ref.tag or "latest"
        status, headers, _ = self._request(ref, "HEAD", f"manifests/{wanted}", deadline)
        digest = headers.get("Docker-Content-Digest")
        media_type = _media_type(headers)
        if status == 200 and digest is not None:
            digest = _check_digest(ref.host, digest)
        else:  # no digest header (or HEAD not allowed): the body is the proof
            media_type, body = self._manifest(ref, wanted, deadline)
            digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if media_type not in INDEX_TYPES + MANIFEST_TYPES:
            shown = _line(media_type)[:60] or "no content type"
            raise BadAnswer(f"registry {ref.host} answered with {shown!r}, not an image manifest")
        if ref.digest is not None and digest != ref.digest:
            raise BadAnswer(f"registry {ref.host} answered {short(digest)} when asked for {short(ref.digest)}")
        return Resolved(digest, media_type)

    def platform_manifest(self, ref: Reference, digest: str, arch: str | None = None) -> str:
        """The manifest a pull of ``digest`` on this node gets: the index's ``linux/<arch>`` entry,
        or ``digest`` itself when it names a single manifest."""
        deadline = time.monotonic() + self.timeout
        media_type, body = self._manifest(ref, digest, deadline)
        if "sha256:" + hashlib.sha256(body).hexdigest() != digest:
            raise BadAnswer(f"registry {ref.host}: the manifest served for {short(digest)} does not hash to it")
        document = _json(ref.host, body, "manifest")
        if media_type not in INDEX_TYPES and "manifests" not in document:  # one manifest, whatever its type says
            return digest
        arch = arch or node_arch()
        try:
            for entry in document["manifests"]:
                plat = entry.get("platform") or {}
                if plat.get("os") == "linux" and plat.get("architecture") == arch:
                    if entry.get("mediaType") in INDEX_TYPES:
                        raise BadAnswer(f"registry {ref.host}: the index {short(digest)} names another index")
                    return _check_digest(ref.host, entry["digest"])
        except (ValueError, KeyError, TypeError, AttributeError):
            raise BadAnswer(f"registry {ref.host}: the index {short(digest)} is not a valid image index") from None
        raise Miss(f"{ref.pinned(digest)} has no linux/{arch} image")

    # ------------------------------------------------------------------ HTTP

    def _manifest(self, ref: Reference, wanted: str, deadline: float) -> tuple[str, bytes]:
        """A manifest's media type and body: JSON, whole (a short body is refused), ≤ 4 MiB."""
        status, headers, body = self._request(ref, "GET", f"manifests/{wanted}", deadline)
        if status != 200:
            raise BadAnswer(f"registry {ref.host} answered HTTP {status} for a manifest")
        if not isinstance(_json(ref.host, body, "manifest"), dict):
            raise BadAnswer(f"registry {ref.host} sent a manifest that is not a JSON object")
        return _media_type(headers), body

    def _request(self, ref: Reference, method: str, tail: str, deadline: float) -> tuple[int, Any, bytes]:
        """One API request, with the auth flow the registry asks for: a Bearer token asked
        anonymously first (public images need no credentials), then with the credentials, if any,
        when the anonymous token is not enough; Basic with the credentials."""
        url = f"{self._base(ref.host)}/v2/{ref.repository}/{tail}"
        key = (ref.host, ref.repository)
        status, headers, body = self._send(ref.host, method, url, deadline, self._tokens.get(key))
        if status == 401 and key not in self._tokens:
            challenge, bearer = headers.get("WWW-Authenticate") or "", _is_bearer(headers)
            if bearer:  # anonymously first: a public image needs no credentials
                try:
                    self._tokens[key] = self._authorize(ref, challenge, deadline, with_creds=False)
                    status, headers, body = self._send(ref.host, method, url, deadline, self._tokens[key])
                except Denied:  # a token service that gives no anonymous token (private ghcr.io, ACR)
                    status = 401
            if status in (401, 403) and (credentials(ref.host) is not None or not bearer):
                self._tokens[key] = self._authorize(ref, challenge, deadline, with_creds=True)
                status, headers, body = self._send(ref.host, method, url, deadline, self._tokens[key])
        if status in (401, 403):
            raise Denied(f"registry {ref.host} refused access to {ref.repository} ({_why(status, body)}); "
                         "for a private image set APPTAINER_DOCKER_USERNAME/APPTAINER_DOCKER_PASSWORD "
                         "or run `apptainer registry login`")
        if status == 404:
            asked = f"{ref.path}@{ref.digest}" if ref.digest else f"{ref.path}:{ref.tag or 'latest'}"
            raise Miss(f"{ref.scheme}://{ref.domain + '/' if ref.domain else ''}{asked}: manifest unknown "
                       f"({_why(status, body)})")
        if status == 429 or status >= 500:
            raise Unreachable(f"registry {ref.host} answered HTTP {status}")
        if status not in (200, 405) or (status == 405 and method == "GET"):
            raise BadAnswer(f"registry {ref.host} answered HTTP {status} ({_why(status, body)})")
        return status, headers, body

    def _authorize(self, ref: Reference, challenge: str, deadline: float, with_creds: bool) -> str:
        """The ``Authorization`` value a 401's challenge asks for (Basic, or a Bearer token)."""
        scheme, _, rest = challenge.strip().partition(" ")
        creds = credentials(ref.host) if with_creds else None
        if scheme.lower() == "basic":
            if creds is None:
                raise Denied(f"registry {ref.host} wants credentials for {ref.repository}: set "
                             "APPTAINER_DOCKER_USERNAME/APPTAINER_DOCKER_PASSWORD or run `apptainer registry login`")
            return _basic(creds)
        if scheme.lower() != "bearer":
            raise BadAnswer(f"registry {ref.host} asked for an unknown authentication scheme")
        params = dict(_AUTH_PARAM.findall(rest))
        realm = params.get("realm", "")
        try:
            parts = urllib.parse.urlsplit(realm)
            parts.port  # noqa: B018  (a malformed port raises here, not later)
        except ValueError:
            raise BadAnswer(f"registry {ref.host} named no usable token realm") from None
        if parts.scheme not in ("https", "http") or not parts.netloc or any(c.isspace() for c in realm):
            raise BadAnswer(f"registry {ref.host} named no usable token realm")
        if parts.scheme == "http" and not (ref.host in self.insecure and parts.netloc in self.insecure):
            raise BadAnswer(f"registry {ref.host} named a plain-HTTP token realm ({_line(parts.netloc)[:80]})")
        query = {"scope": params.get("scope") or f"repository:{ref.repository}:pull"}
        if params.get("service"):
            query["service"] = params["service"]
        url = realm + ("&" if parts.query else "?") + urllib.parse.urlencode(query)
        auth = _basic(creds) if creds is not None else None
        status, _, body = self._send(parts.netloc, "GET", url, deadline, auth, limit=MAX_TOKEN_ANSWER)
        if status in (401, 403):
            raise Denied(f"registry {ref.host}: the token service refused access to {ref.repository}")
        if status != 200:
            raise Unreachable(f"registry {ref.host}: the token service answered HTTP {status}")
        answer = _json(ref.host, body, "token")
        token = (answer.get("token") or answer.get("access_token")) if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token or any(not c.isprintable() or c.isspace() for c in token):
            raise BadAnswer(f"registry {ref.host}: the token service sent no usable token")
        return f"Bearer {token}"

    def _base(self, host: str) -> str:
        return f"{'http' if host in self.insecure else 'https'}://{host}"

    def _send(
        self, host: str, method: str, url: str, deadline: float, auth: str | None, limit: int = MAX_MANIFEST
    ) -> tuple[int, Any, bytes]:
        """One request under the deadline, whatever the server does (a slow drip of headers or
        body included): made in a daemon thread that is abandoned when time is up."""
        import threading

        remaining = deadline - time.monotonic()
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["answer"] = self._send_now(host, method, url, remaining, auth, limit)
            except BaseException as exc:
                box["error"] = exc

        if remaining > 0:
            worker = threading.Thread(target=work, name="bfjobs-registry", daemon=True)
            worker.start()
            worker.join(remaining)
            if not worker.is_alive():
                if "error" in box:
                    raise box["error"]
                return box["answer"]
        raise Unreachable(f"registry {host} did not answer within {self.timeout:g} s")

    def _send_now(
        self, host: str, method: str, url: str, timeout: float, auth: str | None, limit: int
    ) -> tuple[int, Any, bytes]:
        """One request; its status, headers and its whole body of at most ``limit`` bytes."""
        import http.client
        import ssl
        import urllib.error
        import urllib.request

        try:
            # S310: url is https:// (or http:// for an insecure_registries entry), built here or checked
            request = urllib.request.Request(url, method=method, headers={"Accept": ACCEPT, "User-Agent": "bfjobs"})  # noqa: S310
            if auth is not None:
                request.add_unredirected_header("Authorization", auth)
            try:
                response = self._opener.open(request, timeout=timeout)
            except urllib.error.HTTPError as exc:
                response = exc
            with response:
                length = response.headers.get("Content-Length")
                if length is not None and (not length.isdigit() or int(length) > limit):
                    raise BadAnswer(f"registry {host} sent an answer larger than {limit} bytes")
                body = b"" if method == "HEAD" else response.read(limit + 1)
                status = response.status if hasattr(response, "status") else response.code
        except RegistryError:
            raise
        except http.client.HTTPException as exc:
            raise BadAnswer(f"registry {host} answered something that is not HTTP ({type(exc).__name__})") from None
        except (OSError, ValueError, urllib.error.URLError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, TimeoutError):
                raise Unreachable(f"registry {host} did not answer within {self.timeout:g} s") from None
            if isinstance(reason, ssl.SSLError):  # the node's Apptainer would meet the same answer
                hint = ""
                if "WRONG_VERSION_NUMBER" in str(reason) or "record layer" in str(reason):
                    hint = f" (a registry on plain HTTP must be listed in insecure_registries: {host})"
                raise BadAnswer(f"registry {host}: TLS failed: {_line(str(reason))}{hint}") from None
            raise Unreachable(f"registry {host} not reachable: {_line(str(reason))}") from None
        if len(body) > limit:
            raise BadAnswer(f"registry {host} sent an answer larger than {limit} bytes")
        if method != "HEAD" and length is not None and len(body) != int(length):
            raise BadAnswer(f"registry {host} sent {len(body)} of the {length} bytes it announced")
        return status, response.headers, body


def _is_bearer(headers: Any) -> bool:
    return (headers.get("WWW-Authenticate") or "").strip().lower().startswith("bearer")


def _basic(creds: tuple[str, str]) -> str:
    return "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()


def _json(host: str, body: bytes, what: str) -> Any:
    """``body`` parsed; a registry's garbage (or a JSON bomb nested past the recursion limit) is a
    :class:`BadAnswer`, not a traceback."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError, UnicodeDecodeError):
        raise BadAnswer(f"registry {host} sent a {what} that is not valid JSON") from None


def _check_digest(host: str, value: str) -> str:
    value = value.strip()
    if not DIGEST.fullmatch(value):
        raise BadAnswer(f"registry {host} sent a malformed digest ({_line(value)[:80]!r})")
    return value


def _media_type(headers: Any) -> str:
    return (headers.get("Content-Type") or "").split(";")[0].strip()


def _why(status: int, body: bytes) -> str:
    """The registry's own error code (``MANIFEST_UNKNOWN``), else the status."""
    try:
        errors = json.loads(body[:65536])["errors"]
        code = str(errors[0]["code"])
        if re.fullmatch(r"[A-Z_]{1,40}", code):
            return code
    except (ValueError, KeyError, IndexError, TypeError, RecursionError):
        pass
    return f"HTTP {status}"


def _line(text: str) -> str:
    return " ".join(text.split())[:200]


def credentials(host: str) -> tuple[str, str] | None:
    """Where Apptainer keeps registry credentials, read now: ``APPTAINER_DOCKER_USERNAME``/
    ``APPTAINER_DOCKER_PASSWORD``, else ``~/.apptainer/docker-config.json`` (``apptainer registry
    login``). The values are never stored, logged or put in a message."""
    env = constants.registry_credentials_env()
    if env is not None:
        return env
    try:
        with open(constants.apptainer_config_dir() / "docker-config.json", encoding="utf-8") as fh:
            auths = json.load(fh).get("auths") or {}
    except (OSError, ValueError, AttributeError):
        return None
    names = {host, *(_HUB_NAMES if host == DOCKER_HUB else ()), "https://index.docker.io/v1/" if host == DOCKER_HUB
             else host}
    for key, entry in auths.items() if isinstance(auths, dict) else ():
        bare = re.sub(r"^(?:https?|docker|oras)://", "", str(key)).rstrip("/")
        if (key in names or bare in names) and isinstance(entry, dict):
            try:
                user, sep, password = base64.b64decode(str(entry.get("auth") or "")).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return None
            return (user, password) if sep else None
    return None
