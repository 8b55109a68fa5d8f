"""``pull-image`` on the node: ``apptainer pull`` to a hidden name, then publish it with its record."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .. import constants, layout
from ..errors import TaskError
from . import progress, records, registry
from .hashing import sha256_file
from .publish import ensure_public_dir, group_mode, publish_file, publish_lock, remove_stale
from .requests import PullImage
from .runtime import JOB_TAG_RE, job_tag, node_scratch, stop_on_signals


def _run(argv: list[str], env: dict[str, str]) -> None:
    """Run a command with output streamed to the job log; stop it if we are interrupted.

    Its stderr is copied line by line to the job's stderr, and the last line becomes part of
    the error (Apptainer's ``FATAL: ...`` is the reason a user needs to see).
    """
    print("+", " ".join(argv), flush=True)
    proc = subprocess.Popen(
        argv, env=env, stdin=subprocess.DEVNULL, stdout=sys.stdout, stderr=subprocess.PIPE, text=True, errors="replace"
    )
    last = ""
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            sys.stderr.write(line)
            if line.strip():
                last = line.strip()
        sys.stderr.flush()
        code = proc.wait()
    except BaseException:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
    if code != 0:
        detail = f": {last[:300]}" if last else " (see the job log)"
        raise TaskError(f"{Path(argv[0]).name} {argv[1]} exited with code {code}{detail}")


def pull_image(req: PullImage) -> dict[str, Any]:
    """``apptainer pull`` into ``req.dest_dir`` under a temporary name, then publish as 755.

    Jobs pulling the same file serialise on a publish lock: the second finds the image in place
    and reuses it instead of pulling again.
    """
    meter = _PullMeter(req.target)
    with group_mode(req.group), progress.reporting(meter):
        result = _pull_image(req, meter)
        meter.done = True  # the final record: the image in place, its size the total
        return result


class _PullMeter:
    """A pull's progress: the size of its partial output so far (the total is not known before
    the image is built), then, once the job succeeded, of the image in place."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self.partial: Path | None = None
        self.done = False

    def __call__(self) -> progress.Sample:
        if self.done:
            size = self.target.stat().st_size
            return progress.Sample(size, size, 1, 1)
        try:
            size = self.partial.stat().st_size if self.partial is not None else 0
        except FileNotFoundError:
            size = 0
        return progress.Sample(size, None, 0, 1)


def _pull_image(req: PullImage, meter: _PullMeter) -> dict[str, Any]:
    """:func:`pull_image`'s work; ``meter`` learns the partial file's name once it is chosen."""
    started = time.monotonic()
    target = req.target
    node = socket.gethostname()
    pin = _pin(req, node)
    if target.exists() and not req.force:
        return _present_image(req, pin, target, started, node)
    ensure_public_dir(req.dest_dir)
    token = job_tag()
    partial = req.dest_dir / layout.partial_name(req.filename, token)
    meter.partial = partial
    stale = re.compile(re.escape(layout.PARTIAL_PREFIX) + JOB_TAG_RE + "-" + re.escape(req.filename))
    with stop_on_signals(), publish_lock(req.dest_dir, req.filename):
        if target.exists() and not req.force:  # another job published it while we waited
            return _present_image(req, pin, target, started, node)
        remove_stale(req.dest_dir, stale)
        if req.force and target.exists():
            _refuse_going_back(req, pin, target)
        pin = _platform(req, pin, node)
        try:
            with node_scratch(f"bfjobs-pull-{token}-") as scratch:
                _pull_into(req, pin.get("pulled") or req.uri, partial, scratch)
            sha256 = _publish_image(req, pin, partial, token)
        finally:
            partial.unlink(missing_ok=True)  # already gone after a successful publish
    if sha256 is None:  # a file appeared without the lock (not a bfjobs job): judge it as present
        return _present_image(req, pin, target, started, node)
    return _image_result(req, pin, target, started, node, already_present=False, sha256=sha256)


def _pin(req: PullImage, node: str) -> dict[str, Any]:
    """What this job pulls: ``tag``, the ``digest`` the tag names (pinned at submit, else asked
    here) and the ``pulled`` reference (``docker://name@sha256:…``). ``library://``, ``shub://``
    and ``https://`` sources cannot be pinned: their record holds the file's sha256 only
    (``pinned`` false)."""
    ref = registry.parse(req.uri)
    pin: dict[str, Any] = {"tag": records.tag_of(req.uri), "digest": None, "manifest": None, "pulled": None}
    if ref is None:
        return {**pin, "pinned": False}
    digest = req.digest or ref.digest
    if digest is None:
        if constants.registry_offline_env():  # the tag is pulled as it is; the record says it was not pinned
            print("bfjobs: BFJOBS_REGISTRY_OFFLINE is set: pulling the tag unpinned", file=sys.stderr, flush=True)
            return {**pin, "pinned": False}
        try:
            digest = _client(req, ref).resolve(ref).digest
        except registry.RegistryError as exc:
            raise TaskError(f"cannot pin {req.uri} on {node}: {exc}") from None
        print(f"bfjobs: {req.uri} resolved on {node} to {digest}", flush=True)
    return {**pin, "digest": digest, "pulled": ref.pinned(digest), "pinned": True}


def _refuse_going_back(req: PullImage, pin: dict[str, Any], target: Path) -> None:
    """A ``--force`` job pinned at submit to A that finds B of the same URI published since
    replaces it only if the tag does not name B now: a queued job never takes a shared image back
    to an older digest. (A registry that cannot be asked: the job does what was asked.)"""
    ref = registry.parse(req.uri)
    if ref is None or ref.digest is not None or req.digest is None or records.image_conflict(target, req.uri):
        return
    have = (records.read(records.image_record_path(target), "image") or {}).get("digest")
    if not isinstance(have, str) or have == pin["digest"]:
        return
    try:
        now = _client(req, ref).resolve(ref).digest
    except registry.RegistryError:
        return
    if now == have:
        raise TaskError(
            f"{target} holds {req.uri} at {records.short(have)}, which the tag names now; this job was pinned "
            f"to {records.short(pin['digest'])} at submit: nothing replaced"
        )


def _platform(req: PullImage, pin: dict[str, Any], node: str) -> dict[str, Any]:
    """``pin`` with the platform ``manifest`` this node pulls: the index's ``linux/<arch>`` entry
    (checked against the index's digest), or the manifest itself. Asked only when a pull follows."""
    ref = registry.parse(req.uri)
    if ref is None or pin["digest"] is None or constants.registry_offline_env():
        return pin
    try:
        manifest = _client(req, ref).platform_manifest(ref, pin["digest"])
    except registry.Miss as exc:  # an index without this node's platform: Apptainer would fail too
        raise TaskError(f"cannot pull {pin['pulled']} on {node}: {exc}") from None
    except registry.RegistryError as exc:  # only a record: the pull itself is pinned by the digest
        print(f"bfjobs: the platform manifest of {pin['pulled']} is not recorded: {exc}", file=sys.stderr, flush=True)
        return pin
    return {**pin, "manifest": manifest}


def _client(req: PullImage, ref: registry.Reference) -> registry.Client:
    """A registry client asking ``insecure_registries``' entries over plain HTTP (a token
    service on another listed host included)."""
    return registry.Client(req.insecure_registries or ((ref.host,) if req.insecure else ()))


def _present_image(req: PullImage, pin: dict[str, Any], target: Path, started: float, node: str) -> dict[str, Any]:
    """The result for an image already in place, only if its record says it is ``req.uri`` at the
    digest pinned (a tag that moved never passes for the image in place)."""
    problem = records.image_conflict(target, req.uri)
    if problem is None and pin["digest"] is not None:
        problem = records.image_moved(target, req.uri, pin["digest"], pinned=req.digest is not None)
    if problem is not None:
        raise TaskError(problem)
    if pin["digest"] is not None:  # the platform manifest the image in place was pulled from
        recorded = records.read(records.image_record_path(target), "image") or {}
        pin = {**pin, "manifest": recorded.get("manifest")}
    return _image_result(req, pin, target, started, node, already_present=True)


def _publish_image(req: PullImage, pin: dict[str, Any], partial: Path, token: str) -> str | None:
    """Publish ``partial`` with its record (under the publish lock); its sha256, or None if not published.

    The record goes in first, so a reader who sees the file also finds its record; if the file is
    not published after all, the record is removed (a file without a record has an unknown source,
    which is never mistaken for the request).
    """
    sha256 = sha256_file(partial)
    st = partial.stat()  # the published file keeps its size and times (a link or a rename)
    record = records.image_record_path(req.target)
    previous = records.read(record, "image")  # the file in place keeps it if we do not publish
    try:
        ensure_public_dir(record.parent)
        records.write(record, records.image_record(req.uri, sha256, st.st_size, token, pin, int(st.st_mtime)))
    except OSError as exc:  # nothing published: an image without its record would be of unknown source
        raise TaskError(f"cannot write the record of {req.target} at {record}: {exc.strerror or exc}") from None
    published = False
    try:
        published = publish_file(partial, req.target, req.force)
    finally:
        if not published:
            if previous is not None:
                with contextlib.suppress(OSError):
                    records.write(record, previous)
            else:
                record.unlink(missing_ok=True)
    return sha256 if published else None


def _pull_into(req: PullImage, uri: str, partial: Path, scratch: Path) -> None:
    """Run ``apptainer pull`` of ``uri`` (pinned: ``name@sha256:…``) to ``partial`` with private
    cache and temp dirs in ``scratch``; ``--no-https`` for a registry in ``insecure_registries``.
    Credentials stay where Apptainer reads them (its environment variables, its config file)."""
    env = dict(os.environ)
    for var in ("APPTAINER", "SINGULARITY"):
        env[f"{var}_CACHEDIR"] = str(scratch / "cache")
        env[f"{var}_TMPDIR"] = str(scratch / "tmp")
    (scratch / "cache").mkdir()
    (scratch / "tmp").mkdir()
    flags = ["--no-https"] if req.insecure else []
    _run([req.apptainer, "pull", *flags, str(partial), uri], env)
    if not partial.is_file() or partial.stat().st_size == 0:
        raise TaskError(f"apptainer reported success but wrote no image at {partial}")


def _image_result(
    req: PullImage,
    pin: dict[str, Any],
    target: Path,
    started: float,
    node: str,
    *,
    already_present: bool,
    sha256: str | None = None,
) -> dict:
    st = target.stat()
    return {
        "path": str(target),
        "uri": req.uri,
        "source": req.uri,
        **pin,
        "size": st.st_size,
        "sha256": sha256 or sha256_file(target),
        "mode": oct(st.st_mode & 0o777),
        "duration_s": round(time.monotonic() - started, 3),
        "node": node,
        "already_present": already_present,
    }


# --------------------------------------------------------------------------- models
