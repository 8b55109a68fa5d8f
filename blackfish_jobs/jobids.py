"""How each backend's job ids read: in words, in the SLURM ID column, in JSON.

Data keyed by a job's ``backend`` column, in the base layer so that the store's messages, the
facade's JSON and the CLI's tables name a job the same way without importing its backend. A new
backend adds its line here (and its class in :func:`blackfish_jobs.backends.backend_class`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .store import JobRow

#: How each backend's job ids read, in words and in the SLURM ID column: data, so ``list`` and
#: ``status`` (and the store's messages) name a job without importing its backend.
_WORDS = {"slurm": ("Slurm job {}", "{}"), "local": ("local pid {}", "pid {}"), "remote": ("Slurm job {}", "{}")}


def describe(row: JobRow) -> str:
    """A job's scheduler id in words: ``Slurm job 123``, ``local pid 45``."""
    words = _WORDS.get(row.backend, (f"{row.backend} job {{}}", "{}"))[0]
    return words.format(row.native_id)


#: The JSON keys a job's native id goes under, by backend (docs/json.md): every key always present.
_FIELDS = {"slurm": "slurm_job_id", "local": "local_pid", "remote": "slurm_job_id"}


def id_fields(row: JobRow) -> dict[str, str | int | None]:
    """``{"slurm_job_id": …, "local_pid": …}`` for a job: its native id under its backend's key."""
    fields: dict[str, str | int | None] = dict.fromkeys(_FIELDS.values())
    key = _FIELDS.get(row.backend)
    if key is not None and row.native_id:
        fields[key] = int(row.native_id) if key == "local_pid" else row.native_id
    return fields


#: Backends whose native ids may name an array element (``<array id>_<index>``).
_ARRAYS = frozenset({"slurm", "remote"})
#: Backends whose native ids a user may give for a job (a Slurm id; a local pid is reused too soon).
BY_NATIVE_ID = frozenset({"slurm", "remote"})


def runs_arrays(row: JobRow) -> bool:
    """Whether the job's backend submits arrays (its native id may carry ``_<index>``)."""
    return row.backend in _ARRAYS


def column(row: JobRow) -> str:
    """A job's scheduler id as the SLURM ID column shows it: ``123``, ``pid 45``."""
    if not row.native_id:
        return "-"
    return _WORDS.get(row.backend, ("", "{}"))[1].format(row.native_id)
