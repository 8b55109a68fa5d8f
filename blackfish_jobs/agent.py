"""``python -m blackfish_jobs.agent``: bfjobs on a cluster, answering one request of a laptop's
remote profile (:mod:`blackfish_jobs.backends.remote` says how; :mod:`blackfish_jobs.api.cluster`
what). Run by ssh, never by hand: it prints that it is ready, reads one JSON request on stdin,
prints one answer line, exits.

``--serve``: the same bfjobs held open by a laptop's session holder
(:mod:`blackfish_jobs.backends.session`), answering surveys one after another until its stdin
closes; it answers nothing else (everything that changes the cluster has its own ssh call).
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .backends.slurmcmd import Prestarted

#: A held session's hinted ``sacct`` serves only a request that follows within this many seconds
#: (the laptop sends both within one command; its holder waits 10 s at most between them).
HINT_TTL_S = 30.0


def main() -> int:
    import signal

    from . import __version__
    from .backends.protocol import ANSWER, MARK, MAX_REQUEST, PROTOCOL, SERVES

    if sys.argv[1:] == ["--serve"]:
        return serve()

    # A connection that drops hangs up on the session: a submission under way goes on to the end
    # (its folder then tells the laptop's next refresh what became of it; see api.cluster).
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    print(f"{MARK} {PROTOCOL} {__version__} {SERVES}", flush=True)  # SERVES: it can be held (--serve)
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


def serve() -> int:
    """Answer a session holder's surveys until stdin closes: each message is a line ``HINT <n>``
    or ``REQUEST <n>`` and then ``n`` bytes of JSON. A hint (the job ids and oldest submit time a
    laptop's ``status`` will ask about, sent before it has even read its configuration) starts
    that survey's ``sacct`` call at once; the request that follows collects it if it asks the
    same. Anything out of step ends the session (the holder then goes away; the laptop falls back
    to one ssh call per request)."""
    import time

    from . import __version__
    from .api import cluster  # noqa: F401  loaded once, before saying ready: each survey finds it loaded
    from .backends.protocol import ANSWER, HINT, MARK, MAX_REQUEST, PROTOCOL, REQUEST, SERVES

    print(f"{MARK} {PROTOCOL} {__version__} {SERVES}", flush=True)
    stdin = sys.stdin.buffer
    early: Prestarted | None = None
    hinted_at = 0.0
    try:
        while True:
            head = stdin.readline(64).split()
            if len(head) != 2 or head[0] not in (HINT.encode(), REQUEST.encode()) or not head[1].isdigit():
                return 0 if not head else 2  # stdin closed (the holder let go), or out of step
            size = int(head[1])
            body = stdin.read(size) if size <= MAX_REQUEST else b""
            if len(body) != size or not size:
                return 2
            if head[0] == HINT.encode():
                if early is not None:
                    early.discard()
                early, hinted_at = _hinted_sacct(body), time.monotonic()
                continue
            if early is not None and time.monotonic() - hinted_at > HINT_TTL_S:
                early.discard()  # never an answer older than its request (the holder clears unused hints anyway)
                early = None
            answer = _served(body, early)
            early = None  # collected by the survey, or discarded by _served
            sys.stdout.write(f"{ANSWER} {json.dumps(answer)}\n")
            sys.stdout.flush()
    except OSError:  # the session went away
        return 1
    finally:
        if early is not None:
            early.discard()


def _served(body: bytes, early: Prestarted | None) -> dict[str, object]:
    """A held session's answer to one request: surveys only (they change nothing on the cluster)."""
    from .backends.protocol import PROTOCOL

    try:
        try:
            request = json.loads(body)
        except ValueError as exc:
            return {"error": f"not a bfjobs request of protocol {PROTOCOL}: {exc}", "type": "ClusterError"}
        if not isinstance(request, dict) or request.get("protocol") != PROTOCOL or request.get("op") != "survey":
            return {"error": f"a held session answers surveys of protocol {PROTOCOL} only", "type": "ClusterError"}
        if early is None:
            early = prestart_sacct(request)
        return _answer(request, early)
    finally:
        if early is not None:
            early.discard()


def _hinted_sacct(body: bytes) -> Prestarted | None:
    """The ``sacct`` call a hint ``{"ids": [...], "since": ISO}`` announces; None for anything
    else (a hint only ever saves time: its survey asks again if it finds nothing to collect)."""
    try:
        hint = json.loads(body)
        ids, since = hint["ids"], hint["since"]
        if not isinstance(ids, list) or not isinstance(since, str):
            return None
        return _sacct_for(ids, [since])
    except Exception:
        return None


def _sacct_for(ids: list[Any], submitted: list[Any]) -> Prestarted | None:
    """Start the first ``sacct`` call of a survey of ``ids`` (Slurm ids, checked) submitted at
    ``submitted`` (ISO times); None if any is not what it should be."""
    from datetime import datetime

    from .backends import slurmcmd
    from .backends.protocol import SLURM_ID

    if not ids or not all(isinstance(i, str) and SLURM_ID.fullmatch(i) for i in ids):
        return None
    since = slurmcmd.sacct_since(datetime.fromisoformat(at) for at in submitted)
    return slurmcmd.prestart_sacct(ids, since)


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
    try:
        return _sacct_for([row["native_id"] for row in rows], [row["submitted_at"] for row in rows])
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
