"""``python -m blackfish_jobs.agent``: bfjobs on a cluster, answering one request of a laptop's
remote profile (:mod:`blackfish_jobs.backends.remote` says how; :mod:`blackfish_jobs.api.cluster`
what). Run by ssh, never by hand: it prints that it is ready, reads one JSON request on stdin,
prints one answer line, exits.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .backends.slurmcmd import Prestarted

MAX_REQUEST = 64 * 1024 * 1024


def main() -> int:
    import signal

    from . import __version__
    from .backends.protocol import ANSWER, MARK, PROTOCOL

    # A connection that drops hangs up on the session: a submission under way goes on to the end
    # (its folder then tells the laptop's next refresh what became of it; see api.cluster).
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    print(f"{MARK} {PROTOCOL} {__version__}", flush=True)
    answer: dict[str, object]
    try:
        request = json.loads(sys.stdin.buffer.read(MAX_REQUEST))
        if not isinstance(request, dict) or request.get("protocol") != PROTOCOL:
            raise ValueError(f"protocol {request.get('protocol') if isinstance(request, dict) else '?'}")
    except ValueError as exc:
        answer = {"error": f"not a bfjobs request of protocol {PROTOCOL}: {exc}", "type": "ClusterError"}
    else:
        early = prestart_sacct(request)
        try:
            answer = _answer(request, early)
        finally:
            if early is not None:
                early.discard()  # not asked after all (the survey found other ids): killed, reaped
    try:
        sys.stdout.write(f"{ANSWER} {json.dumps(answer)}\n")
        sys.stdout.flush()
    except OSError:  # nobody is listening any more (a dropped connection)
        return 1
    return 0


def prestart_sacct(request: dict[str, Any]) -> Prestarted | None:
    """Start a survey's (first) ``sacct`` call before bfjobs' modules are imported (what the entry
    point does for a local ``status``): the imports, ~40 ms on a login node, then overlap the
    call instead of preceding it. Only when every row has its Slurm id, the common case: a row
    without one is first looked up in its job folder, which may change the ids asked about. The
    survey's Slurm backend collects it if it asks exactly this command line (the first, when the
    ids need several); anything unexpected here starts nothing (the survey meets it and answers it)."""
    args = request.get("args")
    rows = args.get("rows") if request.get("op") == "survey" and isinstance(args, dict) else None
    if not isinstance(rows, list) or not rows:
        return None
    from datetime import datetime

    from .backends import slurmcmd
    from .backends.protocol import SLURM_ID

    try:
        ids = [row["native_id"] for row in rows]
        if not all(isinstance(i, str) and SLURM_ID.fullmatch(i) for i in ids):
            return None
        since = slurmcmd.sacct_since(datetime.fromisoformat(row["submitted_at"]) for row in rows)
        return slurmcmd.prestart_sacct(ids, since)
    except Exception:  # only a head start: the survey meets the same problem and answers it
        return None


def _answer(request: dict[str, object], early: Prestarted | None = None) -> dict[str, object]:
    from .api import cluster
    from .errors import BfjobsError

    try:
        return {"ok": cluster.serve(str(request.get("op")), request.get("args"), early)}
    except BfjobsError as exc:
        return {"error": str(exc), "type": type(exc).__name__}
    except Exception as exc:  # a bug: one line to the laptop, the traceback to the cluster's stderr
        import traceback

        traceback.print_exc()
        return {"error": f"internal error: {type(exc).__name__}: {exc}", "type": "ClusterError"}


if __name__ == "__main__":
    sys.exit(main())
