"""One job-state vocabulary for Slurm, local jobs, the DB and JSON, and Slurm's states mapped onto it.

:class:`State` is a ``str`` enum, so a state compares equal to, is stored as and serialises to
the same plain string (``"PENDING"``) it always was. UNKNOWN is used only when nothing can be
known any more; a job whose scheduler state is COMPLETED but whose result says the work failed
is FAILED.
"""

from __future__ import annotations

import enum
import functools
import re


class State(enum.StrEnum):
    """A job's state, as stored and shown."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    NODE_FAIL = "NODE_FAIL"
    PREEMPTED = "PREEMPTED"
    UNKNOWN = "UNKNOWN"


PENDING, RUNNING, COMPLETED, FAILED = State.PENDING, State.RUNNING, State.COMPLETED, State.FAILED
CANCELLED, TIMEOUT, OUT_OF_MEMORY = State.CANCELLED, State.TIMEOUT, State.OUT_OF_MEMORY
NODE_FAIL, PREEMPTED, UNKNOWN = State.NODE_FAIL, State.PREEMPTED, State.UNKNOWN

#: Every state's name, in the order ``list --state`` offers them.
NAMES = tuple(s.value for s in State)
#: States a job never leaves (the DB's "unfinished" are all the others).
FINISHED = frozenset({COMPLETED, FAILED, CANCELLED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, PREEMPTED})
#: States that end a wait: the finished ones, and UNKNOWN (nothing more can be learned now).
ENDED = FINISHED | {UNKNOWN}
#: Ends after which Slurm requeues a job that allows it (``--requeue``, ``JobRequeue=1``).
MAY_BE_REQUEUED = frozenset({NODE_FAIL, PREEMPTED})

#: How a pending job that can never start is marked in its reason: ``cannot start: <Slurm's reason>``.
CANNOT_START = "cannot start: "


def cannot_start(reason: str | None) -> str | None:
    """The scheduler's reason if ``reason`` carries the :data:`CANNOT_START` mark, else None."""
    if reason and reason.startswith(CANNOT_START):
        return reason_word(reason[len(CANNOT_START) :]) or None
    return None


def reason_word(reason: str | None) -> str:
    """A scheduler reason's name without its details: ``ReqNodeNotAvail, UnavailableNodes:n1`` → ``ReqNodeNotAvail``."""
    return re.split(r"[\s,(]", (reason or "").strip(), maxsplit=1)[0]


# Slurm's job states (squeue/sacct long names) onto ours.
_SLURM = {
    "PENDING": PENDING,
    "CONFIGURING": PENDING,
    "REQUEUED": PENDING,
    "REQUEUE_FED": PENDING,
    "REQUEUE_HOLD": PENDING,
    "RESV_DEL_HOLD": PENDING,
    "SUSPENDED": RUNNING,
    "STOPPED": RUNNING,
    "RUNNING": RUNNING,
    "COMPLETING": RUNNING,
    "RESIZING": RUNNING,
    "SIGNALING": RUNNING,
    "STAGE_OUT": RUNNING,
    "COMPLETED": COMPLETED,
    "FAILED": FAILED,
    "BOOT_FAIL": FAILED,
    "SPECIAL_EXIT": FAILED,
    "CANCELLED": CANCELLED,
    "REVOKED": CANCELLED,
    "DEADLINE": TIMEOUT,
    "TIMEOUT": TIMEOUT,
    "OUT_OF_MEMORY": OUT_OF_MEMORY,
    "NODE_FAIL": NODE_FAIL,
    "PREEMPTED": PREEMPTED,
}


@functools.lru_cache(maxsize=512)  # a refresh maps 1,000 records onto a handful of distinct words
def from_slurm(raw: str) -> State:
    """``CANCELLED by 0`` → CANCELLED, ``OUT_OF_ME+`` → OUT_OF_MEMORY, unknown → UNKNOWN."""
    word = raw.strip().split(" ")[0].rstrip("+").upper()
    if word.startswith("OUT_OF_ME"):
        return OUT_OF_MEMORY
    return _SLURM.get(word, UNKNOWN)
