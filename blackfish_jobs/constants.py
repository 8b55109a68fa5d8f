"""Every environment variable bfjobs reads, in one place.

Values are read when asked for (functions, not module globals) so a long-lived process or a
test that changes the environment sees the current value; nothing else in the package touches
``os.environ`` for configuration.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Name of bfjobs' own job table and Alembic version table (never Blackfish's ``ddl_version``).
JOBS_TABLE = "bfjobs_jobs"
VERSION_TABLE = "bfjobs_alembic_version"

#: bfjobs' newest migration (checked against the migrations folder by the tests); the stdlib
#: SQLite path only touches a database at this revision.
HEAD_REVISION = "0004"

#: Sub-folder of ``<home_dir>`` holding one folder per job (script, logs, submitit pickles).
JOBS_SUBDIR = ("jobs", "bfjobs")

#: Built-in profiles used when there is no ``profiles.cfg`` at all: ``slurm`` where ``sbatch`` is
#: on PATH (the heavy work never runs on a login node by default), else ``local``.
BUILTIN_PROFILE = "local"
BUILTIN_SLURM_PROFILE = "slurm"

#: Hard limit for any single user-supplied value; longer values are refused, never truncated.
MAX_VALUE_LEN = 512


def blackfish_home() -> Path:
    """Blackfish's app directory (``$BLACKFISH_HOME_DIR``, default ``~/.blackfish``)."""
    raw = os.environ.get("BLACKFISH_HOME_DIR") or "~/.blackfish"
    try:
        return Path(raw).expanduser()
    except (RuntimeError, KeyError, ValueError):  # "~nosuchuser": one line, not a traceback
        from .errors import ConfigError

        raise ConfigError(f"BLACKFISH_HOME_DIR: cannot expand '~' in {raw[:60]!r}") from None


def db_url_env() -> str | None:
    """``BFJOBS_DB_URL``: the database to use instead of ``$BLACKFISH_HOME_DIR/app.sqlite``."""
    return os.environ.get("BFJOBS_DB_URL") or None


def default_db_url() -> str:
    """``BFJOBS_DB_URL``, else Blackfish's own ``$BLACKFISH_HOME_DIR/app.sqlite``."""
    return db_url_env() or f"sqlite:///{blackfish_home() / 'app.sqlite'}"


def which(command: str) -> str | None:
    """Where ``command`` is found on ``PATH`` (None if it is not): decides the built-in profile."""
    import shutil

    return shutil.which(command)


def templates_dir_env() -> str | None:
    """``BFJOBS_TEMPLATES_DIR``: a site templates directory searched before the packaged one."""
    return os.environ.get("BFJOBS_TEMPLATES_DIR") or None


def config_path_env() -> str | None:
    """``BFJOBS_CONFIG``: an alternative to ``$BLACKFISH_HOME_DIR/bfjobs.toml``."""
    return os.environ.get("BFJOBS_CONFIG") or None


#: The site-wide bfjobs.toml an admin installs for every user (below each user's own file).
SITE_CONFIG = Path("/etc/bfjobs/bfjobs.toml")


def site_config_env() -> str | None:
    """``BFJOBS_SITE_CONFIG``: the site file to read instead of ``/etc/bfjobs/bfjobs.toml``."""
    return os.environ.get("BFJOBS_SITE_CONFIG") or None


def site_config_path() -> Path:
    """``BFJOBS_SITE_CONFIG``, else :data:`SITE_CONFIG`."""
    env = site_config_env()
    return Path(env) if env else SITE_CONFIG


def hf_endpoint_env() -> str | None:
    """``HF_ENDPOINT``: a Hugging Face mirror (same variable huggingface_hub reads)."""
    return os.environ.get("HF_ENDPOINT") or None


def hub_offline_env() -> bool:
    """``HF_HUB_OFFLINE``: huggingface_hub's "make no request from here" (its own truthy values)."""
    return (os.environ.get("HF_HUB_OFFLINE") or "").strip().upper() in ("1", "ON", "YES", "TRUE")


def node_scratch_base() -> Path:
    """Node-local scratch for a job's private files: ``BFJOBS_NODE_SCRATCH``, else ``$TMPDIR``, else ``/tmp``."""
    return Path(os.environ.get("BFJOBS_NODE_SCRATCH") or os.environ.get("TMPDIR") or "/tmp")


def colour_wanted() -> bool:
    """Colours on a terminal unless ``NO_COLOR`` is set (no-color.org) or ``TERM=dumb``."""
    return not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def debug_env() -> bool:
    """``BFJOBS_DEBUG``: show the traceback of an internal error instead of one line."""
    return bool(os.environ.get("BFJOBS_DEBUG"))


def slurm_job_id_env() -> str | None:
    """The id of the Slurm job we are running in, if any."""
    return os.environ.get("SLURM_JOB_ID") or None


def ssh_control_dir() -> Path:
    """Where the ssh masters' sockets live (``BFJOBS_SSH_CONTROL_DIR``, default
    ``/tmp/bfjobs-ssh-<uid>``): short, since macOS limits a socket's path to 104 bytes."""
    return Path(os.environ.get("BFJOBS_SSH_CONTROL_DIR") or f"/tmp/bfjobs-ssh-{os.getuid()}")


def ssh_command() -> str:
    """The OpenSSH client bfjobs runs (``BFJOBS_SSH``, default ``ssh`` on PATH)."""
    return os.environ.get("BFJOBS_SSH") or "ssh"


def registry_offline_env() -> bool:
    """``BFJOBS_REGISTRY_OFFLINE``: ask no container registry from here (a login node that reaches
    none). Tags are then resolved on the node; where the node has it set too, pulled unpinned."""
    return (os.environ.get("BFJOBS_REGISTRY_OFFLINE") or "").strip().upper() in ("1", "ON", "YES", "TRUE")


def registry_credentials_env() -> tuple[str, str] | None:
    """Apptainer's ``APPTAINER_DOCKER_USERNAME``/``APPTAINER_DOCKER_PASSWORD`` (or the older
    ``SINGULARITY_DOCKER_*``), read when a registry asks for them; never stored."""
    for prefix in ("APPTAINER", "SINGULARITY"):
        user = os.environ.get(f"{prefix}_DOCKER_USERNAME")
        password = os.environ.get(f"{prefix}_DOCKER_PASSWORD")
        if user and password is not None:
            return user, password
    return None


def apptainer_config_dir() -> Path:
    """Apptainer's per-user folder (``$APPTAINER_CONFIGDIR``, default ``~/.apptainer``): its
    ``docker-config.json`` holds what ``apptainer registry login`` saved."""
    raw = os.environ.get("APPTAINER_CONFIGDIR")
    return Path(raw) if raw else Path.home() / ".apptainer"
