"""The words of the remote protocol, shared by the laptop (:mod:`.remote`) and the cluster
(:mod:`blackfish_jobs.agent`): kept free of imports, so the agent answers without loading the
laptop's side (its ssh client, its configuration)."""

from __future__ import annotations

import re
from typing import Any

#: Bumped whenever a request or an answer changes shape: both sides must speak the same one.
PROTOCOL = 1
MARK = "BFJOBS-AGENT"
ANSWER = "BFJOBS-AGENT-ANSWER"
#: ``BFJOBS-AGENT-PROGRESS <done> <bytes>``: how far a long request (a removal) has got, before its answer.
PROGRESS = "BFJOBS-AGENT-PROGRESS"
AGENT_MODULE = "blackfish_jobs.agent"
#: The last word of an agent's ready line when it can also be held open (``--serve``): a laptop
#: starts a session holder (:mod:`.session`) only for a cluster whose bfjobs says so.
SERVES = "serves"
#: A held agent's messages: ``HINT <n>`` / ``REQUEST <n>`` lines, each followed by ``n`` bytes of JSON.
HINT = "HINT"
REQUEST = "REQUEST"
#: The largest request either side reads (a survey of 10,000 rows is a few MB).
MAX_REQUEST = 64 * 1024 * 1024
#: In a job folder whose ids the submitter chose (a remote laptop), written before anything is
#: submitted: which bfjobs job is which element of it (``{id: index}``), for a laptop that lost
#: the answer to find its jobs (with submitit's ``*_submitted.pkl``).
IDS_FILE = "bfjobs-ids.json"
#: A Slurm job id as a cluster may name one (``123``, an array element ``123_4``).
SLURM_ID = re.compile(r"[0-9]{1,12}(_[0-9]{1,7})?")


def encode_observation(obs: Any) -> dict[str, Any]:
    """A survey's :class:`~.base.Observation` as JSON: the fields that are set (``known`` always;
    ``as_stored`` never: it speaks of the cluster's copy of the rows, the laptop compares its own)."""
    return {k: v for k, v in obs._asdict().items() if (v not in (None, False) or k == "known") and k != "as_stored"}


def one_line(text: str) -> str:
    """A cluster's message as one line of printable text (it reaches the user's terminal)."""
    return "".join(c if c.isprintable() else " " for c in " ".join(text.split()))[:1000]
