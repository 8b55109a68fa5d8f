"""``pull-image``: an Apptainer image pulled from a URI into Blackfish's image cache.

The URI grammar and Blackfish's file name for it, the destination (``--to``), the presence check
(the file *and* its record naming the same URI), the name collisions and what ``verify`` checks.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NamedTuple

from ..errors import BadInput, show
from .base import Argument, Kind, Option

if TYPE_CHECKING:
    from ..config import JobSettings, Profile
    from ..specs import AlreadyPresent, JobSpec
    from ..store import JobRow
    from ..verify import Finding

MAX_URI_LEN = 512

# Patterns are compiled on first use (re's own cache), not at import: ``bfjobs list`` imports the kinds.
# Docker/OCI reference grammar (distribution/reference), restricted to what registries accept.
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
# a registry host: localhost, a dotted name, or any host with a port
_DOMAIN = rf"(?:(?:localhost|{_LABEL}(?:\.{_LABEL})+)(?::\d{{1,5}})?|{_LABEL}:\d{{1,5}})"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"sha256:[a-f0-9]{64}"
_OCI = (
    rf"^(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?$"
)
# library:// and shub:// references: [host/]entity/collection/container[:tag]
_LIBRARY = rf"^(?P<path>[a-z0-9][a-z0-9._-]*(?:/[a-z0-9][a-z0-9._-]*){{0,3}})(?::(?P<tag>{_TAG}))?$"
_HTTPS = r"^(?P<host>[A-Za-z0-9.-]+(?::\d{1,5})?)(?P<path>(?:/[A-Za-z0-9._~+-]+)+)$"
# At most 200 characters: on the node the name gets a ".bfjobs-partial-<job tag>-" (or
# ".bfjobs-lock-") prefix and must still fit in one 255-character file name.
_SIF_NAME = r"[A-Za-z0-9][A-Za-z0-9._+-]{0,195}\.sif"
SCHEMES = ("docker", "oras", "library", "shub", "https")


class ImageRef(NamedTuple):
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
    from .. import validate

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
        m = re.match(_OCI, rest)
        if not m:
            raise BadInput(f"URI: not a valid {scheme}:// image reference: {show(uri)}")
        return ImageRef(uri, scheme, m["path"].rsplit("/", 1)[-1], m["tag"], m["digest"])
    if scheme in ("library", "shub"):
        m = re.match(_LIBRARY, rest)
        if not m:
            raise BadInput(f"URI: not a valid {scheme}:// reference: {show(uri)}")
        return ImageRef(uri, scheme, m["path"].rsplit("/", 1)[-1], m["tag"], None)
    m = re.match(_HTTPS, rest)
    if not m:
        raise BadInput(f"URI: not a valid https:// URL (no query strings or special characters): {show(uri)}")
    return ImageRef(uri, scheme, m["path"].rsplit("/", 1)[-1], None, None)


def check_sif_name(value: str, field: str = "--name") -> str:
    """An image file name; ``field`` names where it came from (``--name``, or the URI it is derived from)."""
    from .. import validate

    validate.ascii_only(field, value)
    if not re.fullmatch(_SIF_NAME, value):
        raise BadInput(
            f"{field}: expected a file name like NAME_TAG.sif (letters, digits, . _ + -; "
            f"at most 200 characters), got {show(value)}"
        )
    return value


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
    from .. import layout
    from ..node.requests import PullImage

    ref = parse_image_uri(uri)
    filename = check_sif_name(name) if name is not None else check_sif_name(ref.filename, "URI: image file name")
    if to not in ("shared", "home"):
        raise BadInput(f"--to: expected 'shared' or 'home', got {show(to)}")
    base = profile.cache_dir if to == "shared" else profile.home_dir
    group = settings.shared_group if to == "shared" else None
    task = PullImage(ref.uri, layout.images_dir(base), filename, settings.apptainer, force, group)
    return KIND.spec(profile, settings, task, f"{ref.uri} -> {task.target}", where=to)


class PullImageKind(Kind):
    """An Apptainer image (``apptainer pull``) into ``<cache_dir>/images`` or ``<home_dir>/images``."""

    name: ClassVar[str] = "pull-image"
    artefact: ClassVar[str] = "image"
    help: ClassVar[str] = "Pull URI (docker://, oras://, library://, shub://, https://) into Blackfish's image cache."
    argument: ClassVar[Argument] = Argument("uri", "URI", "URI")
    options: ClassVar[tuple[Option, ...]] = (
        Option(
            ("--to",),
            "to",
            "shared: <cache_dir>/images (where Blackfish looks); home: <home_dir>/images.",
            choice=("shared", "home"),
            default="shared",
            show_default=True,
        ),
        Option(("--name",), "name", "File name instead of <name>_<tag>.sif.", metavar="FILE.sif"),
        Option(("--force",), "force", "Pull again even if the image is present.", is_flag=True),
    )
    #: Small enough for any node a site gives a transfer job (README, "Defaults").
    slurm_defaults: ClassVar[Mapping[str, Any]] = {"time": "02:00:00", "mem": "4G", "cpus_per_task": 2}
    task_path: ClassVar[str] = "blackfish_jobs.node.pull:pull_image"

    def check_params(self, params: Mapping[str, Any], *, from_file: bool) -> None:
        if from_file and params.get("name"):
            raise BadInput("--name names one image: it cannot be used with --from-file")

    def build(
        self, entry: str, profile: Profile, settings: JobSettings, params: Mapping[str, Any], *, from_file: bool
    ) -> JobSpec:
        return pull_image(
            entry,
            profile,
            settings,
            to=params.get("to") or "shared",
            name=params.get("name"),
            force=bool(params.get("force")),
        )

    def present(self, spec: JobSpec) -> AlreadyPresent | None:
        """The image file is there *and* its record says it came from the URI asked (a stat and one read).

        Blackfish's names collide (``docker://myfork/x:1`` and ``docker://vllm/x:1`` are both
        ``x_1.sif``), so a file of the right name is not enough: a file from another source, or one with
        no record, raises :class:`NameCollision` (nothing is submitted; ``--name``/``--force`` resolve it).
        """
        from ..errors import NameCollision
        from ..node import records
        from ..node.requests import PullImage

        assert isinstance(spec.task, PullImage)
        if not spec.target.exists():
            return None
        problem = records.image_conflict(spec.target, spec.task.uri)
        if problem is not None:
            raise NameCollision(problem)
        from ..specs import AlreadyPresent

        return AlreadyPresent(spec.kind, spec.target, spec.profile.name, where=spec.where)

    def destination_hint(self, spec: JobSpec) -> str:
        if spec.target.parent.is_relative_to(spec.profile.cache_dir):
            return (
                "Only the shared cache's admins add the images Blackfish's services run (they read "
                "<cache_dir>/images alone): ask them to pull it there, or pull a copy of your own with --to home"
            )
        return ""

    def same_request(self, row: JobRow, spec: JobSpec) -> bool:
        """The same file from another URI is a name collision, not the same request."""
        uri = spec.task.uri
        if row.request.get("uri") != uri:
            from ..errors import NameCollision

            raise NameCollision(
                f"name collision: job {row.id} is pulling {show(str(row.request.get('uri')))} into "
                f"{row.target}, not {uri}; use --name NAME.sif to pull it under a name of its own"
            )
        return True

    def verify(self, row: JobRow) -> Finding | None:
        """The image against the size and sha256 its pull job recorded."""
        from .. import verify

        result = row.result or {}
        return verify.verify_image(Path(row.target), result.get("sha256"), result.get("size"), row.id)


KIND = PullImageKind()
