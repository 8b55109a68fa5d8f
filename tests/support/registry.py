"""A real OCI registry for the tests of images pinned by digest, and images built for it.

:class:`Registry` runs Debian's ``docker-registry`` (distribution 2.8) on 127.0.0.1 through
``scripts/registry-up.sh`` / ``scripts/registry-down.sh``: plain HTTP, a free port, optionally htpasswd basic auth
(which distribution 2.8 accepts over plain HTTP). Images are built with ``umoci`` (one layer holding one small file)
and pushed with ``skopeo``, both offline, in about 0.1 s an image.

What the tools do, checked with docker-registry 2.8.2, umoci 0.4.7, skopeo 1.9.3:

* skopeo pushes an ``oci:`` layout's manifests as they are: OCI media types
  (``application/vnd.oci.image.manifest.v1+json``, ``...index.v1+json``), no conversion to Docker v2s2, so the
  digests are the layout's own.
* ``HEAD`` of a manifest or an index answers ``Docker-Content-Digest``, but only with an ``Accept`` header naming the
  OCI media type: without one the registry answers ``404 MANIFEST_UNKNOWN`` ("OCI manifest found, but accept header
  does not support OCI manifests"), for a tag that exists.
* An unknown tag or digest: ``404`` ``{"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}``.
* umoci stamps the config with the time, so pushing the same content twice gives two digests.

Needs ``docker-registry``, ``umoci``, ``skopeo`` and ``htpasswd`` (``scripts/test-site.sh`` installs them);
:func:`missing_tools` names those absent.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from support.site import REPO, skip_or_fail

__all__ = ["MANIFEST_ACCEPT", "TOOLS", "Registry", "missing_tools", "running_registry", "sha256_digest"]

#: What a client sends to get any manifest or index (REFERENCE §9); the registry answers OCI ones only to this.
MANIFEST_ACCEPT = ", ".join((
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
))
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
TOOLS = ("docker-registry", "umoci", "skopeo", "htpasswd")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def missing_tools() -> list[str]:
    """The commands a :class:`Registry` needs that are not on PATH."""
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, **kwargs)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


class Addresses:
    """How tests name a registry on 127.0.0.1 (the real one here, the fake one in fake_registry)."""

    port: int | None

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, as an image reference names the registry."""
        if self.port is None:
            raise RuntimeError("registry not started")
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def uri(self, name: str, tag_or_digest: str = "latest") -> str:
        """``docker://HOST/NAME:TAG`` or, for a ``sha256:`` digest, ``docker://HOST/NAME@sha256:...``."""
        sep = "@" if tag_or_digest.startswith("sha256:") else ":"
        return f"docker://{self.host}/{name}{sep}{tag_or_digest}"


class Registry(Addresses):
    """A docker-registry on 127.0.0.1:<free port>, started by ``scripts/registry-up.sh``.

    ``credentials`` (user, password) when private: every request then needs them (HTTP basic).
    """

    def __init__(self) -> None:
        self.root: Path | None = None
        self.port: int | None = None
        self.credentials: tuple[str, str] | None = None
        self._counter = 0

    # -- life cycle ---------------------------------------------------------------------------------------------
    def start(self, root: Path, htpasswd: tuple[str, str] | None = None) -> Registry:
        """Start a registry keeping its data, config and log in ``root``; private when ``htpasswd`` is given."""
        if self.port is not None:
            raise RuntimeError("registry already started")
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        argv_tail: list[str] = []
        if htpasswd is not None:
            user, password = htpasswd
            line = _run(["htpasswd", "-nbB", user, password]).stdout.strip()
            (root / "htpasswd").write_text(line + "\n")
            argv_tail = [str(root / "htpasswd")]
        for attempt in range(3):  # the free port may be taken between choosing and binding it
            port = _free_port()
            proc = subprocess.run(["bash", str(REPO / "scripts" / "registry-up.sh"), str(root), str(port), *argv_tail],
                                  capture_output=True, text=True, timeout=60)
            if proc.returncode == 0:
                break
            if attempt == 2 or "address already in use" not in proc.stderr:
                raise RuntimeError(f"scripts/registry-up.sh failed: {proc.stderr.strip()}")
        self.root, self.port, self.credentials = root, port, htpasswd
        return self

    def stop(self) -> None:
        if self.root is not None and self.port is not None:
            subprocess.run(["bash", str(REPO / "scripts" / "registry-down.sh"), str(self.root)],
                           capture_output=True, timeout=60)
        self.port = None

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = self.host if self.port else "stopped"
        return f"Registry({state}{', private' if self.credentials else ''})"

    # -- reading ------------------------------------------------------------------------------------------------
    def _request(self, path: str, method: str = "GET", accept: str = MANIFEST_ACCEPT, data: bytes | None = None,
                 content_type: str | None = None):
        req = urllib.request.Request(path if path.startswith("http") else self.url + path, method=method,
                                     headers={"Accept": accept}, data=data)
        if content_type:
            req.add_header("Content-Type", content_type)
        if self.credentials:
            token = base64.b64encode(":".join(self.credentials).encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        return urllib.request.urlopen(req, timeout=30)

    def digest(self, name: str, tag: str) -> str | None:
        """The digest ``tag`` points to, as the registry reports it (``HEAD``, ``Docker-Content-Digest``);
        ``None`` for an unknown tag or repository."""
        try:
            with self._request(f"/v2/{name}/manifests/{tag}", method="HEAD") as resp:
                digest = resp.headers.get("Docker-Content-Digest")
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return None
            raise
        if not digest or not _DIGEST_RE.match(digest):
            raise RuntimeError(f"registry answered HEAD {name}:{tag} with Docker-Content-Digest {digest!r}")
        return digest

    def manifest(self, name: str, reference: str) -> tuple[str, dict]:
        """``(media type, parsed body)`` of a manifest or index, by tag or digest; the body is checked against its
        digest."""
        with self._request(f"/v2/{name}/manifests/{reference}") as resp:
            body = resp.read()
            media_type = resp.headers.get("Content-Type", "")
            digest = resp.headers.get("Docker-Content-Digest")
        if digest != sha256_digest(body) or (reference.startswith("sha256:") and reference != digest):
            raise RuntimeError(f"manifest {name}@{reference}: body does not match digest {digest}")
        return media_type, json.loads(body)

    def blob(self, name: str, digest: str) -> bytes:
        with self._request(f"/v2/{name}/blobs/{digest}", accept="*/*") as resp:
            return resp.read()

    # -- writing ------------------------------------------------------------------------------------------------
    def _layout(self) -> Path:
        assert self.root is not None, "registry not started"
        build = self.root / "build"
        build.mkdir(exist_ok=True)
        layout = Path(tempfile.mkdtemp(prefix="oci-", dir=build))
        _run(["umoci", "init", "--layout", str(layout / "L")])
        return layout

    def _build(self, layout: Path, ref: str, content: str, arch: str) -> tuple[str, int]:
        """Build image ``L:ref`` (one layer: ``/etc/bfjobs-test`` holding ``content``, linux/``arch``);
        returns its manifest's (digest, size) in the layout."""
        image = f"{layout / 'L'}:{ref}"
        rootless = ["--rootless"] if os.geteuid() != 0 else []
        data = layout / f"file-{ref}"
        data.write_text(content)
        _run(["umoci", "new", "--image", image])
        _run(["umoci", "insert", *rootless, "--image", image, str(data), "/etc/bfjobs-test"])
        _run(["umoci", "config", *rootless, "--image", image, f"--architecture={arch}", "--os=linux"])
        index = json.loads((layout / "L" / "index.json").read_text())
        for desc in index["manifests"]:
            if desc.get("annotations", {}).get("org.opencontainers.image.ref.name") == ref:
                return desc["digest"], desc["size"]
        raise RuntimeError(f"umoci left no {ref} in {layout}/L/index.json")

    def _copy(self, layout: Path, ref: str, name: str, tag: str, *, all_images: bool = False) -> None:
        if not _TAG_RE.match(tag):
            raise ValueError(f"not a tag: {tag!r}")
        creds = ["--dest-creds", ":".join(self.credentials)] if self.credentials else []
        _run(["skopeo", "--insecure-policy", "copy", "-q", *(["--all"] if all_images else []),
              "--dest-tls-verify=false", *creds, f"oci:{layout / 'L'}:{ref}", f"docker://{self.host}/{name}:{tag}"],
             env={**os.environ, "TMPDIR": str(layout)})

    def push(self, name: str, tag: str, content: str, arch: str = "amd64") -> str:
        """Build a one-layer image (``/etc/bfjobs-test`` holds ``content``) for linux/``arch``, push it as
        ``name:tag`` (moving the tag if it exists) and return the manifest digest the registry reports."""
        layout = self._layout()
        try:
            built, _ = self._build(layout, "x", content, arch)
            self._copy(layout, "x", name, tag)
        finally:
            shutil.rmtree(layout, ignore_errors=True)
        digest = self.digest(name, tag)
        if digest != built:
            raise RuntimeError(f"pushed {built} as {name}:{tag} but the registry reports {digest}")
        return digest

    def push_index(self, name: str, tag: str, contents: dict[str, str]) -> tuple[str, dict[str, str]]:
        """Push a multi-platform image as ``name:tag``: an OCI image index over one single-platform image per
        ``{arch: content}``; returns ``(index digest, {arch: platform manifest digest})``."""
        layout = self._layout()
        try:
            platforms, manifests = {}, []
            for arch, content in contents.items():
                digest, size = self._build(layout, arch, content, arch)
                platforms[arch] = digest
                manifests.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest,
                                  "size": size, "platform": {"architecture": arch, "os": "linux"}})
            body = json.dumps({"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": manifests}).encode()
            index_digest = sha256_digest(body)
            (layout / "L" / "blobs" / "sha256" / index_digest.split(":", 1)[1]).write_bytes(body)
            index_path = layout / "L" / "index.json"
            index = json.loads(index_path.read_text())
            index["manifests"].append({"mediaType": INDEX_MEDIA_TYPE, "digest": index_digest, "size": len(body),
                                       "annotations": {"org.opencontainers.image.ref.name": "index"}})
            index_path.write_text(json.dumps(index))
            self._copy(layout, "index", name, tag, all_images=True)
        finally:
            shutil.rmtree(layout, ignore_errors=True)
        pushed = self.digest(name, tag)
        if pushed != index_digest:
            raise RuntimeError(f"pushed index {index_digest} as {name}:{tag} but the registry reports {pushed}")
        return index_digest, platforms

    def push_sif(self, name: str, tag: str, sif: bytes) -> str:
        """Push ``sif`` as ``apptainer push oras://`` does (an OCI artifact: a ``{}`` config of the
        SIF config type, one layer of the SIF layer type), through the registry's upload API;
        returns the manifest digest the registry reports."""

        def blob(data: bytes) -> dict:
            with self._request(f"/v2/{name}/blobs/uploads/", "POST", "*/*", b"") as started:
                location = started.headers["Location"]
            if not location.startswith("http"):
                location = self.url + location
            location += ("&" if "?" in location else "?") + "digest=" + sha256_digest(data)
            with self._request(location, "PUT", "*/*", data, "application/octet-stream"):
                pass
            return {"digest": sha256_digest(data), "size": len(data)}

        config = blob(b"{}")
        layer = blob(sif)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.sylabs.sif.config.v1+json", **config},
            "layers": [{"mediaType": "application/vnd.sylabs.sif.layer.v1.sif", **layer,
                        "annotations": {"org.opencontainers.image.title": "image.sif"}}],
        }).encode()
        with self._request(f"/v2/{name}/manifests/{tag}", "PUT", "*/*", manifest,
                           "application/vnd.oci.image.manifest.v1+json"):
            pass
        digest = self.digest(name, tag)
        if digest != sha256_digest(manifest):
            raise RuntimeError(f"pushed {name}:{tag} as {sha256_digest(manifest)} but the registry reports {digest}")
        return digest

    def unique_name(self, prefix: str = "test/image") -> str:
        """A repository name no other test of this session used."""
        self._counter += 1
        return f"{prefix}-{os.getpid()}-{self._counter}"


@contextlib.contextmanager
def running_registry(root: Path, htpasswd: tuple[str, str] | None = None) -> Iterator[Registry]:
    """A started :class:`Registry`, stopped at the end of the block; skips the test when the tools are missing
    (fails it in CI: ``BFJOBS_REQUIRE_SLURM``)."""
    if missing := missing_tools():
        skip_or_fail(f"needs {', '.join(missing)}: run scripts/test-site.sh (as root)")
    registry = Registry().start(root, htpasswd)
    try:
        yield registry
    finally:
        registry.stop()
