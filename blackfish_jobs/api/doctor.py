"""``bfjobs doctor``: can this user's profile run bfjobs jobs here? One check per line, each with its fix.

Cheap on purpose (a login node): one ``sinfo`` (the partitions this user may submit to) and one
``sacctmgr`` call (the QOS this user's associations allow: one that exists but is not theirs is
refused at submit too), a handful of ``stat``s, one HTTP request to the hub with a short timeout;
nothing walks a cache.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..backends.base import Check
from ..errors import BfjobsError

if TYPE_CHECKING:
    from ..backends import Backends
    from ..backends.base import Backend
    from ..config import JobSettings, Profile

#: How long the hub may take to answer (a login node without a route out should not hang doctor).
HUB_TIMEOUT_S = 5.0


def run(profile_name: str | None, backends: Backends) -> tuple[str | None, list[Check]]:
    """The profile's name (None if it cannot be loaded) and every check, in the order shown."""
    from .. import config, kinds

    try:
        profile = config.load_profile(profile_name)
    except BfjobsError as exc:
        fix = "fix profiles.cfg (Blackfish's `blackfish profile` commands), or pass --profile NAME"
        return None, [Check("profile", "fail", str(exc), fix)]
    source = "built in: there is no profiles.cfg" if profile.builtin else str(config.profiles_path())
    where = f"; cluster {profile.user}@{profile.host} over ssh" if profile.remote else ""
    checks = [Check("profile", "ok", f"{profile.name} ({profile.schema}; {source}{where})")]
    settings: dict[str, JobSettings] = {}
    resolved: dict[str, Any] = {}
    for kind in kinds.names():
        try:
            resolved[kind] = kinds.resolve_settings(profile.name, kind, remote=profile.remote)
            settings[kind] = resolved[kind].settings
        except BfjobsError as exc:
            checks.append(Check(f"settings: {kind}", "fail", str(exc), "fix the file and key it names"))
    if len(settings) == len(kinds.names()):
        checks.append(Check("settings", "ok", "the site file and bfjobs.toml are valid (see `bfjobs config show`)"))
    if profile.remote:
        return profile.name, checks + _remote(profile, resolved, backends)
    return profile.name, checks + here(profile, settings, backends.for_profile(profile))


def here(profile: Profile, settings: dict[str, JobSettings], backend: Backend) -> list[Check]:
    """The checks of what must be true where the jobs are submitted (this machine, or a remote
    profile's cluster answering its laptop): Slurm, the caches, the group, the hub, the interpreter."""
    wanted: dict[str, set[str]] = {}
    for values in settings.values():
        for key in ("partition", "qos"):
            if getattr(values, key):
                wanted.setdefault(key, set()).add(getattr(values, key))
    checks = backend.checks(profile.name, wanted)
    checks += _caches(profile)
    for group in sorted({s.shared_group for s in settings.values() if s.shared_group}):
        checks.append(_group(profile, group))
    endpoints = sorted({s.hf_endpoint for s in settings.values() if s.hf_endpoint}) or [None]
    checks += [_hub(endpoint) for endpoint in endpoints]  # the kinds' hubs (usually one), else the default
    checks.append(_interpreter())
    return checks


def _remote(profile: Profile, resolved: dict[str, Any], backends: Backends) -> list[Check]:
    """A remote profile: can its cluster be reached, and what its bfjobs finds there (one round
    trip), with the settings this laptop sends (``resolved``: the kinds whose settings are valid)."""
    from .. import config
    from ..backends.protocol import one_line

    agent = backends.named("remote").agent(profile.name)  # type: ignore[attr-defined]
    layers = {kind: config.sent_layers(found) for kind, found in resolved.items()}
    request = {
        "profile": {"name": profile.name, "home_dir": str(profile.home_dir), "cache_dir": str(profile.cache_dir)},
        "layers": layers,
    }
    try:
        answer = agent.call("doctor", request)
    except BfjobsError as exc:
        return [Check("ssh", "fail", str(exc), "see docs/remote.md (Troubleshooting)")]
    reached = Check("ssh", "ok", f"{agent.target.where()} answers; bfjobs runs there with {agent.python}")
    with agent.reading("doctor"):
        found = [Check(*(one_line(str(v)) if v is not None else None for v in c)) for c in answer]
        if any(c.status not in ("ok", "warn", "fail") or not c.name for c in found):
            raise ValueError("a check's status")
    return [reached, *[c._replace(name=f"{c.name} (on {profile.host})") for c in found]]


def _caches(profile: Profile) -> list[Check]:
    """Your home_dir must be writable; the shared cache_dir readable, and writable only for admins."""
    from .. import layout

    found = []
    home = profile.home_dir
    if layout.can_write(home):
        found.append(Check("home_dir", "ok", f"{home}: writable by you (your images and models go here)"))
    else:
        found.append(
            Check(
                "home_dir",
                "fail",
                f"{home}: not writable by you",
                "set the profile's home_dir to a folder you own (profiles.cfg)",
            )
        )
    cache = profile.cache_dir
    if cache == home:
        return found
    if not os.access(cache, os.R_OK | os.X_OK):
        found.append(
            Check(
                "cache_dir",
                "fail",
                f"{cache}: not readable by you",
                "ask its admins to make it readable (chmod -R a+rX), or fix the profile's cache_dir",
            )
        )
    elif layout.can_write(cache):
        found.append(Check("cache_dir", "ok", f"{cache}: writable by you (you can publish shared artefacts)"))
    else:
        found.append(
            Check(
                "cache_dir",
                "ok",
                f"{cache}: read-only for you (shared artefacts are the admins'; yours go to home_dir)",
            )
        )
    closed = [p for p in (cache, cache / "images", cache / "models") if _is_dir(p) and not _world_readable(p)]
    if closed:
        found.append(
            Check(
                "cache modes",
                "warn",
                f"not readable by every user: {', '.join(map(str, closed))}",
                "Blackfish's services run as other users: chmod 755 these folders",
            )
        )
    return found


def _group(profile: Profile, group: str) -> Check:
    """``shared_group``: does the group exist, is this user in it, and are the shared cache's
    folders (those there; no walk) the group's, setgid and group-writable?"""
    from .. import layout

    name = f"shared_group {group}"
    gid = layout.group_id(group)
    if gid is None:
        return Check(
            name,
            "fail",
            f"no group {group!r} on this machine",
            "fix shared_group in the site file or bfjobs.toml (getent group lists the groups)",
        )
    if not layout.can_give_to(gid):
        return Check(name, "ok", "you are not a member: the shared cache is its members'; yours go to home_dir")
    cache = profile.cache_dir
    wrong = []
    records = cache / ".bfjobs"  # node.records: where each artefact's record goes
    for path in (cache, cache / "images", cache / "models", records, records / "images", records / "models"):
        try:
            st = path.stat()
        except OSError:
            continue
        needed = stat.S_ISGID | stat.S_IWGRP | stat.S_IXGRP
        if st.st_gid != gid or st.st_mode & needed != needed:
            wrong.append(str(path))
    if wrong:
        return Check(
            name,
            "warn",
            f"not the group's, setgid and group-writable: {', '.join(wrong)}",
            f"as their owner: chgrp {group} DIR && chmod g+rwxs DIR for each (docs/install.md, step 5)",
        )
    return Check(name, "ok", f"you are a member; {cache} is the group's (setgid, group-writable)")


def _is_dir(path: Path) -> bool:
    """``path.is_dir()`` that is False where a folder above cannot be searched (Python 3.11's raises)."""
    try:
        return stat.S_ISDIR(path.stat().st_mode)
    except OSError:
        return False


def _world_readable(path: Path) -> bool:
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    needed = stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(mode) else 0)
    return mode & needed == needed


def _hub(endpoint: str | None) -> Check:
    """One request to the hub (any HTTP answer means it is reachable from here)."""
    import urllib.error
    import urllib.request

    from ..node.records import public_endpoint

    if endpoint is None:
        from huggingface_hub import constants as hub_constants

        endpoint = hub_constants.ENDPOINT
    url = endpoint
    shown = public_endpoint(url)
    if not url.startswith(("http://", "https://")):  # settings are checked; HF_ENDPOINT's default is not
        return Check("hub", "fail", f"{shown} is not an http(s) URL", "set hf_endpoint to the hub's URL")
    request = urllib.request.Request(url.rstrip("/") + "/api/models?limit=1")  # noqa: S310 (as below)
    try:
        with urllib.request.urlopen(request, timeout=HUB_TIMEOUT_S):  # noqa: S310 (http(s) only, checked above)
            pass
    except urllib.error.HTTPError as exc:  # it answered: reachable (a mirror may serve no listing)
        return Check("hub", "ok", f"{shown} answers from here (HTTP {exc.code} to a listing request)")
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return Check(
            "hub",
            "warn",
            f"{shown} does not answer from here: {' '.join(str(reason).split())[:200]}",
            "downloads fetch from the transfer nodes, which may reach it when the login node cannot; if they "
            "cannot either, set hf_endpoint to a mirror they reach (bfjobs.toml)",
        )
    return Check("hub", "ok", f"{shown} answers from here")


def _interpreter() -> Check:
    """Jobs run this interpreter by absolute path on the node: every user of a site install needs it."""
    import blackfish_jobs

    python = Path(sys.executable)
    package = Path(blackfish_jobs.__file__).parent
    private = [str(p) for p in (python, package) if not _readable_by_all(p)]
    if private:
        return Check(
            "interpreter",
            "warn",
            f"{python} runs the jobs; not readable by every user: {', '.join(private)}",
            "fine for your own install; a site install must be readable by all and on a filesystem the "
            "transfer nodes mount (docs/install.md)",
        )
    return Check(
        "interpreter",
        "ok",
        f"{python} runs the jobs (readable by every user; the transfer nodes must mount its filesystem)",
    )


def _readable_by_all(path: Path) -> bool:
    """``path`` (symlinks resolved; a file readable and runnable, a folder readable) and every
    folder above it (searchable) are usable by any user."""
    try:
        real = path.resolve()
        mode = real.stat().st_mode
        if not stat.S_ISDIR(mode) and not mode & stat.S_IXOTH:
            return False
        return _world_readable(real) and all(parent.stat().st_mode & stat.S_IXOTH for parent in real.parents)
    except OSError:
        return False
