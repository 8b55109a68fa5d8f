"""``python -m blackfish_jobs.agent``: bfjobs on a cluster, answering one request of a laptop's
remote profile (:mod:`blackfish_jobs.backends.remote` says how; :mod:`blackfish_jobs.api.cluster`
what). Run by ssh, never by hand: it prints that it is ready, reads one JSON request on stdin,
prints one answer line, exits.
"""

from __future__ import annotations

import json
import sys

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
        answer = _answer(request)
    try:
        sys.stdout.write(f"{ANSWER} {json.dumps(answer)}\n")
        sys.stdout.flush()
    except OSError:  # nobody is listening any more (a dropped connection)
        return 1
    return 0


def _answer(request: dict[str, object]) -> dict[str, object]:
    from .api import cluster
    from .errors import BfjobsError

    try:
        return {"ok": cluster.serve(str(request.get("op")), request.get("args"))}
    except BfjobsError as exc:
        return {"error": str(exc), "type": type(exc).__name__}
    except Exception as exc:  # a bug: one line to the laptop, the traceback to the cluster's stderr
        import traceback

        traceback.print_exc()
        return {"error": f"internal error: {type(exc).__name__}: {exc}", "type": "ClusterError"}


if __name__ == "__main__":
    sys.exit(main())
