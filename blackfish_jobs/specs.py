"""Validated requests: everything a job needs, checked before anything is rendered or submitted.

A spec is a frozen dataclass holding only validated values. The node-side part of a spec (what
gets pickled into the job folder) never contains secrets.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from . import layout, validate
from .config import JobSettings, Profile
from .errors import BadInput, show

MAX_URI_LEN = 512

# Docker/OCI reference grammar (distribution/reference), restricted to what registries accept.
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
# a registry host: localhost, a dotted name, or any host with a port
_DOMAIN = rf"(?:(?:localhost|{_LABEL}(?:\.{_LABEL})+)(?::\d{{1,5}})?|{_LABEL}:\d{{1,5}})"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"sha256:[a-f0-9]{64}"
_OCI = re.compile(
    rf"^(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?$"
)
# library:// and shub:// references: [host/]entity/collection/container[:tag]
_LIBRARY = re.compile(rf"^(?P<path>[a-z0-9][a-z0-9._-]*(?:/[a-z0-9][a-z0-9._-]*){{0,3}})(?::(?P<tag>{_TAG}))?$")
_HTTPS = re.compile(r"^(?P<host>[A-Za-z0-9.-]+(?::\d{1,5})?)(?P<path>(?:/[A-Za-z0-9._~+-]+)+)$")
_SIF_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,250}\.sif$")
SCHEMES = ("docker", "oras", "library", "shub", "https")


@dataclass(frozen=True)
class ImageRef:
    """A parsed container URI and the file name Blackfish expects for it."""

    uri: str
    scheme: str
    name: str
    tag: str | None
    digest: str | None

    @property
    def filename(self) -> str:
        """``<last path component>_<tag>.sif``; see README for digests and https files."""
        if self.scheme == "https" and self.name.endswith(".sif"):
            return self.name
        if self.tag is not None:
            return f"{self.name}_{self.tag}.sif"
        if self.digest is not None:
            return f"{self.name}_{self.digest.replace(':', '-')}.sif"
        return f"{self.name}_latest.sif"


def parse_image_uri(uri: str) -> ImageRef:
    """Parse and validate an Apptainer pull URI; refuse anything outside the grammar."""
    validate.ascii_only("URI", uri)
    if len(uri) > MAX_URI_LEN:
        raise BadInput(f"URI: too long ({len(uri)} characters, at most {MAX_URI_LEN})")
    if any(ch.isspace() for ch in uri):
        raise BadInput(f"URI: must not contain whitespace: {show(uri)}")
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme not in SCHEMES:
        raise BadInput(f"URI: expected one of {', '.join(s + '://' for s in SCHEMES)}, got {show(uri)}")
    if ".." in rest:
        raise BadInput(f"URI: '..' is not allowed: {show(uri)}")
    if scheme in ("docker", "oras"):
        m = _OCI.match(rest)
        if not m:
            raise BadInput(f"URI: not a valid {scheme}:// image reference: {show(uri)}")
        return ImageRef(uri, scheme, m["path"].rsplit("/", 1)[-1], m["tag"], m["digest"])
    if scheme in ("library", "shub"):
        m = _LIBRARY.match(rest)
        if not m:
            raise BadInput(f"URI: not a valid {scheme}:// reference: {show(uri)}")
        return ImageRef(uri, scheme, m["path"].rsplit("/", 1)[-1], m["tag"], None)
    m = _HTTPS.match(rest)
    if not m:
        raise BadInput(f"URI: not a valid https:// URL (no query strings or special characters): {show(uri)}")
    return ImageRef(uri, scheme, m["path"].rsplit("/", 1)[-1], None, None)


def check_sif_name(value: str) -> str:
    validate.ascii_only("--name", value)
    if not _SIF_NAME.match(value):
        raise BadInput(f"--name: expected a file name like NAME_TAG.sif (letters, digits, . _ + -), got {show(value)}")
    return value


@dataclass(frozen=True)
class PullImage:
    """Node-side request for ``apptainer pull`` (pickled into the job folder: no secrets)."""

    uri: str
    dest_dir: Path
    filename: str
    apptainer: str
    force: bool = False

    @property
    def target(self) -> Path:
        return self.dest_dir / self.filename


@dataclass(frozen=True)
class JobSpec:
    """One job to render and submit: the profile, the resolved settings and the node request."""

    kind: Literal["pull-image", "download-model"]
    profile: Profile
    settings: JobSettings
    task: PullImage
    label: str  # short human description, e.g. "docker://alpine:3.20 → /cache/images/alpine_3.20.sif"

    @property
    def target(self) -> Path:
        return self.task.target

    def request_record(self) -> dict[str, Any]:
        """What the DB keeps about the request (JSON-serialisable, no secrets)."""
        data = asdict(self.task)
        return {k: str(v) if isinstance(v, Path) else v for k, v in data.items()}


def pull_image(
    uri: str,
    profile: Profile,
    settings: JobSettings,
    *,
    to: Literal["shared", "home"] = "shared",
    name: str | None = None,
    force: bool = False,
) -> JobSpec:
    """Validate a pull request; destination defaults to the shared cache Blackfish reads."""
    ref = parse_image_uri(uri)
    filename = check_sif_name(name) if name is not None else ref.filename
    check_sif_name(filename)
    if to not in ("shared", "home"):
        raise BadInput(f"--to: expected 'shared' or 'home', got {show(to)}")
    base = profile.cache_dir if to == "shared" else profile.home_dir
    task = PullImage(ref.uri, layout.images_dir(base), filename, settings.apptainer, force)
    return JobSpec("pull-image", profile, settings, task, f"{ref.uri} -> {task.target}")
