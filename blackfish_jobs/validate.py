"""Small validators shared by configuration and request specs.

Every value that will reach a job script or a path goes through one of these. They refuse
rather than repair: a refused value raises :class:`BadInput` with a one-line message naming
the field and showing the (escaped) value.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

from .constants import MAX_VALUE_LEN
from .errors import BadInput, show

#: Longest file name (one path component) Linux filesystems accept.
NAME_MAX = 255

_SAFE_PATH = re.compile(r"^/[A-Za-z0-9._+@/-]*$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_MODULE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+/-]*$")
_CONSTRAINT = re.compile(r"^[A-Za-z0-9_.:&|,\[\]*()!-]+$")
_TIME = re.compile(r"^(?:\d{1,5}|\d{1,5}:\d{2}|\d{1,5}:\d{2}:\d{2}|\d{1,4}-\d{1,2}(?::\d{2}(?::\d{2})?)?)$")
_MEM = re.compile(r"^[1-9]\d{0,8}[KMGT]?$")
_URL = re.compile(r"^https?://[A-Za-z0-9.-]+(?::\d{1,5})?(?:/[A-Za-z0-9._~/-]*)?$")


def invisible(ch: str) -> bool:
    """Control, format (direction overrides such as U+202E, zero-width spaces), unassigned or
    line/paragraph-separator characters: what makes text read differently from what it is."""
    cat = unicodedata.category(ch)
    return cat[0] == "C" or cat in ("Zl", "Zp")


def basic(field: str, value: str, max_len: int = MAX_VALUE_LEN) -> str:
    """Refuse empty, over-long, control-character or non-ASCII-lookalike values."""
    if not isinstance(value, str):
        raise BadInput(f"{field}: expected a string, got {type(value).__name__}")
    if value == "":
        raise BadInput(f"{field}: must not be empty")
    if len(value) > max_len:
        raise BadInput(f"{field}: too long ({len(value)} characters, at most {max_len})")
    for ch in value:
        if invisible(ch):
            raise BadInput(f"{field}: contains a control or invisible character ({ch!r}) in {show(value)}")
    return value


def ascii_only(field: str, value: str) -> str:
    """Refuse non-ASCII (unicode look-alikes, direction marks) where only ASCII makes sense."""
    basic(field, value)
    if not value.isascii():
        raise BadInput(f"{field}: only ASCII characters are allowed, got {show(value)}")
    return value


def safe_path(field: str, value: str | Path) -> Path:
    """An absolute, normalised path made only of portable characters and no ``..``."""
    text = ascii_only(field, str(value))
    if not text.startswith("/"):
        raise BadInput(f"{field}: must be an absolute path, got {show(text)}")
    if not _SAFE_PATH.match(text):
        raise BadInput(f"{field}: path may only contain letters, digits and . _ + @ / -, got {show(text)}")
    parts = text.split("/")
    if ".." in parts or "." in parts:
        raise BadInput(f"{field}: '.' and '..' are not allowed in paths, got {show(text)}")
    if any(len(part) > NAME_MAX for part in parts):
        # refused here, or stat()/mkdir() would fail later with ENAMETOOLONG (a traceback)
        raise BadInput(f"{field}: a path component is longer than {NAME_MAX} characters in {show(text)}")
    if "//" in text.rstrip("/") and text != "/":
        raise BadInput(f"{field}: empty path component in {show(text)}")
    return Path(text.rstrip("/") or "/")


def name(field: str, value: str, max_len: int = 64) -> str:
    """Slurm partition, QOS, account and similar simple names."""
    ascii_only(field, value)
    if len(value) > max_len or not _NAME.match(value):
        raise BadInput(f"{field}: expected a name of letters, digits, '.', '_' or '-', got {show(value)}")
    return value


def slurm_time(field: str, value: str) -> str:
    """A Slurm time limit: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS."""
    ascii_only(field, value)
    if not _TIME.match(value):
        raise BadInput(f"{field}: not a Slurm time (e.g. 90, 02:00:00, 1-00:00:00): {show(value)}")
    return value


def slurm_mem(field: str, value: str) -> str:
    """A Slurm memory size: a positive integer with an optional K/M/G/T suffix."""
    ascii_only(field, value)
    if not _MEM.match(value):
        raise BadInput(f"{field}: not a Slurm memory size (e.g. 4G, 500M): {show(value)}")
    return value


def constraint(field: str, value: str) -> str:
    """A Slurm ``--constraint`` expression (features combined with & | , [ ] *)."""
    ascii_only(field, value)
    if len(value) > 256 or not _CONSTRAINT.match(value):
        raise BadInput(f"{field}: not a Slurm constraint expression: {show(value)}")
    return value


def module(field: str, value: str) -> str:
    """An environment-module name such as ``anaconda3/2024.6``."""
    ascii_only(field, value)
    if len(value) > 128 or not _MODULE.match(value) or ".." in value.split("/"):
        raise BadInput(f"{field}: not a module name: {show(value)}")
    return value


def positive_int(field: str, value: object, maximum: int, minimum: int = 1) -> int:
    """An integer in minimum..maximum (refuses bools and strings that are not plain digits)."""
    if isinstance(value, bool):
        raise BadInput(f"{field}: expected an integer, got {show(value)}")
    if isinstance(value, str):
        ascii_only(field, value)
        if not value.isdigit():
            raise BadInput(f"{field}: expected an integer, got {show(value)}")
        value = int(value)
    if not isinstance(value, int) or not minimum <= value <= maximum:
        raise BadInput(f"{field}: expected an integer from {minimum} to {maximum}, got {show(value)}")
    return value


def url(field: str, value: str) -> str:
    """An http(s) endpoint without credentials, query or fragment; a URL with credentials is
    refused without echoing them (the error line reaches terminals and logs)."""
    ascii_only(field, value)
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]*://[^/]*@", value):
        shown = re.sub(r"(?<=//)[^/]*@", "", value)
        raise BadInput(f"{field}: credentials in the URL are not allowed (set HF_TOKEN instead): {show(shown)}")
    if not _URL.match(value):
        raise BadInput(f"{field}: expected an http(s) URL like https://hf-mirror.example.org, got {show(value)}")
    if ".." in value.split("/"):
        raise BadInput(f"{field}: '..' is not allowed in URLs: {show(value)}")
    return value.rstrip("/")


_REGISTRY_HOST = re.compile(
    r"(?:localhost|[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*)"
    r"(?::(?P<port>[0-9]{1,5}))?"
)


def registry_host(field: str, value: str) -> str:
    """A registry as image references name it: ``host[:port]`` (``insecure_registries``)."""
    ascii_only(field, value)
    match = _REGISTRY_HOST.fullmatch(value) if len(value) <= 253 else None
    if match is None or (match["port"] is not None and not 0 < int(match["port"]) < 65536):
        raise BadInput(f"{field}: expected a registry as host:port (e.g. 127.0.0.1:5000), got {show(value)}")
    return value


def setup_line(field: str, value: str) -> str:
    """An admin-written shell line for the job prelude: one line, no NUL/control characters."""
    basic(field, value, max_len=1024)
    return value
