"""Profiles (Blackfish's ``profiles.cfg``) and bfjobs' own job settings (``bfjobs.toml``).

``profiles.cfg`` is read exactly as Blackfish reads it (a plain ``configparser.ConfigParser``),
so a file that Blackfish accepts is accepted here and vice versa. bfjobs' own settings live in a
separate TOML file because every section of ``profiles.cfg`` is taken as a profile by Blackfish.
"""

from __future__ import annotations

import configparser
import contextvars
import difflib
import os
import re
import tomllib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from . import constants, validate
from .errors import ConfigError, show

_PROFILE_NAME = re.compile(r"[A-Za-z0-9._-]+")  # used with fullmatch: "$" would let "name\n" through
# Blackfish hands host and user to ssh: no leading '-' (an ssh option) and no shell characters.
_HOST = re.compile(r"[A-Za-z0-9_\[:][A-Za-z0-9._:\[\]-]{0,252}")
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._@-]{0,63}")
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Profile:
    """One Blackfish profile: where a user's and the shared caches live, and how jobs run."""

    name: str
    schema: str  # "slurm" or "local"
    home_dir: Path
    cache_dir: Path
    host: str | None = None
    user: str | None = None
    builtin: bool = False

    @property
    def jobs_dir(self) -> Path:
        """Where job folders live: on the shared filesystem so any process can re-attach."""
        return self.home_dir.joinpath(*constants.JOBS_SUBDIR)

    @property
    def remote(self) -> bool:
        """A ``slurm`` profile whose ``host`` is not this machine: its cluster is reached over ssh."""
        return self.schema == "slurm" and self.host is not None and not is_this_host(self.host)


def is_this_host(host: str) -> bool:
    """Does ``host`` (a profile's string, never resolved: no DNS, no ``ssh -G``) name this machine?"""
    import socket

    name = socket.gethostname()
    bare = host.lower().removeprefix("[").removesuffix("]")  # "[::1]", as ssh and URLs write IPv6
    return bare in {"localhost", "127.0.0.1", "::1", name.lower(), name.split(".")[0].lower()}


#: The profiles ``--profile`` names when there is no ``profiles.cfg``.
BUILTIN_NAMES = (constants.BUILTIN_SLURM_PROFILE, constants.BUILTIN_PROFILE)


def builtin_profile(home: Path | None = None, name: str | None = None) -> Profile:
    """The profile used when there is no ``profiles.cfg``: home and cache are the app dir.

    ``slurm`` (this host submits to Slurm) where ``sbatch`` is on PATH, else ``local``: the
    heavy work never runs on a login node unless asked for (``name`` = ``local``).
    """
    base = validate.safe_path("BLACKFISH_HOME_DIR", (home or constants.blackfish_home()).resolve())
    if name is None:
        name = constants.BUILTIN_SLURM_PROFILE if constants.which("sbatch") else constants.BUILTIN_PROFILE
    if name == constants.BUILTIN_SLURM_PROFILE:
        user = _ssh_word("the current user", _current_user(), _USER)
        return Profile(name, "slurm", base, base, host="localhost", user=user, builtin=True)
    return Profile(constants.BUILTIN_PROFILE, "local", base, base, builtin=True)


def _current_user() -> str:
    """The name of the user running bfjobs (from the password database, not ``$USER``)."""
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        raise ConfigError(f"the built-in slurm profile: no user name for uid {os.geteuid()}") from None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``choices`` to a misspelt ``word``, else ``""``."""
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f"; did you mean {show(close[0])}?" if close else ""


def _names(names: Iterable[str]) -> str:
    return ", ".join(n if _PROFILE_NAME.fullmatch(n) else show(n) for n in names)


def _user_path(label: str, value: str) -> Path:
    """A ``~``-expanded, validated absolute path.

    Checked before expansion: ``~nosuchuser`` or a NUL would otherwise make ``expanduser`` raise
    (a traceback) instead of a one-line error.
    """
    text = validate.ascii_only(label, value)
    try:
        expanded = Path(text).expanduser()
    except (RuntimeError, KeyError, ValueError):
        raise ConfigError(f"{label}: cannot expand '~' (no such user or home directory) in {show(text)}") from None
    return validate.safe_path(label, expanded)


def _cluster_path(label: str, value: str) -> Path:
    """A remote profile's path: the cluster's, so ``~`` (this machine's home) cannot be expanded here."""
    text = validate.ascii_only(label, value)
    if text.startswith("~"):
        raise ConfigError(f"{label}: a remote profile needs the cluster's absolute path, not {show(text)}")
    return validate.safe_path(label, Path(text))


def profiles_path(home: Path | None = None) -> Path:
    return (home or constants.blackfish_home()) / "profiles.cfg"


def _read_parser(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    try:
        with path.open(encoding="utf-8") as fh:
            parser.read_file(fh)
    except (configparser.Error, UnicodeDecodeError, OSError) as exc:
        raise ConfigError(f"{path}: cannot be read as a profiles file: {exc}") from None
    if parser.defaults():
        raise ConfigError(f"{path}: a [DEFAULT] section is not allowed (Blackfish reserves it)")
    return parser


def _default_section(parser: configparser.ConfigParser) -> str:
    """Blackfish's rule: ``default = true``, else a section named ``default``, else the first."""
    sections = parser.sections()
    for sec in sections:
        if parser.get(sec, "default", raw=True, fallback="").strip().lower() in _TRUE:
            return sec
    if "default" in sections:
        return "default"
    return sections[0]


def _sections(path: Path) -> list[str]:
    return _read_parser(path).sections() if path.is_file() else []


def known_profiles(home: Path | None = None) -> list[str]:
    """The names ``--profile`` accepts: the sections of ``profiles.cfg``, or the built-in ones without it."""
    return _sections(profiles_path(home)) or list(BUILTIN_NAMES)


def unknown_profile(name: str, home: Path | None = None) -> ConfigError:
    """The one-line error for a profile name that is neither in ``profiles.cfg`` nor built in."""
    path = profiles_path(home)
    sections = _sections(path)
    if sections:
        hint = did_you_mean(name, sections)
        return ConfigError(f"profile {show(name)} not found in {path} (profiles: {_names(sections)}){hint}")
    why = "no profiles in" if path.is_file() else "there is no"
    builtin = _names(BUILTIN_NAMES)
    hint = did_you_mean(name, BUILTIN_NAMES)
    return ConfigError(f"profile {show(name)} not found: {why} {path} (built-in profiles: {builtin}){hint}")


def load_profile(name: str | None = None, home: Path | None = None, *, check_dirs: bool = True) -> Profile:
    """Resolve ``--profile NAME`` (or the default profile) to a validated :class:`Profile`.

    ``check_dirs``: a profile's ``home_dir`` and ``cache_dir`` must exist. Blackfish creates the
    home_dir when a profile is added and expects the cache to be there, so a missing one is a typo
    or a filesystem not mounted here; creating it would publish where Blackfish never looks.
    (The built-in profile's home is the app dir, created on first use.)
    """
    if name is not None and not _PROFILE_NAME.fullmatch(name):
        raise ConfigError(f"--profile: not a profile name (letters, digits, '.', '_', '-'): {show(name)}")
    path = profiles_path(home)
    parser = _read_parser(path) if path.is_file() else None
    if parser is None or not parser.sections():
        if name is None or name in BUILTIN_NAMES:
            return builtin_profile(home, name)
        raise unknown_profile(name, home)
    section = name if name is not None else _default_section(parser)
    if not parser.has_section(section):
        raise unknown_profile(section, home)
    if not _PROFILE_NAME.fullmatch(section):
        raise ConfigError(f"{path}: invalid profile name {show(section)}")
    try:
        raw = {k: v.strip() for k, v in parser.items(section)}
    except configparser.Error as exc:
        raise ConfigError(f"{path} [{section}]: {exc}") from None
    schema = raw.get("schema") or raw.get("type")
    if schema not in ("slurm", "local"):
        raise ConfigError(f"{path} [{section}]: 'schema' must be 'slurm' or 'local', got {show(schema)}")
    required = ["home_dir", "cache_dir"] + (["host", "user"] if schema == "slurm" else [])
    for key in required:
        if not raw.get(key):
            raise ConfigError(f"{path} [{section}]: missing required key '{key}'")
    host = _ssh_word(f"[{section}] host", raw["host"], _HOST) if schema == "slurm" else None
    user = _ssh_word(f"[{section}] user", raw["user"], _USER) if schema == "slurm" else None
    remote = schema == "slurm" and host is not None and not is_this_host(host)
    path_of = _cluster_path if remote else _user_path
    home_dir = path_of(f"[{section}] home_dir", raw["home_dir"])
    cache_dir = path_of(f"[{section}] cache_dir", raw["cache_dir"])
    if check_dirs and not remote:  # a remote profile's folders are the cluster's: checked there
        for key, where in (("home_dir", home_dir), ("cache_dir", cache_dir)):
            if not where.is_dir():
                raise ConfigError(
                    f"{path} [{section}] {key}: {where} does not exist or is not a directory "
                    "(a typo, or a filesystem not mounted here? bfjobs does not create it)"
                )
    return Profile(section, schema, home_dir, cache_dir, host=host, user=user)


def _ssh_word(label: str, value: str, pattern: re.Pattern[str]) -> str:
    """A host or user name as ssh takes it: a leading '-' would be read as an ssh option."""
    validate.ascii_only(label, value)
    if not pattern.fullmatch(value):
        raise ConfigError(f"{label}: not a valid name (letters, digits, '.', '_', '-'; no leading '-'): {show(value)}")
    return value


# --------------------------------------------------------------------------- bfjobs.toml


@dataclass(frozen=True)
class JobSettings:
    """How a job is run: Slurm resources and the node's environment. All values validated."""

    partition: str | None = None
    qos: str | None = None
    account: str | None = None
    time: str | None = None
    mem: str | None = None
    cpus_per_task: int | None = None
    constraint: str | None = None
    modules: tuple[str, ...] = ()
    setup: tuple[str, ...] = ()
    apptainer: str = "apptainer"
    templates_dir: Path | None = None
    hf_endpoint: str | None = None
    max_workers: int | None = None
    max_parallel: int | None = None  # job arrays: at most this many elements run at once (%N)
    shared_group: str | None = None  # the Unix group of the shared cache's admins (publish.group_mode)
    remote_python: str = "python3"  # a remote profile: the cluster's Python that has bfjobs (a path or a command)
    remote_session: int = 300  # a remote profile: seconds a held session waits for the next status (0: none)
    insecure_registries: tuple[str, ...] = ()  # host[:port] of registries asked over plain HTTP (--no-https)

    def merged(self, **overrides: Any) -> JobSettings:
        """Return a copy with the non-``None`` overrides (already validated) applied."""
        clean = {k: v for k, v in overrides.items() if v is not None and v != ()}
        return replace(self, **clean)


# a command name (never an option: no leading '-' or '.') or an absolute path (checked by safe_path)
_APPTAINER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]*")


#: Are the settings being read for a profile whose folders are on this machine? (False: a remote
#: profile's, whose paths are the cluster's: checked by bfjobs there.)
_FOLDERS_HERE: contextvars.ContextVar[bool] = contextvars.ContextVar("bfjobs_folders_here", default=True)

#: Is the table being checked one this command reads its settings from? (False: another profile's
#: table of the user's file, checked for typos only: its paths may be another machine's.)
_IN_USE: contextvars.ContextVar[bool] = contextvars.ContextVar("bfjobs_table_in_use", default=True)


def _check_setting(key: str, value: Any, label: str) -> Any:
    """Validate one bfjobs.toml (or command-line) setting; return its normalised value.

    ``label`` names it in errors as the user wrote it: ``bfjobs.toml [defaults] time``, ``--time``.
    """
    if key in ("partition", "qos", "account"):
        return validate.name(label, _as_str(label, value))
    if key == "shared_group":
        return validate.name(label, _as_str(label, value), max_len=32)
    if key == "time":
        return validate.slurm_time(label, _as_str(label, value))
    if key == "mem":
        return validate.slurm_mem(label, _as_str(label, value))
    if key == "cpus_per_task":
        return validate.positive_int(label, value, 1024)
    if key == "max_parallel":
        return validate.positive_int(label, value, 10000)
    if key == "max_workers":
        return validate.positive_int(label, value, 64)
    if key == "remote_session":  # seconds; 0 turns held sessions off (backends.session)
        return validate.positive_int(label, value, 86400, minimum=0)
    if key == "constraint":
        return validate.constraint(label, _as_str(label, value))
    if key == "modules":
        return tuple(validate.module(label, _as_str(label, v)) for v in _as_list(label, value))
    if key == "setup":
        return tuple(validate.setup_line(label, _as_str(label, v)) for v in _as_list(label, value))
    if key in ("apptainer", "remote_python"):  # a command the job (or the cluster's login shell) runs
        text = validate.ascii_only(label, _as_str(label, value))
        if text.startswith("/"):
            return str(validate.safe_path(label, text))
        if not _APPTAINER.fullmatch(text):
            raise ConfigError(f"{label}: expected a command name or absolute path, got {show(text)}")
        return text
    if key == "templates_dir":
        if not _IN_USE.get():  # a profile not in use: maybe a cluster's folder, or a home not here
            return _path_text(label, _as_str(label, value))
        if not _FOLDERS_HERE.get():  # a remote profile's: the cluster's folder, checked there
            return _cluster_path(label, _as_str(label, value))
        path = _user_path(label, _as_str(label, value))
        if not path.is_dir():  # refused with the other settings, before submit creates a job folder
            raise ConfigError(f"{label}: {show(str(path))} does not exist or is not a directory")
        return path
    if key == "hf_endpoint":
        return validate.url(label, _as_str(label, value))
    if key == "insecure_registries":
        return tuple(validate.registry_host(label, _as_str(label, v)) for v in _as_list(label, value))
    raise ConfigError(f"{label}: unknown setting {show(key)}")


def _path_text(label: str, value: str) -> str:
    """A path's text checked as written (absolute, or ``~``/``~user`` then the rest), never expanded
    nor looked up: a setting of a profile not in use, whose folders may be another machine's."""
    text = validate.ascii_only(label, value)
    validate.safe_path(label, "/" + text[1:].lstrip("/") if text.startswith("~") else text)
    return text


def _as_str(label: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{label}: expected a string, got {type(value).__name__}")
    return value


def _as_list(label: str, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError(f"{label}: expected a list of strings")
    if len(value) > 64:
        raise ConfigError(f"{label}: too many entries ({len(value)}, at most 64)")
    return value


_SETTING_KEYS = {f.name for f in fields(JobSettings)}


def settings_path(home: Path | None = None) -> Path:
    env = constants.config_path_env()
    return Path(env) if env else (home or constants.blackfish_home()) / "bfjobs.toml"


def _read_toml(path: Path, *, named_by: str | None = None, site: bool = False) -> dict[str, Any]:
    """The file's tables; ``{}`` for a missing file unless an environment variable (``named_by``)
    named it. Only the site file may hold a ``[site]`` table."""
    if not path.is_file():
        if named_by:
            raise ConfigError(f"{named_by}: {show(str(path), 300)} does not exist or is not a file")
        return {}
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    allowed = {"defaults", "profiles", "site"} if site else {"defaults", "profiles"}
    unknown = set(data) - allowed
    if "site" in unknown:
        raise ConfigError(f"{path}: a [site] table belongs in the site file ({constants.site_config_path()})")
    if unknown:
        first = show(sorted(unknown)[0])
        raise ConfigError(f"{path}: unknown top-level table {first} (use [defaults] or [profiles.NAME])")
    return data


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")  # a TOML bare key: shown as it is; any other name is escaped


def _table_name(file: Path, *parts: str) -> str:
    """How errors name a table: ``/path/bfjobs.toml [profiles.della.pull-image]`` (names escaped)."""
    return f"{file} [{'.'.join(p if _BARE_KEY.fullmatch(p) else show(p) for p in parts)}]"


def _settings_table(table: dict[str, Any], file: Path, *dotted: str) -> dict[str, Any]:
    """Validate a table of plain settings (a kind's table holds no further tables)."""
    where = _table_name(file, *dotted)
    for key in table:
        if key not in _SETTING_KEYS:
            raise ConfigError(f"{where}: unknown setting {show(key)}{did_you_mean(key, _SETTING_KEYS)}")
    return {k: _check_setting(k, v, f"{where} {k}") for k, v in table.items()}


def _layer(
    table: Any, file: Path, dotted: tuple[str, ...], kind: str, kinds: Collection[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split table ``[dotted]`` into its plain settings and the settings of its ``kind`` sub-table
    (``kinds``: every kind's name; a sub-table naming none of them is a misspelt kind)."""
    if table is None:
        return {}, {}
    if not isinstance(table, dict):
        raise ConfigError(f"{_table_name(file, *dotted)}: expected a table")
    plain: dict[str, Any] = {}
    per_kind: dict[str, Any] = {}
    for key, value in table.items():
        if key in kinds:
            if not isinstance(value, dict):
                raise ConfigError(f"{_table_name(file, *dotted, key)}: expected a table")
            checked = _settings_table(value, file, *dotted, key)  # the other kinds too: typos surface early
            if key == kind:
                per_kind = checked
        elif isinstance(value, dict) and key not in _SETTING_KEYS:  # a sub-table: meant as a kind's
            hint = did_you_mean(key, kinds)
            listed = ", ".join(kinds)
            raise ConfigError(f"{_table_name(file, *dotted, key)}: unknown kind {show(key)} (kinds: {listed}){hint}")
        else:
            plain[key] = value
    return _settings_table(plain, file, *dotted), per_kind


def _check_profile_tables(profiles: dict[str, Any], file: Path, home: Path | None) -> None:
    """Every ``[profiles.NAME]`` of the user's file names a profile that exists: a misspelt one
    would otherwise be ignored and its partition, QOS or modules silently not used."""
    known = known_profiles(home)
    for name in profiles:
        if name not in known:
            where = profiles_path(home)
            source = f"in {where}" if where.is_file() and _sections(where) else f"built in (there is no {where})"
            raise ConfigError(
                f"{_table_name(file, 'profiles', name)}: no such profile {source}; "
                f"profiles: {_names(known)}{did_you_mean(name, known)}"
            )


@dataclass(frozen=True)
class Resolved:
    """One kind's settings for one profile, and where each came from: a table of a file
    (``/etc/bfjobs/bfjobs.toml [defaults]``), an environment variable, a flag, or ``default``."""

    settings: JobSettings
    sources: dict[str, str]
    #: the keys the site fixes (``[site] fixed``): no user file, variable or flag may change them
    fixed: tuple[str, ...] = ()


def _site_fixed(data: dict[str, Any], path: Path) -> tuple[str, ...]:
    """The site file's ``[site]`` table: ``fixed``, a list of setting names."""
    table = data.get("site", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path} [site]: expected a table")
    for key in table:
        if key != "fixed":
            raise ConfigError(f"{path} [site]: unknown key {show(key)}{did_you_mean(key, ['fixed'])}")
    fixed = _as_list(f"{path} [site] fixed", table.get("fixed", []))
    for key in fixed:
        if not isinstance(key, str) or key not in _SETTING_KEYS:
            hint = did_you_mean(key, _SETTING_KEYS) if isinstance(key, str) else ""
            raise ConfigError(f"{path} [site] fixed: unknown setting {show(str(key))}{hint}")
    return tuple(dict.fromkeys(fixed))


def _file_layers(
    data: dict[str, Any], path: Path, profile: str, kind: str, kinds: Collection[str], *, site: bool = False
) -> list[tuple[str, dict[str, Any]]]:
    """A file's four layers for ``profile`` and ``kind``, lowest first, each with its table's name.

    The tables used (``[defaults]``, ``[profiles.PROFILE]``, each with every kind's sub-table) are
    checked in full. Of the user's file, the other profiles' tables are checked too, so a typo
    surfaces early, but their values never against this machine (a remote profile's
    ``templates_dir`` is the cluster's folder). Of the site file, the other profiles' tables are
    not read at all: they may be other users' profiles, and a user cannot fix the site file.
    """
    profiles = data.get("profiles", {})
    if not isinstance(profiles, dict):
        raise ConfigError(f"{path}: [profiles] must be a table of profile tables")
    d_plain, d_kind = _layer(data.get("defaults"), path, ("defaults",), kind, kinds)
    p_plain, p_kind = _layer(profiles.get(profile), path, ("profiles", profile), kind, kinds)
    if not site:
        token = _IN_USE.set(False)
        try:
            for name, table in profiles.items():
                if name != profile:
                    _layer(table, path, ("profiles", name), kind, kinds)
        finally:
            _IN_USE.reset(token)
    return [
        (_table_name(path, "defaults"), d_plain),
        (_table_name(path, "defaults", kind), d_kind),
        (_table_name(path, "profiles", profile), p_plain),
        (_table_name(path, "profiles", profile, kind), p_kind),
    ]


def site_profiles(home: Path | None = None) -> tuple[Path, list[str], list[str]]:
    """The site file, the profiles its ``[profiles.NAME]`` tables name that this user has, and
    those this user does not have (ignored here; ``config show`` lists them)."""
    path = constants.site_config_path()
    data = _read_toml(path, named_by="BFJOBS_SITE_CONFIG" if constants.site_config_env() else None, site=True)
    names = list(data.get("profiles", {})) if isinstance(data.get("profiles", {}), dict) else []
    known = set(known_profiles(home))
    return path, [n for n in names if n in known], [n for n in names if n not in known]


def resolve_settings(
    profile: str,
    kind: str,
    home: Path | None = None,
    *,
    kinds: Mapping[str, Mapping[str, Any]],
    flags: Mapping[str, Any] | None = None,
    user_layers: Sequence[tuple[str, dict[str, Any]]] | None = None,
    remote: bool = False,
) -> Resolved:
    """``kind``'s settings for ``profile``, lowest first: the kind's built-in defaults, ``HF_ENDPOINT``
    (the hub the user's shell already names), the site file's ``[defaults]`` < ``[defaults.KIND]``
    < ``[profiles.P]`` < ``[profiles.P.KIND]``, the same four of the user's ``bfjobs.toml``,
    ``BFJOBS_TEMPLATES_DIR``, then ``flags`` (already validated: :func:`check_overrides`).

    ``kinds``: every kind's name and built-in defaults (:func:`blackfish_jobs.kinds.defaults`;
    configuration sits below the kinds and keeps no list of them). A key the site fixes
    (``[site] fixed``) that the user's file, a variable or a flag sets to another value is an
    error (exit 2), never silently overridden either way.
    """
    token = _FOLDERS_HERE.set(not remote)
    try:
        return _resolve(profile, kind, home, kinds, flags, user_layers)
    finally:
        _FOLDERS_HERE.reset(token)


def _resolve(
    profile: str,
    kind: str,
    home: Path | None,
    kinds: Mapping[str, Mapping[str, Any]],
    flags: Mapping[str, Any] | None,
    user_layers: Sequence[tuple[str, dict[str, Any]]] | None,
) -> Resolved:
    """:func:`resolve_settings`' work."""
    site_path = constants.site_config_path()
    site = _read_toml(site_path, named_by="BFJOBS_SITE_CONFIG" if constants.site_config_env() else None, site=True)
    fixed = _site_fixed(site, site_path)
    user_path = settings_path(home)
    user = {} if user_layers is not None else _read_toml(
        user_path, named_by="BFJOBS_CONFIG" if constants.config_path_env() else None
    )
    user_profiles = user.get("profiles", {})
    if isinstance(user_profiles, dict):
        _check_profile_tables(user_profiles, user_path, home)  # the site's may name others' profiles
    lowest: list[tuple[str, dict[str, Any]]] = [("default", dict(kinds.get(kind, {})))]
    hub = constants.hf_endpoint_env()
    if hub:
        lowest.append(("HF_ENDPOINT", {"hf_endpoint": _check_setting("hf_endpoint", hub, "HF_ENDPOINT")}))
    site_layers = _file_layers(site, site_path, profile, kind, kinds, site=True)
    users: list[tuple[str, dict[str, Any]]] = _file_layers(user, user_path, profile, kind, kinds)
    env_templates = constants.templates_dir_env() if user_layers is None else None
    if user_layers is not None:
        users = list(user_layers)
    if env_templates:
        checked = _check_setting("templates_dir", env_templates, "BFJOBS_TEMPLATES_DIR")
        users.append(("BFJOBS_TEMPLATES_DIR", {"templates_dir": checked}))
    for key, value in (flags or {}).items():
        if value is not None and value != ():
            users.append((f"--{key.replace('_', '-')}", {key: value}))
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for label, layer in (*lowest, *site_layers):
        for key, value in layer.items():
            merged[key], sources[key] = value, label
    for label, layer in users:
        for key, value in layer.items():
            if key in fixed and value != merged.get(key):
                now = f"{show(_shown(merged[key]))} ({sources[key]})" if key in merged else "unset"
                raise ConfigError(
                    f"{label} {key}: the site fixes this setting ({site_path} [site] fixed), to {now}; "
                    + _remedy(label)
                )
            merged[key], sources[key] = value, label
    for key in _SETTING_KEYS - set(sources):
        sources[key] = "default"
    return Resolved(JobSettings(**merged), sources, fixed)


def profile_settings(profile: str, home: Path | None = None) -> JobSettings:
    """The settings for ``profile`` where no kind is known (below the kinds' layer: ``remote_python``
    for the remote backend): the files' ``[defaults]`` and ``[profiles.P]`` tables, kinds' sub-tables
    taken as such (each command that knows the kinds checks them)."""
    tables: set[str] = set()
    for path, site in ((constants.site_config_path(), True), (settings_path(home), False)):
        data = _read_toml(path, site=site) if path.is_file() else {}
        profiles = data.get("profiles", {})
        candidates = [data.get("defaults")] + (list(profiles.values()) if isinstance(profiles, dict) else [])
        for table in candidates:
            if isinstance(table, dict):
                tables |= {k for k, v in table.items() if isinstance(v, dict) and k not in _SETTING_KEYS}
    return resolve_settings(profile, "", home, kinds={name: {} for name in tables}, remote=True).settings


def sent_layers(resolved: Resolved, site_path: Path | None = None) -> list[tuple[str, dict[str, Any]]]:
    """The user's own settings in ``resolved`` (their file, variables, flags; not the defaults, the
    site file or ``HF_ENDPOINT``), as JSON-able layers a remote cluster merges over its site file."""
    site = str(site_path or constants.site_config_path())
    layers: dict[str, dict[str, Any]] = {}
    for key, label in resolved.sources.items():
        if label in ("default", "HF_ENDPOINT") or label.startswith(site) or key in _LAPTOP_ONLY:
            continue
        value = getattr(resolved.settings, key)
        layers.setdefault(label, {})[key] = (
            list(value) if isinstance(value, tuple) else str(value) if isinstance(value, Path) else value
        )
    return list(layers.items())


def check_layers(raw: Any) -> list[tuple[str, dict[str, Any]]]:
    """Layers a laptop sent (:func:`sent_layers`), each value validated as if read from a file here."""
    if not isinstance(raw, list):
        raise ConfigError("the settings sent: expected a list of layers")
    checked = []
    for item in raw:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) and isinstance(item[1], dict)):
            raise ConfigError("the settings sent: a layer is not [label, table]")
        label = f"{show(item[0], 200)}{_SENT}"
        for key in item[1]:
            if key not in _SETTING_KEYS:
                raise ConfigError(f"{label}: unknown setting {show(str(key))}")
        checked.append((label, {k: _check_setting(k, v, f"{label} {k}") for k, v in item[1].items()}))
    return checked


#: Settings of how the laptop reaches a cluster, not of jobs: never sent to it.
_LAPTOP_ONLY = frozenset({"remote_python", "remote_session"})

#: How a layer the laptop sent is named on the cluster (:func:`check_layers`).
_SENT = " (sent by the laptop)"


def _remedy(label: str) -> str:
    """How a user takes back a setting of a fixed key, by where it was set (``label``: a table of
    their file, ``BFJOBS_TEMPLATES_DIR`` or a flag; any of them sent by the laptop)."""
    where = label.removesuffix(_SENT).strip("'")
    if where == "BFJOBS_TEMPLATES_DIR":
        return "unset the environment variable BFJOBS_TEMPLATES_DIR"
    if where.startswith("--"):
        return "remove it from the command"
    return "remove it from your settings"


def _shown(value: Any) -> str:
    if isinstance(value, tuple | list):
        return ", ".join(map(str, value))
    return str(value)


def load_settings(
    profile: str, kind: str, home: Path | None = None, *, kinds: Mapping[str, Mapping[str, Any]]
) -> JobSettings:
    """:func:`resolve_settings` without flags: the settings alone."""
    return resolve_settings(profile, kind, home, kinds=kinds).settings


def check_overrides(**flags: Any) -> dict[str, Any]:
    """Validate command-line overrides with the same rules as the TOML file."""
    return {k: _check_setting(k, v, f"--{k.replace('_', '-')}") for k, v in flags.items() if v is not None}
