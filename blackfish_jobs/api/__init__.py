"""blackfish-jobs as a library: :class:`Client` offers every ``bfjobs`` command and returns result
objects (:mod:`.results`) with one JSON serialisation, documented in docs/json.md.

    from blackfish_jobs.api import Client
    result = Client().submit("pull-image", "docker://alpine:3.20", wait=True)
    result.raise_for_status()          # JobFailed unless COMPLETED with the image in place
    print(result.to_json()["jobs"][0]["result"]["path"])

Importing this package is cheap (no SQLAlchemy, submitit, huggingface_hub or Jinja): the CLI
imports it for every command, ``bfjobs --help`` and ``bfjobs list`` included.
"""

from typing import TYPE_CHECKING, Any

from .. import __version__
from ..constants import colour_wanted, debug_env
from ..jobids import column as native_column
from ..jobids import describe as native_name
from ..states import NAMES as STATES

if TYPE_CHECKING:
    from ..kinds import Kind
    from ..store import JobRow
    from .client import SLURM_OPTION_HELP, SLURM_OPTIONS, Client, artefact_in_place, parse_age, parse_since
    from .results import (
        JSON_VERSION,
        CacheListResult,
        CachePruneResult,
        CacheRemoveResult,
        CancelResult,
        ConfigResult,
        DoctorResult,
        JobsPruneResult,
        JobsResult,
        LogsResult,
        RenderResult,
        Result,
        SubmitResult,
        SyncResult,
        VerifyResult,
        finding_json,
        job_json,
        outcome_message,
        revision_column,
    )

#: Where each public name lives, imported on first use (PEP 562): ``bfjobs --help`` loads none of
#: them, and a command loads the client and results only once it runs.
_LAZY = {
    **dict.fromkeys(
        ("SLURM_OPTION_HELP", "SLURM_OPTIONS", "Client", "artefact_in_place", "parse_age", "parse_since"), ".client"
    ),
    **dict.fromkeys(
        ("JSON_VERSION", "CacheListResult", "CachePruneResult", "CacheRemoveResult", "CancelResult", "ConfigResult",
         "DoctorResult", "JobsPruneResult", "JobsResult", "LogsResult", "RenderResult", "Result", "SubmitResult",
         "SyncResult", "VerifyResult", "finding_json", "job_json", "outcome_message", "revision_column"),
        ".results",
    ),
    "JobRow": "..store",
    "Kind": "..kinds",
}


def __getattr__(name: str) -> Any:
    """The facade's names, imported when first asked for (and then kept in this module)."""
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(where, __name__), name)
    globals()[name] = value
    return value


def kinds() -> list["Kind"]:
    """The kinds of work, in order: each one's name, help, main argument and options (as data,
    :class:`blackfish_jobs.kinds.Option`) make its ``submit``/``render`` command."""
    from .. import kinds as registry

    return list(registry.KINDS.values())


def describe_progress(record: dict[str, object]) -> str:
    """A progress record in words: ``3.2 GB of 140 GB, 85 MB/s, ETA 27 min``."""
    from ..node.progress import describe

    return describe(record)


def human_bytes(count: float) -> str:
    """A byte count in words (``3.2 GB``)."""
    from ..node.progress import human_bytes as words

    return words(count)


__all__ = [
    "JSON_VERSION",
    "SLURM_OPTIONS",
    "SLURM_OPTION_HELP",
    "STATES",
    "CacheListResult",
    "CachePruneResult",
    "CacheRemoveResult",
    "CancelResult",
    "Client",
    "ConfigResult",
    "DoctorResult",
    "JobRow",
    "JobsPruneResult",
    "JobsResult",
    "Kind",
    "LogsResult",
    "RenderResult",
    "Result",
    "SubmitResult",
    "SyncResult",
    "VerifyResult",
    "__version__",
    "artefact_in_place",
    "colour_wanted",
    "debug_env",
    "describe_progress",
    "finding_json",
    "human_bytes",
    "job_json",
    "kinds",
    "native_column",
    "native_name",
    "outcome_message",
    "parse_age",
    "parse_since",
    "revision_column",
]
