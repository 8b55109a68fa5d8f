"""Validated requests: everything a job needs, checked before anything is rendered or submitted.

A spec is a frozen dataclass holding only validated values. The node-side part of a spec (what
gets pickled into the job folder) is a plain :mod:`.node.requests` dataclass built here, once its
values are checked; it never contains secrets.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

from . import layout, validate
from .config import JobSettings, Profile
from .errors import BadInput, show
from .node.requests import DownloadModel, PullImage

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
# At most 200 characters: on the node the name gets a ".bfjobs-partial-<job tag>-" (or
# ".bfjobs-lock-") prefix and must still fit in one 255-character file name.
_SIF_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,195}\.sif")
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


def check_sif_name(value: str, field: str = "--name") -> str:
    """An image file name; ``field`` names where it came from (``--name``, or the URI it is derived from)."""
    validate.ascii_only(field, value)
    if not _SIF_NAME.fullmatch(value):
        raise BadInput(
            f"{field}: expected a file name like NAME_TAG.sif (letters, digits, . _ + -; "
            f"at most 200 characters), got {show(value)}"
        )
    return value


# Hugging Face repo ids: namespace/name, each part of word characters, '.', '-'; no '--' or '..'
# (Blackfish splits folder names on '--'), no leading/trailing '.' or '-', at most 96 characters.
_REPO_PART = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?")
# The node's staging folder ".bfjobs-staging-models--<ns>--<name>@<40 hex>-<job tag>" must fit in
# one 255-character file name: 86 characters go around the id, so 160 leaves a margin.
MAX_REPO_ID_LEN = 160
_REF_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\'\"`$;&|<>(){}!#%]")
_GLOB = re.compile(r"^[A-Za-z0-9._*?/\[\]!,+@=-]{1,256}$")


def check_repo_id(value: str) -> str:
    """A Hub model id ``namespace/name`` that Blackfish can find on disk."""
    validate.ascii_only("REPO_ID", value)
    if len(value) > MAX_REPO_ID_LEN:
        raise BadInput(f"REPO_ID: too long ({len(value)} characters, at most {MAX_REPO_ID_LEN}): {show(value)}")
    parts = value.split("/")
    if len(parts) != 2:
        raise BadInput(f"REPO_ID: expected namespace/name (e.g. meta-llama/Llama-3.1-8B), got {show(value)}")
    for part in parts:
        if not _REPO_PART.fullmatch(part) or "--" in part or ".." in part:
            raise BadInput(
                f"REPO_ID: {show(part)} is not a valid Hub name (letters, digits, '.', '_', '-'; "
                "no '--' or '..'; at most 96 characters)"
            )
    if value.endswith(".git"):
        raise BadInput(f"REPO_ID: must not end with .git: {show(value)}")
    return value


def check_revision(value: str) -> str:
    """A branch or tag (git's ref-name rules) or a full 40-hex commit sha."""
    validate.ascii_only("--revision", value)
    if layout.is_commit(value):
        return value
    bad = (
        len(value) > 200
        or _REF_FORBIDDEN.search(value)
        or value.startswith(("-", "/"))
        or value.endswith(("/", ".", ".lock"))
        or ".." in value
        or "//" in value
        or "@{" in value
        or value == "@"
        or any(part.startswith(".") for part in value.split("/"))
    )
    if bad:
        raise BadInput(f"--revision: not a branch, tag or 40-hex commit: {show(value)}")
    return value


def check_pattern(field: str, value: str) -> str:
    """An include/exclude glob as huggingface_hub's fnmatch takes it."""
    validate.ascii_only(field, value)
    if not _GLOB.match(value) or ".." in value.split("/") or value.startswith("/"):
        raise BadInput(f"{field}: not a file pattern (e.g. '*.safetensors', 'original/*'): {show(value)}")
    return value


@dataclass(frozen=True)
class JobSpec:
    """One job to render and submit: the profile, the resolved settings and the node request."""

    kind: Literal["pull-image", "download-model"]
    profile: Profile
    settings: JobSettings
    task: PullImage | DownloadModel
    label: str  # short human description, e.g. "docker://alpine:3.20 → /cache/images/alpine_3.20.sif"
    origin: str | None = None  # where the request was written, for messages: "line 3" of a --from-file list

    @property
    def target(self) -> Path:
        return self.task.target

    def request_record(self) -> dict[str, Any]:
        """What the DB keeps about the request (JSON-serialisable, no secrets)."""
        data = asdict(self.task)
        return {k: str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v for k, v in data.items()}


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
    filename = check_sif_name(name) if name is not None else check_sif_name(ref.filename, "URI: image file name")
    if to not in ("shared", "home"):
        raise BadInput(f"--to: expected 'shared' or 'home', got {show(to)}")
    base = profile.cache_dir if to == "shared" else profile.home_dir
    task = PullImage(ref.uri, layout.images_dir(base), filename, settings.apptainer, force)
    return JobSpec("pull-image", profile, settings, task, f"{ref.uri} -> {task.target}")


def download_model(
    repo_id: str,
    profile: Profile,
    settings: JobSettings,
    *,
    revision: str | None = None,
    shared: bool = False,
    include: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
    force: bool = False,
) -> JobSpec:
    """Validate a download request; destination is the user's models dir unless ``shared``."""
    repo_id = check_repo_id(repo_id)
    revision = check_revision(revision) if revision is not None else None
    if len(include) > 64 or len(exclude) > 64:
        raise BadInput("--include/--exclude: at most 64 patterns each")
    allow = tuple(check_pattern("--include", p) for p in include) or None
    ignore = tuple(check_pattern("--exclude", p) for p in exclude) or None
    base = profile.cache_dir if shared else profile.home_dir
    task = DownloadModel(
        repo_id=repo_id,
        revision=revision,
        models_dir=layout.models_dir(base),
        endpoint=settings.hf_endpoint,
        allow_patterns=allow,
        ignore_patterns=ignore,
        max_workers=settings.max_workers or 8,
        force=force,
        shared=shared,
    )
    at = f"@{revision}" if revision else ""
    return JobSpec("download-model", profile, settings, task, f"{repo_id}{at} -> {task.target}")


MAX_LIST_LINES = 10_000
MAX_LIST_BYTES = 4 * 1024 * 1024


def read_list_file(path: str) -> list[tuple[int, str]]:
    """``(line number, entry)`` for each entry of a ``--from-file`` list.

    One entry per line; blank lines and ``#`` comments (whole-line, or after whitespace) are
    skipped. The file itself is checked here; the entries by the kind's own validators.
    """
    text_path = validate.ascii_only("--from-file", path) if path != "-" else path
    try:
        if text_path == "-":
            raw = sys.stdin.buffer.read(MAX_LIST_BYTES + 1)
        else:
            with open(text_path, "rb") as fh:
                raw = fh.read(MAX_LIST_BYTES + 1)
    except OSError as exc:
        raise BadInput(f"--from-file: cannot read {show(path)}: {exc.strerror}") from None
    if len(raw) > MAX_LIST_BYTES:
        raise BadInput(f"--from-file: {show(path)} is larger than {MAX_LIST_BYTES // (1024 * 1024)} MiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput(f"--from-file: {show(path)} is not UTF-8 text") from None
    entries = []
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        comment = re.search(r"(^|\s)#", line)
        if comment:
            line = line[: comment.start()]
        if line.strip():
            entries.append((number, line.strip()))
    if not entries:
        raise BadInput(f"--from-file: {show(path)} lists nothing (one entry per line, '#' comments)")
    if len(entries) > MAX_LIST_LINES:
        raise BadInput(f"--from-file: {show(path)} lists {len(entries)} entries (at most {MAX_LIST_LINES})")
    return entries


def from_list(
    path: str, build: Callable[[str], JobSpec], what: str
) -> list[tuple[int, JobSpec]]:
    """Build one spec per entry; any bad entry refuses the whole file, naming its lines."""
    specs: list[tuple[int, JobSpec]] = []
    errors: list[str] = []
    seen: set[str] = set()
    for number, entry in read_list_file(path):
        try:
            spec = build(entry)
        except BadInput as exc:
            errors.append(f"line {number}: {exc}")
            continue
        key = spec.label
        if key in seen:
            continue  # the same artefact twice: one job
        seen.add(key)
        specs.append((number, replace(spec, origin=f"line {number}")))
    if errors:
        shown = "; ".join(errors[:5]) + (f"; and {len(errors) - 5} more" if len(errors) > 5 else "")
        raise BadInput(f"--from-file {show(path)}: {len(errors)} bad {what}(s), nothing submitted: {shown}")
    return specs


def split_repo_revision(entry: str) -> tuple[str, str | None]:
    """``namespace/name[@revision]`` from a download list."""
    repo, sep, revision = entry.partition("@")
    return repo, (revision if sep else None)
