"""The cluster's side of a remote profile: what ``python -m blackfish_jobs.agent`` does there.

Each request carries what it needs (the profile's folders, the laptop's settings, the jobs'
rows): the cluster keeps no history of its own (the laptop's database is the job history). What
must be true of the cluster is checked here, with the cluster's rules: its site file (fixed keys
included: the laptop's settings cannot undo them), its templates, its caches (the seed rule), its
Slurm. A submission runs exactly the code a login-node submission runs, against a throwaway store.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..backends.base import Observation
from ..errors import BadInput, BfjobsError, ConfigError
from ..states import COMPLETED
from ..store import JobRow

if TYPE_CHECKING:
    from .. import config
    from ..backends.slurmcmd import Prestarted
    from ..verify import Finding

# Only what a survey (the common request: every status and wait) needs is imported up front; the
# configuration, the kinds and submission are imported by the requests that use them.


def decode_rows(raw: Any) -> list[JobRow]:
    """Rows sent as :func:`blackfish_jobs.backends.remote.encode_rows` wrote them."""
    from datetime import datetime

    from ..store.rows import COLUMNS, DATETIME_COLUMNS

    if not isinstance(raw, list) or not all(isinstance(r, dict) and set(r) == set(COLUMNS) for r in raw):
        raise BadInput("malformed rows in a request")
    rows = []
    for fields in raw:
        values = {k: datetime.fromisoformat(v) if k in DATETIME_COLUMNS and v else v for k, v in fields.items()}
        rows.append(JobRow(**values))
    return rows


def serve(op: str, args: Any, prestarted: Prestarted | None = None) -> Any:
    """One request's answer (JSON-able); a bad request is a BadInput. ``prestarted``: the
    ``sacct`` call the agent started for a survey (:func:`blackfish_jobs.agent.prestart_sacct`),
    collected if the survey asks exactly that."""
    ops: dict[str, Callable[[dict[str, Any]], Any]] = {
        "submit": submit,
        "survey": survey,
        "cancel": cancel,
        "in_place": in_place,
        "read_log": read_log,
        "verify": verify,
        "doctor": doctor,
        "cache_ls": cache_ls,
        "cache_rm": cache_rm,
        "cache_prune": cache_prune,
        "prune_folders": prune_folders,
    }
    if op not in ops or not isinstance(args, dict):
        raise BadInput(f"unknown request {op!r}")
    if op == "survey":
        return survey(args, prestarted)
    return ops[op](args)


def _profile(raw: Any) -> config.Profile:
    """The laptop's profile as this cluster sees it: its folders must exist here."""
    from .. import config, validate

    if not isinstance(raw, dict):
        raise BadInput("malformed profile in the request")
    name = str(raw.get("name"))
    if not config._PROFILE_NAME.fullmatch(name):
        raise ConfigError(f"not a profile name: {name[:60]!r}")
    paths = {}
    for key in ("home_dir", "cache_dir"):
        path = validate.safe_path(f"[{name}] {key}", Path(str(raw.get(key))))
        if not path.is_dir():
            raise ConfigError(
                f"profile {name!r} {key}: {path} does not exist or is not a directory on this cluster "
                "(bfjobs does not create it)"
            )
        paths[key] = path
    user = config._current_user()
    return config.Profile(name, "slurm", paths["home_dir"], paths["cache_dir"], host="localhost", user=user)


def submit(args: dict[str, Any]) -> dict[str, Any]:
    """Build the specs here (this cluster's site file and templates), then triage, pin, render
    and submit them as a login-node submission does; ``render``: only say what would be sent."""
    import tempfile

    from .. import config, kinds
    from ..store import Database
    from . import submission

    profile = _profile(args.get("profile"))
    kind = kinds.get(str(args.get("kind")))
    many = bool(args.get("many"))
    params = args.get("params") or {}
    entries = args.get("entries")
    if not isinstance(params, dict) or not isinstance(entries, list) or not entries:
        raise BadInput("malformed submission request")
    ids = args.get("ids")
    if ids is not None and (
        not isinstance(ids, list)
        or len(ids) != len(entries)
        or len(set(ids)) != len(ids)
        or not all(isinstance(i, str) and _JOB_ID.fullmatch(i) for i in ids)
    ):
        raise BadInput("malformed job ids in the submission request")
    kind.check_params(params, from_file=many)
    layers = config.check_layers(args.get("layers", []))
    settings = kinds.resolve_settings(profile.name, kind.name, user_layers=layers).settings
    specs = []
    for origin, entry in entries:
        spec = kind.build(str(entry), profile, settings, params, from_file=many)
        specs.append(replace(spec, origin=origin) if origin else spec)
    notes: list[str] = []
    marker = Submission(profile.jobs_dir, ids[0]) if ids else None
    if marker is not None:
        marker.begin(ids or [])
    try:
        with tempfile.TemporaryDirectory(prefix="bfjobs-agent-") as scratch:
            db = Database(f"sqlite:///{scratch}/jobs.sqlite")
            try:
                if args.get("render"):
                    outcomes, script = submission.preview_plan(db, specs, many, notes.append)
                    return {"outcomes": [_outcome(o) for o in outcomes], "script": script, "notes": notes}
                try:
                    if many:
                        done = submission.submit_many(db, specs, notes.append, ids=ids)
                    else:
                        done = [submission.submit(db, specs[0], notes.append, job_id=ids[0] if ids else None)]
                except BfjobsError as exc:
                    partial = db.unfinished()  # arrays submitted before the one that failed
                    if not partial:
                        raise
                    from ..backends.remote import encode_rows

                    return {
                        "partial": encode_rows(partial),
                        "error": str(exc),
                        "type": type(exc).__name__,
                        "notes": notes,
                    }
            finally:
                db.close()
    finally:
        if marker is not None:
            marker.end()
    return {"outcomes": [_outcome(o) for o in done], "notes": notes}


class Submission:
    """A remote laptop's request, noted in ``<jobs_dir>/.bfjobs-submissions/<key>.json`` before
    anything is submitted and marked done after: a laptop that lost the answer learns from it (and
    each job folder's ``bfjobs-ids.json``) what became of each job, without guessing from clocks."""

    def __init__(self, jobs_dir: Path, key: str) -> None:
        self.path = jobs_dir / ".bfjobs-submissions" / f"{key}.json"

    def begin(self, ids: list[str]) -> None:
        import socket

        self._write({"ids": ids, "host": socket.gethostname(), "pid": os.getpid(), "done": False})

    def end(self) -> None:
        found = self.read()
        if found is not None:
            self._write({**found, "done": True})

    def read(self) -> dict[str, Any] | None:
        import json

        try:
            found = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return found if isinstance(found, dict) else None

    def working(self, found: dict[str, Any]) -> bool:
        """Is the agent that noted it still at work (same host, its pid alive), or could it be?"""
        import socket

        if found.get("done"):
            return False
        if found.get("host") != socket.gethostname():  # another login node: only its age can tell
            try:
                age = time.time() - self.path.stat().st_mtime
            except OSError:
                return False
            return age < SUBMITTING_GRACE.total_seconds()
        try:
            os.kill(int(found.get("pid", 0)), 0)
        except (OSError, ValueError, TypeError):
            return False
        return True

    def _write(self, data: dict[str, Any]) -> None:
        import json

        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(f".tmp{os.getpid()}")
        temporary.write_text(json.dumps(data))
        os.replace(temporary, self.path)


def _outcome(outcome: Any) -> dict[str, Any] | None:
    from ..backends.remote import encode_rows
    from ..specs import AlreadyPresent

    if outcome is None:
        return None
    if isinstance(outcome, AlreadyPresent):
        return {"present": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(outcome).items()}}
    if isinstance(outcome, JobRow):
        return {"row": encode_rows([outcome])[0]}
    raise BadInput(f"unexpected outcome {type(outcome).__name__}")


def _slurm(prestarted: Prestarted | None = None) -> Any:
    from ..backends import Backends

    return Backends(prestarted=prestarted).named("slurm")


_JOB_ID = re.compile(r"[0-9a-f]{12}")
#: A job folder without submitit's record of the submission may still be in the middle of it.
SUBMITTING_GRACE = timedelta(minutes=10)


def _recover(rows: Sequence[JobRow]) -> dict[str, Observation | tuple[str, str]]:
    """Jobs whose submission's answer the laptop lost: for each, its Slurm id and folder, or what
    became of it (an :class:`Observation`; ``known=False`` while the cluster may still be at it).

    The request's note (:class:`Submission`) lists its jobs and says whether the agent is done;
    each job folder's ``bfjobs-ids.json`` which element a job is, and submitit's
    ``*_submitted.pkl`` the Slurm id. Each note and folder is read once per survey, whatever the
    number of jobs."""
    import json

    from ..backends.protocol import IDS_FILE
    from ..states import FAILED
    from ..store import utcnow

    found: dict[str, Observation | tuple[str, str]] = {}
    groups: dict[tuple[Path, str], list[JobRow]] = {}
    for row in rows:
        key = row.request.get("submission")
        key = key if isinstance(key, str) and _JOB_ID.fullmatch(key) else row.id
        groups.setdefault((Path(row.folder).parent, key), []).append(row)
    for (jobs, key), group in groups.items():
        note = Submission(jobs, key)
        noted = note.read()
        if noted is None:  # the request never reached the cluster (or not yet)
            for row in group:
                young = utcnow() - row.submitted_at < SUBMITTING_GRACE
                found[row.id] = (
                    Observation(row.state, None, row.reason, known=False)
                    if young
                    else Observation(FAILED, None, "not submitted: the cluster never got the request")
                )
            continue
        listed = [i for i in noted.get("ids", []) if isinstance(i, str) and _JOB_ID.fullmatch(i)]
        where: dict[str, tuple[Path, int]] = {}
        for name in listed:  # an array's folder is named after its first job
            try:
                elements = json.loads((jobs / name / IDS_FILE).read_text())
            except (OSError, ValueError):
                continue
            if isinstance(elements, dict):
                where.update({j: (jobs / name, i) for j, i in elements.items() if isinstance(i, int)})
        working = note.working(noted)
        names: dict[Path, list[str]] = {}
        for row in group:
            if row.id not in where:
                found[row.id] = (
                    Observation(row.state, None, row.reason, known=False)
                    if working
                    else Observation(FAILED, None, "not submitted: the cluster did not submit it (present, or refused)")
                )
                continue
            folder, index = where[row.id]
            if folder not in names:
                try:
                    names[folder] = os.listdir(folder)
                except OSError:
                    names[folder] = []
            native = next(
                (
                    m.group(1)
                    for pattern in (rf"(\d+_{index})_submitted\.pkl", r"(\d+)_submitted\.pkl")
                    for n in names[folder]
                    if (m := re.fullmatch(pattern, n))
                ),
                None,
            )
            if native is not None:
                found[row.id] = (native, str(folder))
            elif working:
                found[row.id] = Observation(row.state, None, row.reason, known=False)
            else:
                found[row.id] = Observation(
                    FAILED, None, f"not submitted: the cluster's submission was cut off ({folder} has no Slurm id)"
                )
    return found


def survey(args: dict[str, Any], prestarted: Prestarted | None = None) -> dict[str, Any]:
    """One survey of all the rows (one ``sacct``, at most one ``squeue``), and for each job now
    COMPLETED whether its artefact is in place here. A row without a Slurm id (the laptop lost
    the answer to its submission) is first looked up in its job folder."""
    from ..backends.protocol import encode_observation

    rows = decode_rows(args.get("rows"))
    settled: dict[str, Observation] = {}
    learnt: dict[str, tuple[str, str]] = {}
    by_id = {r.id: r for r in rows}
    for job_id, outcome in _recover([r for r in rows if not r.native_id]).items():
        if isinstance(outcome, Observation):  # (a NamedTuple: asked first)
            settled[job_id] = outcome
        else:
            by_id[job_id].native_id, by_id[job_id].folder = learnt[job_id] = outcome
    rows = [r for r in rows if r.id not in settled]
    found = _slurm(prestarted).survey(rows, verify=bool(args.get("verify")), reasons=bool(args.get("reasons")))
    found.observed.update(settled)
    for job_id, (native, folder) in learnt.items():
        obs = found.observed.get(job_id)
        if obs is not None:
            found.observed[job_id] = obs._replace(native_id=native, folder=folder, known=True, as_stored=False)
    in_place = {}
    for job_id, obs in found.observed.items():
        if obs.state == COMPLETED and obs.result is not None:
            from .. import kinds

            done = replace(by_id[job_id], result=obs.result, state=COMPLETED)
            in_place[job_id] = kinds.get(done.kind).artefact_in_place(done)
    from ..backends import folder

    now = [  # only the rows that may have a record: a copy of each of 10,000 PENDING ones cost ~20 ms
        replace(by_id[k], state=o.state)
        for k, o in found.observed.items()
        if o.state in folder.WITH_PROGRESS and k in by_id and by_id[k].native_id
    ]
    return {
        "observed": {k: encode_observation(v) for k, v in found.observed.items()},
        "problems": found.problems,
        "reason_seen": sorted(found.reason_seen),
        "in_place": in_place,
        "progress": folder.read_progress(now),  # of the running and just-ended ones: a file each
    }


def cancel(args: dict[str, Any]) -> dict[str, Any]:
    """One ``scancel`` for the jobs with a Slurm id; one whose submission is unconfirmed (the laptop
    lost the answer) is refused until a refresh has found its id."""
    rows = decode_rows(args.get("rows"))
    refused = {
        r.id: "its submission is unconfirmed: `bfjobs status` first asks the cluster what became of it"
        for r in rows
        if not r.native_id
    }
    known = [r for r in rows if r.native_id]
    if known:
        refused.update(_slurm().cancel(known).refused)
    return {"refused": refused}


def in_place(args: dict[str, Any]) -> dict[str, bool]:
    from .. import kinds

    return {r.id: kinds.get(r.kind).artefact_in_place(r) for r in decode_rows(args.get("rows"))}


def read_log(args: dict[str, Any]) -> str | None:
    import base64

    [row] = decode_rows(args.get("rows"))
    stream = args.get("stream")
    offset = args.get("offset")
    if stream not in ("out", "err") or not isinstance(offset, int) or offset < 0:
        raise BadInput("malformed log request")
    data = _slurm().read_log(row, stream, offset)
    return None if data is None else base64.b64encode(data).decode()


def check_artefacts(profile: config.Profile | None, paths: Sequence[str], rows: Sequence[JobRow]) -> list[Finding]:
    """``bfjobs verify``'s findings, here: each path (an artefact, or a folder of them, inside the
    profile's two caches), then each job's artefact (as its kind checks it)."""
    from .. import kinds, layout
    from .. import verify as checks

    findings = []
    if paths:
        assert profile is not None
        bases = [profile.cache_dir, profile.home_dir]
        images = [layout.images_dir(b).resolve() for b in bases]
        models = [layout.models_dir(b).resolve() for b in bases]
        for ref in paths:
            for artefact in checks.artefacts(checks.cache_path(ref, images, models), images, models):
                findings.append(checks.verify_path(artefact))
    for row in rows:
        finding = kinds.get(row.kind).verify(row)
        if finding is not None:
            findings.append(finding)
    return findings


def verify(args: dict[str, Any]) -> list[dict[str, Any]]:
    """:func:`check_artefacts` on this cluster, for a laptop's ``verify``."""
    paths = args.get("paths")
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise BadInput("malformed paths in a verify request")
    profile = _profile(args.get("profile")) if paths else None
    return [f.to_json() for f in check_artefacts(profile, paths, decode_rows(args.get("rows")))]


def doctor(args: dict[str, Any]) -> list[list[str | None]]:
    """``bfjobs doctor``'s checks of this cluster for a laptop's remote profile, with the settings
    it sent merged under this cluster's site file."""
    from .. import config, kinds
    from ..backends import Backends
    from . import doctor as checks

    layers = args.get("layers")
    if not isinstance(layers, dict):
        raise BadInput("malformed doctor request")
    try:
        profile = _profile(args.get("profile"))
    except ConfigError as exc:
        return [
            ["profile folders", "fail", str(exc), "set home_dir and cache_dir to the cluster's paths (profiles.cfg)"]
        ]
    found: list[Any] = []
    settings = {}
    for kind in kinds.names():
        try:
            sent = config.check_layers(layers.get(kind, []))
            settings[kind] = kinds.resolve_settings(profile.name, kind, user_layers=sent).settings
        except BfjobsError as exc:
            found.append(checks.Check(f"settings: {kind}", "fail", str(exc), "fix the file and key it names"))
    found += checks.here(profile, settings, Backends().named("slurm"))
    return [list(c) for c in found]


# ------------------------------------------------------------------------------- cache requests


class _Reporter:
    """Progress of a long request as lines before the answer (the laptop shows them), at most a
    few a second."""

    def __init__(self) -> None:
        self.last = 0.0

    def __call__(self, done: int, freed: int) -> None:
        from ..backends.protocol import PROGRESS

        now = time.monotonic()
        if self.last >= 0 and now - self.last >= 0.5:
            self.last = now
            try:
                print(f"{PROGRESS} {done} {freed}", flush=True)
            except OSError:  # the laptop hung up: the removal goes on to the end, unreported
                self.last = -1.0


def _flag(args: dict[str, Any], key: str) -> bool:
    value = args.get(key)
    if not isinstance(value, bool):
        raise BadInput(f"malformed {key} in a cache request")
    return value


def cache_ls(args: dict[str, Any]) -> dict[str, Any]:
    """``bfjobs cache ls`` of this cluster's caches, for a laptop."""
    from . import caches

    entries, spaces = caches.ls_here(_profile(args.get("profile")))
    return {"entries": [e.to_json() for e in entries], "spaces": [x.to_json() for x in spaces]}


def cache_rm(args: dict[str, Any]) -> dict[str, Any]:
    """``bfjobs cache rm`` here: the laptop's targets checked again with this cluster's rules."""
    from . import caches

    targets = args.get("targets")
    if not isinstance(targets, list) or not all(isinstance(t, dict) for t in targets):
        raise BadInput("malformed targets in a cache rm request")
    parsed = []
    for t in targets:
        if t.get("kind") not in ("image", "model"):
            raise BadInput("malformed target kind in a cache rm request")
        text = str(t.get("name")) if t.get("kind") == "image" else str(t.get("repo_id"))
        if t.get("kind") == "model" and t.get("revision") is not None:
            text += "@" + str(t.get("revision"))
        parsed.append(caches.parse_target(text))
        if parsed[-1]["kind"] != t.get("kind"):
            raise BadInput("malformed target in a cache rm request")
    done: list[Any] = []
    try:
        removals = caches.rm_here(
            _profile(args.get("profile")),
            parsed,
            shared=_flag(args, "shared"),
            dry_run=_flag(args, "dry_run"),
            progress=_Reporter(),
            on_removed=done.append,
        )
    except BfjobsError as exc:  # what went before it still goes into the laptop's answer (its rows)
        return {"removed": [r.to_json() | {"blobs": r.blobs} for r in done], "error": str(exc),
                "type": type(exc).__name__}
    return {"removed": [r.to_json() | {"blobs": r.blobs} for r in removals], "error": None, "type": None}


def cache_prune(args: dict[str, Any]) -> dict[str, Any]:
    """``bfjobs cache prune`` here; ``models``: the laptop's Blackfish rows ``[model_dir, revision]``
    to check (it deletes those whose snapshot is gone from this cluster's cache)."""
    from . import caches

    older = args.get("older_than")
    if older is not None and (not isinstance(older, (int, float)) or isinstance(older, bool) or older < 0):
        raise BadInput("malformed older_than in a cache prune request")
    models = args.get("models")
    if not isinstance(models, list) or not all(
        isinstance(m, list) and len(m) == 2 and all(isinstance(x, str) for x in m) for m in models
    ):
        raise BadInput("malformed models in a cache prune request")
    leftovers, gone = caches.prune_here(
        _profile(args.get("profile")),
        shared=_flag(args, "shared"),
        dry_run=_flag(args, "dry_run"),
        older_than=None if older is None else float(older),
        models=[(a, b) for a, b in models],
        progress=_Reporter(),
    )
    return {"leftovers": [x.to_json() for x in leftovers], "gone": [list(g) for g in gone]}


def prune_folders(args: dict[str, Any]) -> list[dict[str, Any]]:
    """``bfjobs jobs prune`` here: the laptop names its finished jobs' folders."""
    from . import caches

    folders = args.get("folders")
    if not isinstance(folders, list) or not all(isinstance(f, str) for f in folders):
        raise BadInput("malformed folders in a jobs prune request")
    return caches.prune_folders_here(_profile(args.get("profile")), folders, dry_run=_flag(args, "dry_run"))
