"""Progress records: what a running job has done so far, for a person watching it.

The node-side task runs a :class:`Reporter` thread that measures the job's own staging area every
``INTERVAL_S`` seconds and replaces ``<job folder>/<job id>_0_progress.json`` atomically (a
temporary file, then ``os.replace``: a reader sees the old record or the new one, never half of
one), and once more when the task ends, success or failure, with the final figures. The client
reads that one small file for RUNNING (and just-ended) jobs only: no Slurm call, no walk of a
cache. Records live in the job folder (the user's own), never in a shared cache, and hold only
numbers and times.

Import-light (client and node alike): json, os, time; threading only when a reporter starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

#: Seconds between two records of a running job: often enough for a person, rare enough for a
#: parallel filesystem (one small file replaced per job every few seconds).
INTERVAL_S = 3.0
#: The rate is measured over the samples of this many recent seconds (a download's speed varies).
WINDOW_S = 30.0
#: ``<job id>_0_progress.json`` beside submitit's ``<job id>_0_result.pkl`` and logs.
SUFFIX = "_0_progress.json"
FORMAT = "bfjobs-progress/1"
#: The fields of a record besides ``format`` and ``final`` (what ``--json`` shows as ``progress``).
FIELDS = (
    "bytes_done", "bytes_total", "files_done", "files_total", "rate", "eta_seconds", "started_at", "updated_at",
)  # fmt: skip


class Sample(NamedTuple):
    """One measurement of a job's work; a total is None when it is not known (yet)."""

    bytes_done: int
    bytes_total: int | None
    files_done: int
    files_total: int | None


def record_path(folder: str | Path, native_id: str) -> Path:
    """Where the job with this scheduler id (a Slurm id, ``<array>_<i>``, or a local pid) keeps its record."""
    return Path(folder) / f"{native_id}{SUFFIX}"


def read(path: Path) -> dict[str, Any] | None:
    """The record's figures (``FIELDS`` and ``final``), or None when absent or not a record."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return None
    return {key: data.get(key) for key in (*FIELDS, "final")}


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def job_record_path() -> Path | None:
    """The record of the submitit job this process runs, or None outside one (a direct call)."""
    if "SUBMITIT_FOLDER" not in os.environ:
        return None
    try:
        import submitit

        env = submitit.JobEnvironment()
        return record_path(env.paths.folder, env.job_id)
    except Exception:  # not a submitit job after all: a task called directly keeps working
        return None


class Reporter:
    """Measures with ``measure`` every ``interval`` seconds in a daemon thread and writes the record.

    ``measure`` must be cheap (a few ``stat`` calls); if it or a write fails the job goes on and the
    next tick tries again: progress is for people, never a reason for a download to fail.
    """

    def __init__(self, path: Path, measure: Callable[[], Sample], *, interval: float = INTERVAL_S) -> None:
        self.path = path
        self.measure = measure
        self.interval = interval
        self.started_wall = time.time()
        self.started = time.monotonic()
        self._samples: deque[tuple[float, int]] = deque()
        self._first: int | None = None
        self._stop: Any = None
        self._thread: Any = None

    def start(self) -> None:
        import threading

        self._stop = threading.Event()
        self.tick()
        self._thread = threading.Thread(target=self._run, name="bfjobs-progress", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.tick()

    def stop(self) -> None:
        """Stop the thread, then write the final figures (whatever the task's outcome)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        self.tick(final=True)

    def tick(self, *, final: bool = False) -> None:
        with contextlib.suppress(Exception):
            self.write(self.figures(self.measure(), final=final))

    def figures(self, sample: Sample, *, final: bool = False) -> dict[str, Any]:
        """The record for ``sample``: rate over the recent window (the whole run once final)."""
        now = time.monotonic()
        if self._first is None:
            self._first = sample.bytes_done
        self._samples.append((now, sample.bytes_done))
        while len(self._samples) > 2 and now - self._samples[0][0] > WINDOW_S:
            self._samples.popleft()
        if final:
            since, done_then = self.started, self._first
        else:
            since, done_then = self._samples[0]
        elapsed = now - since
        rate = max(0, sample.bytes_done - done_then) / elapsed if elapsed > 0 and len(self._samples) > 1 else None
        eta = None
        if sample.bytes_total is not None:
            left = max(0, sample.bytes_total - sample.bytes_done)
            if left == 0:
                eta = 0.0
            elif rate and not final:
                eta = round(left / rate, 1)
        return {
            "format": FORMAT,
            "final": final,
            "bytes_done": sample.bytes_done,
            "bytes_total": sample.bytes_total,
            "files_done": sample.files_done,
            "files_total": sample.files_total,
            "rate": round(rate, 1) if rate is not None else None,
            "eta_seconds": eta,
            "started_at": _iso(self.started_wall),
            "updated_at": _iso(time.time()),
        }

    def write(self, data: dict[str, Any]) -> None:
        """Replace the record atomically: a reader sees the old one or the new one, whole."""
        import uuid

        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            # 0644 whatever the umask: a group-mode job runs with umask 002, and the job folder is the user's
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            with open(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh, sort_keys=True)
            os.replace(tmp, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


@contextlib.contextmanager
def reporting(measure: Callable[[], Sample], path: Path | None = None) -> Iterator[Reporter | None]:
    """Report ``measure`` into this job's record while the block runs (nothing outside a job)."""
    path = path or job_record_path()
    if path is None:
        yield None
        return
    reporter = Reporter(path, measure)
    reporter.start()
    try:
        yield reporter
    finally:
        reporter.stop()


# --------------------------------------------------------------------------- for people


def human_bytes(size: float) -> str:
    """``3.2 GB``, ``85 MB``, ``512 B``: decimal units, as ``df -H`` and the Hub's pages."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" or size >= 100 else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def human_duration(seconds: float) -> str:
    """``45 s``, ``27 min``, ``3 h 05 min``."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours} h {rest // 60:02d} min"


def describe(record: dict[str, Any]) -> str:
    """``3.2 GB of 140 GB, 85 MB/s, ETA 27 min`` (a pull: ``1.2 GB so far, 85 MB/s``)."""
    done = record.get("bytes_done") or 0
    total = record.get("bytes_total")
    parts = [f"{human_bytes(done)} of {human_bytes(total)}" if total is not None else f"{human_bytes(done)} so far"]
    rate = record.get("rate")
    if rate:
        parts.append(f"{human_bytes(rate)}/s")
    eta = record.get("eta_seconds")
    if eta and not record.get("final"):
        parts.append(f"ETA {human_duration(eta)}")
    return ", ".join(parts)
