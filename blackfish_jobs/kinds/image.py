"""``pull-image``: an Apptainer image pulled from a URI into Blackfish's image cache.

The URI grammar and Blackfish's file name for it, the destination (``--to``), the presence check
(the file *and* its record naming the same URI), the name collisions and what ``verify`` checks.
"""

from __future__ import annotations

import re
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
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
    from ..node import registry

    base = profile.cache_dir if to == "shared" else profile.home_dir
    group = settings.shared_group if to == "shared" else None
    api_ref = registry.parse(ref.uri)
    insecure = api_ref is not None and api_ref.host in settings.insecure_registries
    task = PullImage(
        ref.uri, layout.images_dir(base), filename, settings.apptainer, force, group, ref.digest,
        insecure=insecure, insecure_registries=tuple(settings.insecure_registries),
    )
    return KIND.spec(profile, settings, task, f"{ref.uri} -> {task.target}", where=to)


#: The registry's answer for each request object (by identity, while it lives): one submit asks
#: once for its presence checks and its pinning, and a later submit asks again.
_answers: dict[int, tuple[weakref.ref[Any], Any]] = {}
#: Registries found unreachable, and when: within a minute their other images are not asked.
_down: dict[str, tuple[float, Any]] = {}
_DOWN_SECONDS = 60.0


def _ignore(_message: str) -> None:
    pass


def resolve_here(task: Any) -> Any:
    """What the registry says ``task``'s reference names now: a :class:`registry.Resolved`, or the
    :class:`registry.RegistryError` it answered (returned, not raised); None when no registry is
    asked from here (an unpinnable source, ``BFJOBS_REGISTRY_OFFLINE``). Asked once per request
    object: the presence checks and the pinning of one submit share one request (or one timeout)."""
    from .. import constants
    from ..node import registry

    ref = registry.parse(task.uri)
    if ref is None or constants.registry_offline_env():
        return None
    key = id(task)
    memo = _answers.get(key)
    if memo is not None and memo[0]() is task:
        return memo[1]
    down = _down.get(ref.host)
    if down is not None and time.monotonic() - down[0] < _DOWN_SECONDS:
        return down[1]  # a registry that just timed out is not asked again for each image of a list
    try:
        answer: Any = registry.Client(task.insecure_registries).resolve(ref)
    except registry.RegistryError as exc:
        answer = exc
        if isinstance(exc, registry.Unreachable):
            _down[ref.host] = (time.monotonic(), exc)
    _answers[key] = (weakref.ref(task, lambda _gone, key=key: _answers.pop(key, None)), answer)
    return answer


def _refusal(answer: Any) -> str | None:
    """The one line of a registry's "no" (None: a digest, nothing asked, or unreachable)."""
    from ..node import registry

    if isinstance(answer, registry.RegistryError) and not isinstance(answer, registry.Unreachable):
        return str(answer)
    return None


#: At most this many registry requests at once when a --from-file list is pinned at submit.
RESOLVE_WORKERS = 8


def _ask_all(tasks: Sequence[Any]) -> list[Any]:
    """:func:`resolve_here` for each task, the first alone (a dead registry costs one wait: the
    others of that registry are not asked), the rest 8 at a time."""
    from concurrent.futures import ThreadPoolExecutor

    answers = [resolve_here(tasks[0])] if tasks else []
    rest = tasks[1:]
    if rest:
        pool = ThreadPoolExecutor(max_workers=min(RESOLVE_WORKERS, len(rest)))
        try:
            answers += pool.map(resolve_here, rest)
        finally:  # Ctrl-C: drop the queued requests instead of waiting for each of them
            pool.shutdown(wait=False, cancel_futures=True)
    return answers


def pin_digests(specs: Sequence[JobSpec], note: Callable[[str], None] = _ignore) -> list[JobSpec]:
    """Pulls pinned to the manifest digest their tag names now (``docker://``, ``oras://``).

    A tag or digest the registry does not know (or will not show) costs no Slurm job: any such
    answer raises :class:`RegistryRefused` naming every bad entry. A registry that cannot be asked
    from here is ``note``d once and its tags are resolved on the node; sources without digests
    (``library://``, ``shub://``, ``https://``) are ``note``d as unpinnable.
    """
    from .. import constants
    from ..errors import RegistryRefused
    from ..node import registry

    todo = [i for i, s in enumerate(specs) if registry.parse(s.task.uri) is not None]
    unpinnable = sorted({s.task.uri.partition("://")[0] for s in specs if registry.parse(s.task.uri) is None})
    for scheme in unpinnable:
        note(f"bfjobs: {scheme}:// tags cannot be pinned to a digest: the record holds the image file's sha256")
    if not todo:
        return list(specs)
    if constants.registry_offline_env():  # asked for by whoever set it: the node resolves the tags
        return list(specs)
    answers = dict(zip(todo, _ask_all([specs[i].task for i in todo]), strict=True))
    bad = [(i, _refusal(a)) for i, a in sorted(answers.items()) if _refusal(a) is not None]
    if bad:
        if len(bad) == 1 and specs[bad[0][0]].origin is None:
            raise RegistryRefused(f"{bad[0][1]}: nothing submitted")
        shown = "; ".join(f"{specs[i].origin or specs[i].label}: {text}" for i, text in bad[:5])
        more = f"; and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise RegistryRefused(
            f"--from-file: {len(bad)} image(s) the registry refused, nothing submitted: {shown}{more}"
        )
    unreachable: dict[str, Any] = {}
    pinned = list(specs)
    for index, answer in answers.items():
        if isinstance(answer, registry.Resolved):
            pinned[index] = replace(specs[index], task=replace(specs[index].task, digest=answer.digest))
        elif isinstance(answer, registry.Unreachable):
            unreachable.setdefault(str(answer), index)
    for why in unreachable:
        note(f"bfjobs: {why}: the job resolves the tag on the node")
    return pinned


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

    def prepare(self, specs: Sequence[JobSpec], note: Callable[[str], None] = _ignore) -> list[JobSpec]:
        """Pinned to the digest each tag names now (:func:`pin_digests`)."""
        return pin_digests(specs, note)

    def ask_ahead(self, specs: Sequence[JobSpec]) -> None:
        """The registries' answers for the images of a list already in place, 8 at a time: each
        :meth:`present` then finds its answer (:func:`resolve_here`'s memo)."""
        todo = [s.task for s in specs if s.task.digest is None and s.target.exists()]
        if len(todo) > 1:
            _ask_all(todo)

    def present(self, spec: JobSpec) -> AlreadyPresent | None:
        """The image file is there, its record says it came from the URI asked, and the tag still
        names the digest it was pulled from (a stat, one read, one registry request).

        Blackfish's names collide (``docker://myfork/x:1`` and ``docker://vllm/x:1`` are both
        ``x_1.sif``), so a file of the right name is not enough: a file from another source, or one with
        no record, raises :class:`NameCollision` (nothing is submitted; ``--name``/``--force`` resolve it).
        A tag that moved raises :class:`TagMoved` with both digests. A registry that cannot be asked
        from here leaves the decision to the job (submitted: the node compares).
        """
        from ..errors import NameCollision, RegistryRefused, TagMoved
        from ..node import records, registry
        from ..node.requests import PullImage

        assert isinstance(spec.task, PullImage)
        if not spec.target.exists():
            return None
        problem = records.image_conflict(spec.target, spec.task.uri)
        if problem is not None:
            raise NameCollision(problem)
        digest = spec.task.digest  # a reference by digest: what is in place cannot have moved
        answer = resolve_here(spec.task) if digest is None else None
        if isinstance(answer, registry.Resolved):
            digest = answer.digest
        elif isinstance(answer, registry.Unreachable):
            return None  # the node asks the registry, and finds the image in place or moved
        elif answer is not None:
            raise RegistryRefused(f"{_refusal(answer)}: nothing submitted")
        if digest is not None:
            moved = records.image_moved(spec.target, spec.task.uri, digest)
            if moved is not None:
                raise TagMoved(moved)
        from ..specs import AlreadyPresent

        return AlreadyPresent(spec.kind, spec.target, spec.profile.name, where=spec.where, digest=digest)

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
        pinned = row.request.get("digest")
        if isinstance(pinned, str) and spec.task.digest is None:  # the tag may have moved since
            from ..errors import TagMoved
            from ..node import registry
            from ..node.records import short

            answer = resolve_here(spec.task)
            if isinstance(answer, registry.Resolved) and answer.digest != pinned:
                raise TagMoved(
                    f"job {row.id} is pulling {uri} at {short(pinned)}, but the tag now points at "
                    f"{short(answer.digest)}: nothing submitted; once it has ended, --force pulls "
                    f"{short(answer.digest)} and replaces the file"
                )
        return True

    def verify(self, row: JobRow) -> Finding | None:
        """The image against the size and sha256 its pull job recorded."""
        from .. import verify

        result = row.result or {}
        return verify.verify_image(Path(row.target), result.get("sha256"), result.get("size"), row.id)


KIND = PullImageKind()
