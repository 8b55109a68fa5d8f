"""``snapshot_download`` in a child process of the job, which a stop kills before cleaning up.

huggingface_hub's file downloads run in a thread pool that nothing can stop: after a stop (scancel,
time limit) they went on writing into the staging folder the clean-up had just removed (seen in CI).
A child process is killed and reaped first (:func:`runtime.run_child`), so the staging folder
stays removed. The request reaches the child as JSON on its stdin (nothing secret: huggingface_hub
reads the token from the environment), and a failure comes back as the one line
:func:`hub_errors.translated` made of it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from ..errors import TaskError
from . import runtime
from .hub_errors import translated
from .requests import DownloadModel

#: The child's exit status when it failed with a line for the job's reason (on its stdout, JSON).
_REFUSED = 3
_MODULE = "blackfish_jobs.node.fetch"


def _encode(
    req: DownloadModel, commit: str, cache_dir: Path, allow: list[str] | None, ignore: list[str] | None
) -> bytes:
    fields = {f.name: getattr(req, f.name) for f in dataclasses.fields(req)}
    fields["models_dir"] = str(req.models_dir)
    job = {"req": fields, "commit": commit, "cache_dir": str(cache_dir), "allow": allow, "ignore": ignore}
    return json.dumps(job).encode()


def _decode(data: bytes) -> tuple[DownloadModel, dict[str, Any]]:
    job = json.loads(data)
    fields = job["req"]
    fields["models_dir"] = Path(fields["models_dir"])
    for name in ("allow_patterns", "ignore_patterns"):
        fields[name] = None if fields[name] is None else tuple(fields[name])
    return DownloadModel(**fields), job


def fetch_snapshot(
    req: DownloadModel, commit: str, cache_dir: Path, allow: list[str] | None, ignore: list[str] | None
) -> None:
    """``snapshot_download`` of ``commit`` into ``cache_dir`` (a staging folder), in a child process."""
    # -P: the job's working directory (the user's) is not put on the child's import path.
    status, out = runtime.run_child(
        [sys.executable, "-P", "-m", _MODULE], _encode(req, commit, cache_dir, allow, ignore)
    )
    if status == 0:
        return
    if status == _REFUSED:
        try:
            raise TaskError(str(json.loads(out)["error"]))
        except (ValueError, KeyError, TypeError):
            pass
    if status < 0:
        name = signal.Signals(-status).name if -status in signal.valid_signals() else str(-status)
        raise TaskError(f"the download process was killed by {name} (out of memory?); see the job's log")
    raise TaskError(f"the download process failed (exit status {status}); see the job's log for its traceback")


def _exit_with_the_job() -> None:
    """End this process when the job's process is gone (killed outright: nothing else would)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            threading.Event().wait(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="bfjobs-parent-watch").start()


def main() -> int:
    """The child's side: read the request, download, report a failure as one line."""
    from huggingface_hub import snapshot_download

    req, job = _decode(sys.stdin.buffer.read())
    _exit_with_the_job()
    try:
        with translated(req):
            snapshot_download(
                req.repo_id,
                revision=job["commit"],
                cache_dir=job["cache_dir"],
                endpoint=req.endpoint,
                allow_patterns=job["allow"],
                ignore_patterns=job["ignore"],
                max_workers=req.max_workers,
            )
    except TaskError as exc:
        sys.stdout.write(json.dumps({"error": str(exc)}))
        return _REFUSED
    return 0


if __name__ == "__main__":
    sys.exit(main())
