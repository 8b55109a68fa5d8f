"""Hostile input (issue 5, first section): every argument, option and configuration field, fuzzed.

Each generated value must be either

* refused: exit 2, exactly one ``bfjobs: error:`` line on stderr that names the problem (no
  traceback, no raw control character), nothing written, nothing submitted; or
* rendered into a script that ``bash -n`` accepts and in which the value stays one inert word.
  "Inert" is checked by running the script's prelude (every line but the ``#SBATCH`` header and
  the final submitit command) under bash, with harmless ``module``/``apptainer`` stand-ins on
  PATH and a canary that any injected command would create: the exported values must come out
  byte for byte, ``module`` must get each module as one argument, no variable may appear that
  the template does not export, and the canary must never exist.

``submit`` is exercised next to ``render`` with submitit's executor replaced by a recorder: it must
refuse exactly what ``render`` refuses, with the same line, and submit exactly the spec ``render``
previews. The Slurm tests at the end push payload-carrying values through every path on the
real cluster and prove the canary never appears and nothing is written outside the allowed places.
"""

from __future__ import annotations

import configparser
import grp
import json
import math
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import unicodedata
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import hypothesis.configuration
import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from support.site import STUB_BIN, local_profile, profiles_cfg, slurm_profile

from blackfish_jobs import __version__, config, render
from blackfish_jobs.backends import folder as folder_layout
from blackfish_jobs.backends.base import Submitted
from blackfish_jobs.backends.local import LocalBackend
from blackfish_jobs.backends.slurm import SlurmBackend
from blackfish_jobs.cli import cli as bfjobs_cli
from blackfish_jobs.errors import BadInput, TemplateError
from blackfish_jobs.kinds import image, model

# Hypothesis keeps its files where pytest started, not in the sandbox cwd the tests run bfjobs in.
hypothesis.configuration.set_hypothesis_home_dir(str(Path.cwd() / ".hypothesis"))

#: Bounded so the whole file runs in under a minute: 50 examples for each of the ~60 per-parameter
#: properties, 200 for a property over a whole mechanism (~3500 new hostile values per run).
#: BFJOBS_HOSTILE_EXAMPLES=N (per parameter; the others get 4N) searches deeper, more slowly.
_EXAMPLES = int(os.environ.get("BFJOBS_HOSTILE_EXAMPLES", "50"))
PROPERTY = settings(
    max_examples=4 * _EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
PER_PARAMETER = settings(PROPERTY, max_examples=_EXAMPLES)

CANARY = "PWNED"
#: Every way to smuggle ``touch <canary>`` into a shell line.
PAYLOADS = (
    f";touch {CANARY}",
    f"$(touch {CANARY})",
    f"`touch {CANARY}`",
    f"\ntouch {CANARY}",
    f"\rtouch {CANARY}\r",
    f"' ; touch {CANARY} ; '",
    f'" ; touch {CANARY} ; "',
    f"&& touch {CANARY}",
    f"|touch {CANARY}",
    f">{CANARY}",
    f"${{IFS}}touch${{IFS}}{CANARY}",
    f"\\\ntouch {CANARY}",
    f"; touch ~/{CANARY} #",
)
#: Fragments that break shells, paths, sbatch, Jinja, option parsers and eyes.
FRAGMENTS = (
    ";", "|", "&", "$", "`", "'", '"', "\\", "\n", "\r", "\r\n", "\x00", "\t", " ", "\x0b", "\x0c", "\x1b[31m",
    "\x07", "\x7f", "..", "../", "/..", "/../../etc/passwd", "/", "//", "./", "/etc/passwd", "~", "~root",
    "~nosuchuser", "*", "?", "[", "]", "{", "}", "(", ")", "<", ">", "!", "#", "=", ",", ":", "@", "^", "+",
    "%j", "%A", "%x", "%u", "%%", "%", "%(home_dir)s", "{{ 7*7 }}", "{% if 1 %}x{% endif %}", "{#", "#}", "{{",
    "}}", "-", "--", "-x", "--help", "--version", "-rf", "--wait", "\u202e", "\u200f", "\u200e", "\u2066",
    "\u200b", "\u200d", "\ufeff", "\u2028", "\u2029", "\x85", "\xa0", "\u3000", "\u00ad", "\u0430", "\u0435",
    "\u043e", "\u0455", "\uff44", "\u2113", "\u2215", "\uff0e", "\u2010", "\u0131", "\u0130", "\xdf", "\u212a",
    ".lock", ".git", ".sif", "@{", ".", "refs/", "sha256:", "docker://", "https://",
)
#: ASCII letters and their look-alikes (Cyrillic, Greek, fullwidth, math, the Kelvin sign).
HOMOGLYPHS = {
    "a": "\u0430", "e": "\u0435", "o": "\u03bf", "p": "\u0440", "c": "\u0441", "x": "\u0445", "i": "\u0456",
    "s": "\u0455", "l": "\u2113", "k": "\u212a", "/": "\u2215", ":": "\ua789", ".": "\uff0e", "-": "\u2010",
    "_": "\uff3f", "0": "\u041e", "1": "\u0661",
}


def _insert(base: str, edits: list[tuple[int, str]]) -> str:
    for position, fragment in edits:
        at = position % (len(base) + 1)
        base = base[:at] + fragment + base[at:]
    return base


def _lookalike(base: str, position: int) -> str:
    spots = [i for i, ch in enumerate(base) if ch in HOMOGLYPHS]
    if not spots:
        return base + "\u200b"
    i = spots[position % len(spots)]
    return base[:i] + HOMOGLYPHS[base[i]] + base[i + 1 :]


def _stretch(base: str, length: int) -> str:
    return (base * (length // max(len(base), 1) + 1))[:length]


def hostile(valid: Sequence[str]) -> st.SearchStrategy[str]:
    """Valid values, and valid values broken in every way we know (plus arbitrary text)."""
    base = st.sampled_from(list(valid))
    fragment = st.sampled_from(PAYLOADS + FRAGMENTS)
    return st.one_of(
        base,
        st.builds(_insert, base, st.lists(st.tuples(st.integers(0, 600), fragment), min_size=1, max_size=3)),
        st.builds(_lookalike, base, st.integers(0, 600)),
        st.lists(fragment, min_size=1, max_size=4).map("".join),
        st.builds(lambda b, p: b + p, base, st.sampled_from(PAYLOADS)),
        st.text(max_size=24),
        st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=24),
        st.builds(_stretch, base, st.sampled_from([97, 161, 201, 256, 257, 513, 1025, 5000])),
        st.just(""),
    )


def invisible(ch: str) -> bool:
    """What no message or script may carry raw: control, format (bidi) and line-separator characters."""
    category = unicodedata.category(ch)
    return category[0] == "C" or category in ("Zl", "Zp")


# ----------------------------------------------------------------------------- the sandbox

DB_FILES = ("app.sqlite", "app.sqlite-wal", "app.sqlite-shm", "app.sqlite-journal")
LOCAL_NOTICE = "bfjobs: local profile: "
BASE_ENV = {"PATH", "HOME", "TMPDIR", "PWD", "SHLVL", "_", "OLDPWD", "BFJOBS_TEST_ENV", "BFJOBS_TEST_CALLS"}
PULL_ENV = {"SUBMITIT_EXECUTOR", "BFJOBS_JOB_ID", "BFJOBS_KIND", "BFJOBS_PULL_URI", "BFJOBS_PULL_TARGET"}
DOWNLOAD_ENV = {
    "SUBMITIT_EXECUTOR", "BFJOBS_JOB_ID", "BFJOBS_KIND", "HF_HUB_DISABLE_TELEMETRY", "HF_HUB_DISABLE_PROGRESS_BARS",
    "HF_HUB_DISABLE_UPDATE_CHECK", "BFJOBS_MODEL_REPO", "BFJOBS_MODEL_DIR",
}
SBATCH_LINE = re.compile(r"#SBATCH --[a-z][a-z-]*(?:=[A-Za-z0-9_.,:=/@+&|\[\]*()!-]+)?")
LOG_LINE = re.compile(r"#SBATCH --(?:output|error)=/[A-Za-z0-9._+@/-]+/(?:%j|%A_%a)_0_log\.(?:out|err)")
ARRAY_LINE = re.compile(r"#SBATCH --array=0-[0-9]+%[0-9]+")
STUB = """#!/bin/bash
# A harmless stand-in: records its argv (NUL-separated, one record per call) and succeeds.
{ printf '%s\\0' "$(basename "$0")" "$@"; printf '\\036'; } >> "$BFJOBS_TEST_CALLS"
"""
DEFAULT_URI = "docker://alpine:3.20"
DEFAULT_REPO = "org/model"


@dataclass
class Submission:
    spec: Any
    folder: Path
    job_id: str
    preview: str


@dataclass
class Prelude:
    """What running a script's prelude produced: its exported environment and the stand-ins' calls."""

    env: dict[str, str]
    calls: list[list[str]]


@dataclass
class Sandbox:
    """An isolated Blackfish installation plus the places bfjobs must never write to."""

    root: Path
    submitted: list[Submission] = field(default_factory=list)

    def __post_init__(self) -> None:
        for d in (self.app, self.home, self.cache, self.run, self.userhome, self.tmp, self.stubs, self.out,
                  self.templates):
            d.mkdir(parents=True, exist_ok=True)
        for name in ("module", "apptainer"):
            (self.stubs / name).write_text(STUB)
            (self.stubs / name).chmod(0o755)
        self.write_profiles()
        self._baselines: dict[str, str] = {}

    app = property(lambda self: self.root / "app")
    home = property(lambda self: self.root / "home")
    cache = property(lambda self: self.root / "cache")
    run = property(lambda self: self.root / "run")  # cwd: must stay empty
    userhome = property(lambda self: self.root / "userhome")  # $HOME: must stay empty
    tmp = property(lambda self: self.root / "tmp")  # $TMPDIR: must stay empty
    stubs = property(lambda self: self.root / "stubs")
    out = property(lambda self: self.root / "out")
    templates = property(lambda self: self.root / "templates")

    @property
    def preview_folder(self) -> Path:
        return self.home / "jobs" / "bfjobs" / render.PREVIEW_ID

    def profiles_text(self, **override: str) -> str:
        hpc = slurm_profile(self.home, self.cache, default="true")
        hpc.update(override)
        return profiles_cfg({"hpc": hpc, "laptop": local_profile(self.home, self.cache)})

    def write_profiles(self, text: str | None = None) -> None:
        (self.app / "profiles.cfg").write_text(self.profiles_text() if text is None else text, encoding="utf-8")

    def write_settings(self, text: str | None) -> None:
        path = self.app / "bfjobs.toml"
        if text is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(text, encoding="utf-8")

    def invoke(self, *args: str, env: dict[str, str] | None = None) -> Result:
        return CliRunner().invoke(bfjobs_cli, list(args), env=env, catch_exceptions=False)

    def fake_submit(self, spec: Any, folder: Path, script: str | None, task: Any) -> Submitted:
        """Stands in for submitit: records what would be submitted, and what render previews for it."""
        preview = render.render(spec, spec.profile.jobs_dir / render.PREVIEW_ID, render.PREVIEW_ID)
        self.submitted.append(Submission(spec, folder, folder.name, preview))
        return Submitted("slurm", str(900000 + len(self.submitted)))

    def fake_submit_array(self, specs_: Sequence[Any], folder: Path, script: str, task: Any) -> list[Submitted]:
        """Stands in for a job-array submission (``--from-file``), like :meth:`fake_submit`."""
        first = specs_[0]
        preview = render.render(first, first.profile.jobs_dir / render.PREVIEW_ID, render.PREVIEW_ID, specs_)
        self.submitted.append(Submission(list(specs_), folder, folder.name, preview))
        return [Submitted("slurm", f"{900000 + len(self.submitted)}_{i}") for i in range(len(specs_))]

    def list_file(self, kind: str, entries: Sequence[str] | None = None) -> Path:
        """A ``--from-file`` list (test-owned; two valid entries unless given)."""
        if entries is None:
            entries = ["docker://alpine:3.20", "docker://alpine:3.21"] if kind == "pull-image" else [
                "org/model", "org/model@v1.0"]
        path = self.out / f"{kind}.list"
        path.write_text("\n".join(entries) + "\n", encoding="utf-8")
        return path

    def tree(self) -> dict[str, tuple[Any, ...]]:
        """Every path bfjobs could have written (test-owned files and the DB excluded)."""
        found: dict[str, tuple[Any, ...]] = {}
        for dirpath, dirnames, filenames in os.walk(self.root):
            rel = os.path.relpath(dirpath, self.root)
            if rel == ".":
                dirnames[:] = [d for d in dirnames if d not in ("stubs", "out", "templates")]
            for d in dirnames:
                found[os.path.normpath(os.path.join(rel, d))] = ("dir",)
            for f in filenames:
                path = os.path.normpath(os.path.join(rel, f))
                if path in ("app/profiles.cfg", "app/bfjobs.toml") or (rel == "app" and f in DB_FILES):
                    continue
                st_ = os.lstat(os.path.join(dirpath, f))
                found[path] = ("file", st_.st_size, st_.st_mtime_ns)
        return found

    def assert_clean(self) -> None:
        """No canary anywhere; cwd, $HOME and $TMPDIR untouched; only config and DB files in the app dir."""
        assert [str(p) for p in self.root.rglob(f"*{CANARY}*")] == []
        for d in (self.run, self.userhome, self.tmp):
            assert os.listdir(d) == [], (d, os.listdir(d))
        assert set(os.listdir(self.app)) <= {"profiles.cfg", "bfjobs.toml", *DB_FILES}, os.listdir(self.app)

    def forget_jobs(self) -> None:
        """Drop recorded (fake) jobs so the next submit of the same artefact is not 'in flight'."""
        shutil.rmtree(self.home / "jobs", ignore_errors=True)
        db = self.app / "app.sqlite"
        if db.exists():
            conn = sqlite3.connect(db)
            with conn:
                conn.execute("DELETE FROM bfjobs_jobs")
            conn.close()

    def run_prelude(self, script: str) -> Prelude:
        """Run everything before the submitit command under bash, with stand-ins and a canary."""
        lines = script.splitlines()
        assert "submitit.core._submit" in lines[-1]
        body = [line for line in lines[:-1] if not line.startswith("#SBATCH")]
        body.append('env -0 > "$BFJOBS_TEST_ENV"')
        prelude, dump, calls = self.out / "prelude.sh", self.out / "env", self.out / "calls"
        prelude.write_text("\n".join(body) + "\n", encoding="utf-8")
        dump.unlink(missing_ok=True)
        calls.unlink(missing_ok=True)
        env = {"PATH": f"{self.stubs}:/usr/bin:/bin", "HOME": str(self.userhome), "TMPDIR": str(self.tmp),
               "BFJOBS_TEST_ENV": str(dump), "BFJOBS_TEST_CALLS": str(calls)}
        proc = subprocess.run(["bash", str(prelude)], cwd=self.run, env=env, capture_output=True, timeout=30)
        assert proc.returncode == 0 and proc.stderr == b"", proc.stderr
        exported = dict(item.split("=", 1) for item in dump.read_bytes().decode().split("\0") if item)
        records = calls.read_bytes().decode().split("\x1e") if calls.exists() else []
        self.assert_clean()
        return Prelude(exported, [r.split("\0")[:-1] for r in records if r])

    def baseline(self, kind: str, array: int = 0) -> str:
        """The script for the default request (or an ``array`` of that many valid entries) with
        the default configuration."""
        key = f"{kind}-{array}"
        if key not in self._baselines:
            if array:
                entries = [f"docker://alpine:{i}" if kind == "pull-image" else f"org/model{i}" for i in range(array)]
                path = self.out / "baseline.list"
                path.write_text("\n".join(entries) + "\n", encoding="utf-8")
                args = ["--from-file", str(path)]
            else:
                args = ["--", DEFAULT_URI if kind == "pull-image" else DEFAULT_REPO]
            # rendered with the default profiles.cfg and no bfjobs.toml, whatever the example wrote
            saved = {p: p.read_bytes() for p in (self.app / "profiles.cfg", self.app / "bfjobs.toml") if p.exists()}
            self.write_profiles()
            self.write_settings(None)
            try:
                result = self.invoke("render", kind, *args)
            finally:
                for path, content in saved.items():
                    path.write_bytes(content)
            assert result.exit_code == 0, result.stderr
            self._baselines[key] = result.stdout
        return self._baselines[key]


@pytest.fixture
def sb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    """A sandbox shared by a property's examples (each example resets what it changes); bfjobs runs
    in-process with the sandbox as cwd, $HOME and $TMPDIR, and submitit replaced by a recorder."""
    sandbox = Sandbox(tmp_path)
    for var in ("BFJOBS_DB_URL", "BFJOBS_TEMPLATES_DIR", "BFJOBS_CONFIG", "HF_ENDPOINT", "BFJOBS_DEBUG",
                "BFJOBS_NODE_SCRATCH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("BLACKFISH_HOME_DIR", str(sandbox.app))
    monkeypatch.setenv("HOME", str(sandbox.userhome))
    monkeypatch.setenv("TMPDIR", str(sandbox.tmp))
    # submit asks no hub here (its answer would depend on this machine's network): the hub check
    # at submit is tested against the test hub in test_submit_resolve.py
    # (huggingface_hub reads HF_HUB_OFFLINE once, at import: import it before setting the variable,
    # or every later test in this process would find the hub offline)
    import huggingface_hub.constants  # noqa: F401

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(sandbox.run)
    for backend in (SlurmBackend, LocalBackend):  # each backend's submission, recorded instead
        monkeypatch.setattr(backend, "submit", lambda _self, *args: sandbox.fake_submit(*args))
    monkeypatch.setattr(SlurmBackend, "submit_array", lambda _self, *args: sandbox.fake_submit_array(*args))
    yield sandbox
    sandbox.assert_clean()


# ----------------------------------------------------------------------------- outcome checks


def assert_refused(result: Result, names: Sequence[str]) -> str:
    """Exit 2 and exactly one escaped ``bfjobs: error:`` line that names the problem."""
    err = result.stderr
    assert result.exit_code == 2, (result.exit_code, err, result.stdout[-300:])
    assert err.endswith("\n") and len(err.splitlines()) == 1, err
    line = err.splitlines()[0]
    assert line.startswith("bfjobs: error: "), line
    assert any(name in line for name in names), (names, line)
    assert not any(invisible(ch) for ch in line), line
    assert "Traceback" not in result.output and result.stdout == ""
    return line


def check_script(script: str, folder: Path, *, admin_lines: Sequence[str] = (), array: bool = False) -> None:
    """bash -n accepts it; a clean #SBATCH header; every line whole shell words; no invisible characters.

    ``admin_lines`` (bfjobs.toml ``setup``) are the site's own shell, not values: they are exempt
    from the syntax checks (a site may split an ``if`` over several lines).
    """
    if not admin_lines:
        proc = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    first_command = next(i for i, line in enumerate(lines) if line and not line.startswith("#"))
    header = [line for line in lines if line.startswith("#SBATCH")]
    for line in header:
        assert lines.index(line) < first_command, line  # sbatch stops reading at the first command
        assert SBATCH_LINE.fullmatch(line) or LOG_LINE.fullmatch(line) or ARRAY_LINE.fullmatch(line), line
    flags = [line.split("=", 1)[0] for line in header]
    assert len(flags) == len(set(flags)), flags
    assert f"#SBATCH --output={folder}/{'%A_%a' if array else '%j'}_0_log.out" in header
    assert ("#SBATCH --array" in flags) == array
    assert shlex.split(lines[-1]) == ["exec", *folder_layout.submit_argv(folder)]  # exec: signals reach Python
    for line in lines:
        if line not in admin_lines:
            shlex.split(line, comments=True)  # raises on an unbalanced quote
            assert not any(invisible(ch) for ch in line), line


@dataclass
class Accepted:
    script: str
    spec: Any  # the spec submit handed to the (fake) executor, None when submit was not run


def attempt(sb: Sandbox, kind: str, args: Sequence[str], names: Sequence[str], *,
            env: dict[str, str] | None = None, submit: bool = True) -> Accepted | None:
    """``render`` then ``submit``: refused alike (nothing written or submitted), or accepted alike."""
    before = sb.tree()
    rendered = sb.invoke("render", kind, *args, env=env)
    assert sb.tree() == before, "render wrote something"
    done = len(sb.submitted)
    if rendered.exit_code != 0:
        line = assert_refused(rendered, names)
        submitted = sb.invoke("submit", kind, "--wait", *args, env=env)
        assert assert_refused(submitted, names) == line
        assert len(sb.submitted) == done, "a refused request was submitted"
        assert sb.tree() == before, "a refused submit wrote something"
        return None
    # besides the local-profile notice, only --from-file's one line per entry (element or skipped)
    # and, for downloads, that the hub is not asked (the sandbox is offline), as submit says too;
    # for library://, shub:// and https:// images, that their tags cannot be pinned
    notes = [line for line in rendered.stderr.splitlines()
             if not line.startswith(("bfjobs: array element ", "bfjobs: skipped ", "bfjobs: HF_HUB_OFFLINE is set"))
             and not re.fullmatch(r"bfjobs: (library|shub|https):// tags cannot be pinned to a digest: .*", line)]
    assert notes == [] or (len(notes) == 1 and notes[0].startswith(LOCAL_NOTICE)), rendered.stderr
    if not submit:
        return Accepted(rendered.stdout, None)
    submitted = sb.invoke("submit", kind, *args, env=env)  # no --wait: the recorder started nothing
    assert submitted.exit_code == 0, submitted.stderr
    [job] = sb.submitted[done:]
    assert job.preview == rendered.stdout, "render previews another script than submit sends"
    allowed = {"home/jobs", "home/jobs/bfjobs", f"home/jobs/bfjobs/{job.job_id}"}
    after = sb.tree()
    assert {k for k in after if after[k] != before.get(k)} <= allowed  # the job folder, and the DB
    sb.forget_jobs()
    return Accepted(rendered.stdout, job.spec)


def sbatch_value(script: str, flag: str) -> str | None:
    found = [line.split("=", 1)[1] for line in script.splitlines() if line.startswith(f"#SBATCH --{flag}=")]
    return found[0] if found else None


def without_label(script: str) -> list[str]:
    """The script minus its two descriptive comment lines (profile, and the quoted request label)."""
    return [line for line in script.splitlines() if not line.startswith(("# bfjobs ", "# '"))]


# ----------------------------------------------------------------------------- the renderer itself


@PROPERTY
@given(value=st.one_of(hostile(["a", "docker://alpine:3.20", "{{ x }}"]), st.text(max_size=40)))
def test_renderer_quotes_every_value_or_refuses_it(value: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Any value a template prints is one inert word: bash hands it back byte for byte."""
    env = render.environment()
    template = env.from_string("printf '%s\\0' {{ v }} {{ items | argv }}")
    items = [value, "-x", value]
    if any(invisible(ch) for ch in value):
        with pytest.raises(TemplateError, match="control characters"):
            template.render(v=value, items=items)
        return
    script = template.render(v=value, items=items)
    cwd = tmp_path_factory.getbasetemp() / "quote"
    cwd.mkdir(exist_ok=True)
    out = subprocess.run(["bash", "-c", script], capture_output=True, cwd=cwd, env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().split("\0")[:-1] == [value, *items]
    assert os.listdir(cwd) == []


@PROPERTY
@given(flag=st.sampled_from(["time", "partition", "constraint", "output"]), value=hostile(["02:00:00", "cpu", "a&b"]),
       percent=st.booleans())
def test_sbatch_lines_are_one_clean_token(flag: str, value: str, percent: bool) -> None:
    """``#SBATCH`` values are never quoted (sbatch is no shell), so they must be refused or plain."""
    try:
        line = render.sbatch_line(flag, value, allow_percent=percent)
    except TemplateError as exc:
        assert "\n" not in str(exc)
        return
    assert line == f"#SBATCH --{flag}={value}"
    assert re.fullmatch(r"[A-Za-z0-9_.,:=/@+&|\[\]*()!%-]+", value)
    assert percent or "%" not in value


# ----------------------------------------------------------------------------- submit and render arguments

SLURM_VALUES = {
    "--partition": ["cpu", "data-mover.1"],
    "--qos": ["xfer", "normal"],
    "--account": ["lab_1", "A-b.c"],
    "--time": ["90", "02:00:00", "1-00:00:00", "0:30"],
    "--mem": ["8G", "500M", "1024"],
    "--cpus-per-task": ["1", "16", "0004"],
    "--constraint": ["intel&ib", "[a*2|b]", "(x|y)&!z"],
}
PULL_VALUES = {
    "URI": ["docker://alpine:3.20", "docker://ghcr.io/org/tool:v1.0", "library://a/b/c:latest",
            "https://example.org/images/tool_2.0.sif", "docker://ubuntu@sha256:" + "0" * 64,
            "oras://ghcr.io/org/image:1.0", "shub://vsoch/hello-world", "docker://localhost:5000/a-b/c_d:v1.0-rc_1"],
    "--profile": ["hpc", "laptop"],
    "--to": ["shared", "home"],
    "--name": ["tool.sif", "A+b-c_1.0.sif", "x" * 196 + ".sif"],
    **SLURM_VALUES,
    "--from-file": ["{list}"],
    "--max-parallel": ["1", "2", "0010"],
}
DOWNLOAD_VALUES = {
    "REPO_ID": ["meta-llama/Llama-3.1-8B", "org/m.v2", "Org_1/a-b_c.d", "n" * 63 + "/" + "m" * 96],
    "--profile": ["hpc", "laptop"],
    "--revision": ["main", "v1.0", "refs/pr/1", "release/2024-06", "0123456789abcdef" * 2 + "01234567"],
    "--include": ["*.safetensors", "original/*", "[a-z]*.json", "sub/**"],
    "--exclude": ["*.bin", "tokenizer.json", "a?c"],
    "--to": ["home", "shared"],
    **SLURM_VALUES,
    "--from-file": ["{list}"],
    "--max-parallel": ["1", "2", "0010"],
}
CLI_CASES = [("pull-image", p) for p in PULL_VALUES] + [("download-model", p) for p in DOWNLOAD_VALUES]


@pytest.mark.parametrize(("kind", "param"), CLI_CASES)
@PER_PARAMETER
@given(data=st.data())
def test_submit_and_render_arguments(sb: Sandbox, kind: str, param: str, data: st.DataObject) -> None:
    table = PULL_VALUES if kind == "pull-image" else DOWNLOAD_VALUES
    bases = [v.replace("{list}", str(sb.list_file(kind))) for v in table[param]]
    repeatable = param in ("--include", "--exclude")
    values = data.draw(st.lists(hostile(bases), min_size=1, max_size=3) if repeatable
                       else hostile(bases).map(lambda v: [v]), label=param)
    positional = DEFAULT_URI if kind == "pull-image" else DEFAULT_REPO
    options: list[str] = []
    if param in ("URI", "REPO_ID"):
        positional = values[0]
    else:
        for v in values:
            options += [param, v]
    if param == "--max-parallel":
        options += ["--from-file", str(sb.list_file(kind))]
    args = options if param in ("--from-file", "--max-parallel") else [*options, "--", positional]
    names = {"--profile": [param, "profile"], "--from-file": [param, "line "]}.get(param, [param])
    outcome = attempt(sb, kind, args, names)
    if all(v in bases for v in values):
        assert outcome is not None, f"a valid {param} was refused: {values!r}"
    if outcome is None:
        return
    script, spec = outcome.script, outcome.spec
    value = values[0]
    if param in ("--from-file", "--max-parallel"):  # one job array for the list
        check_script(script, sb.preview_folder, array=True)
        n = len(spec)
        assert sbatch_value(script, "array") == f"0-{n - 1}%{int(value) if param == '--max-parallel' else n}"
        assert without_label(script) == without_label(sb.baseline(kind, array=n).replace(
            f"--array=0-{n - 1}%{n}", f"--array={sbatch_value(script, 'array')}"))
        assert set(sb.run_prelude(script).env) - BASE_ENV == array_env(kind)
        return
    check_script(script, sb.preview_folder)
    prelude = sb.run_prelude(script)
    if kind == "pull-image":
        pinned = {"BFJOBS_PULL_DIGEST"} if spec.task.digest else set()  # a reference by digest
        assert set(prelude.env) - BASE_ENV == PULL_ENV | pinned
        assert prelude.env.get("BFJOBS_PULL_DIGEST") == spec.task.digest
        assert prelude.env["BFJOBS_PULL_URI"] == spec.task.uri
        assert prelude.env["BFJOBS_PULL_TARGET"] == str(spec.target)
    else:
        assert set(prelude.env) - BASE_ENV == DOWNLOAD_ENV
        assert prelude.env["BFJOBS_MODEL_REPO"] == spec.task.repo_id
        assert prelude.env["BFJOBS_MODEL_DIR"] == str(spec.target)
    assert prelude.calls == []
    if param == "URI":
        assert prelude.env["BFJOBS_PULL_URI"] == value
        assert Path(prelude.env["BFJOBS_PULL_TARGET"]).parent == sb.cache / "images"
    elif param == "REPO_ID":
        assert prelude.env["BFJOBS_MODEL_REPO"] == value
        assert prelude.env["BFJOBS_MODEL_DIR"] == str(sb.home / "models" / ("models--" + value.replace("/", "--")))
    elif param == "--name":
        assert prelude.env["BFJOBS_PULL_TARGET"] == str(sb.cache / "images" / value)
    elif param == "--to":
        base = sb.cache if value == "shared" else sb.home
        if kind == "pull-image":
            assert prelude.env["BFJOBS_PULL_TARGET"] == str(base / "images" / "alpine_3.20.sif")
        else:
            assert Path(prelude.env["BFJOBS_MODEL_DIR"]).parent == base / "models"
    elif param == "--profile":
        assert f"# bfjobs {__version__}: {kind} job {render.PREVIEW_ID} (profile {value})" in script.splitlines()
        assert spec.profile.name == value
    elif param == "--revision":
        assert without_label(script) == without_label(sb.baseline(kind))
        assert spec.task.revision == value
        assert f"# {shlex.quote(spec.label)}" in script.splitlines()
    elif repeatable:
        assert script == sb.baseline(kind)  # patterns go to the node as data, never into the script
        got = spec.task.allow_patterns if param == "--include" else spec.task.ignore_patterns
        assert got == tuple(values)
    else:
        expected = str(int(value)) if param == "--cpus-per-task" else value
        assert sbatch_value(script, param[2:]) == expected


def array_env(kind: str) -> set[str]:
    """What a job array's prelude exports: each element reads its request from its own pickle."""
    per_job = {"BFJOBS_PULL_URI", "BFJOBS_PULL_TARGET", "BFJOBS_MODEL_REPO", "BFJOBS_MODEL_DIR"}
    return (PULL_ENV if kind == "pull-image" else DOWNLOAD_ENV) - per_job


@pytest.mark.parametrize("kind", ["pull-image", "download-model"])
@PER_PARAMETER
@given(data=st.data())
def test_from_file_entries(sb: Sandbox, kind: str, data: st.DataObject) -> None:
    """Hostile lines in a ``--from-file`` list: the whole list is refused in one line, or each
    element is a validated request that never reaches the array's script as text."""
    bases = PULL_VALUES["URI"] if kind == "pull-image" else [*DOWNLOAD_VALUES["REPO_ID"], "org/model@v1.0",
                                                             "a/b@refs/pr/1", "c/d@" + "0" * 40]
    entries = data.draw(st.lists(hostile(bases), min_size=1, max_size=4), label="entries")
    if data.draw(st.booleans(), label="comments"):
        entries = ["# a comment; $(touch PWNED)", "", *entries, "   # indented comment `touch PWNED`"]
    path = sb.list_file(kind, entries)
    outcome = attempt(sb, kind, ["--from-file", str(path)], ["--from-file", "line ", "URI", "REPO_ID", "--revision"])
    real = [e for e in entries if e.strip() and not e.lstrip().startswith("#")]
    if real and all(e in bases for e in real):
        assert outcome is not None, f"a valid list was refused: {entries!r}"
    if outcome is None:
        return
    script, elements = outcome.script, outcome.spec
    text = path.read_text(encoding="utf-8")
    for element in elements:  # each element is an entry of the file, verbatim
        task = element.task
        assert (task.uri if kind == "pull-image" else task.repo_id) in text
        if kind == "download-model" and task.revision is not None:
            assert f"{task.repo_id}@{task.revision}" in text
    n = len(elements)
    check_script(script, sb.preview_folder, array=True)
    assert script == sb.baseline(kind, array=n)  # the entries never become script text
    assert set(sb.run_prelude(script).env) - BASE_ENV == array_env(kind)


def test_every_submit_and_render_parameter_is_fuzzed() -> None:
    """A new option on submit/render must be added to the tables above (or this fails)."""
    for kind, table in (("pull-image", PULL_VALUES), ("download-model", DOWNLOAD_VALUES)):
        for group in ("submit", "render"):
            context = click.Context(bfjobs_cli)
            command = bfjobs_cli.get_command(context, group).get_command(context, kind)  # made from the kind
            for param in command.params:
                if isinstance(param, click.Option) and (param.is_flag or param.name == "help"):
                    continue
                label = param.opts[0] if isinstance(param, click.Option) else param.name.upper()
                assert label in table, f"bfjobs {group} {kind} {label} is not covered by the hostile suite"


@pytest.mark.parametrize("args", [["-x"], ["-rf", DEFAULT_URI], ["--nosuch", DEFAULT_URI], [DEFAULT_URI, "--to"],
                                  [DEFAULT_URI, "--name"], [DEFAULT_URI, "extra"], ["--force=1", DEFAULT_URI]])
def test_option_looking_values_are_click_errors(sb: Sandbox, args: list[str]) -> None:
    """Without ``--`` a dash-leading value is an option: one line, exit 2, nothing submitted."""
    for group in ("render", "submit"):
        assert_refused(sb.invoke(group, "pull-image", *args), ["option", "argument", "requires", "value", "Got"])
    assert sb.submitted == []


# ----------------------------------------------------------------------------- profiles.cfg

PROFILE_VALUES = {
    "section": ["hpc", "A.b_c-1"],
    "schema": ["slurm", "local"],
    "type": ["slurm", "local"],
    "host": ["localhost", "login1.cluster.example.org", "[::1]", "10.0.0.1"],
    "user": ["root", "jdoe", "j.doe-2", "svc_bf@EXAMPLE"],
    "home_dir": ["{home}", "{home}/", "{home}/sub+1@x"],
    "cache_dir": ["{cache}", "{cache}/shared-1"],
    "default": ["true", "yes", "on", "1", "false", "no", "TRUE "],
}


def _goes_over_ssh(sb: Sandbox, host: str) -> bool:
    """An accepted host that is not this machine makes the profile remote: ``render`` then asks the
    cluster over ssh (a stand-in here, which fails as an unreachable host does). The host must
    reach ssh as exactly one word, after ``--``, and the failure be one line."""
    import tempfile

    from blackfish_jobs import config
    from blackfish_jobs.errors import BfjobsError

    try:
        remote = config.load_profile("hpc", sb.app).remote
    except BfjobsError:
        return False  # refused: attempt() checks that render and submit refuse it alike
    if not remote:
        return False
    outside = Path(tempfile.mkdtemp(prefix="bfjobs-ssh-stub-"))  # not in the sandbox's tree
    log = outside / "ssh-argv"
    stub = outside / "ssh-stub"
    stub.write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$@" > {shlex.quote(str(log))}\necho "ssh: unreachable" >&2\nexit 255\n'
    )
    stub.chmod(0o755)
    before = sb.tree()
    done = sb.invoke("render", "pull-image", "--", DEFAULT_URI, env={"BFJOBS_SSH": str(stub),
                                                                      "BFJOBS_SSH_CONTROL_DIR": str(outside / "cm")})
    assert done.exit_code == 1 and len(done.output.strip().splitlines()) == 1, done.output
    assert "profile 'hpc'" in done.output and "ssh: unreachable" in done.output, done.output
    argv = log.read_text().split("\n")
    shutil.rmtree(outside)
    assert argv[argv.index("--") + 1] == host, argv
    assert sb.tree() == before, "render of a remote profile wrote something here"
    return True


def blackfish_reading(path: Path) -> tuple[str, dict[str, str]] | None:
    """The section Blackfish would pick and its values, read as Blackfish reads the file (or None)."""
    parser = configparser.ConfigParser()
    try:
        with path.open(encoding="utf-8") as fh:
            parser.read_file(fh)
        sections = parser.sections()
        if parser.defaults() or not sections:
            return None
        chosen = next((s for s in sections if parser.get(s, "default", raw=True, fallback="").strip().lower()
                       in ("1", "true", "yes", "on")), "default" if "default" in sections else sections[0])
        return chosen, {k: v.strip() for k, v in parser.items(chosen)}
    except (configparser.Error, UnicodeDecodeError):
        return None


@pytest.mark.parametrize("key", list(PROFILE_VALUES))
@PER_PARAMETER
@given(data=st.data())
def test_profiles_cfg_fields(sb: Sandbox, key: str, data: st.DataObject) -> None:
    bases = [v.format(home=sb.home, cache=sb.cache) for v in PROFILE_VALUES[key]]
    if key in ("home_dir", "cache_dir"):  # valid means existing: bfjobs never creates a profile's directories
        for base in bases:
            Path(base).mkdir(parents=True, exist_ok=True)
    value = data.draw(hostile(bases), label=key)
    path = sb.app / "profiles.cfg"
    if key == "section":
        text = sb.profiles_text().replace("[hpc]", f"[{value}]", 1)
    elif key == "type":
        text = sb.profiles_text().replace("schema = slurm", f"type = {value}", 1)
    elif key == "default":  # two candidates: the first, and hpc with the fuzzed flag
        text = f"[first]\nschema = local\nhome_dir = {sb.home}\ncache_dir = {sb.cache}\n\n" + sb.profiles_text(
            default=value)
    else:
        text = sb.profiles_text(**{key: value})
    path.write_text(text, encoding="utf-8")
    reading = blackfish_reading(path)
    names = ["profiles.cfg", "[hpc]", key]
    if key == "host" and _goes_over_ssh(sb, value):
        return
    outcome = attempt(sb, "pull-image", ["--", DEFAULT_URI], names, submit=False)
    if value in bases:
        assert outcome is not None, f"a valid {key} was refused: {value!r}"
    if outcome is None:
        return
    assert reading is not None, "bfjobs accepted a profiles.cfg Blackfish cannot read"
    section, raw = reading
    script = outcome.script
    # trailing slashes dropped as bfjobs does ("//" is "/", now that an existing directory is valid)
    # (and a leading "//", which POSIX paths keep, is "/" too: bfjobs names folders from "/")
    home = Path(re.sub(r"^/+", "/", os.path.expanduser(raw["home_dir"]).rstrip("/") or "/"))
    cache = Path(re.sub(r"^/+", "/", os.path.expanduser(raw["cache_dir"]).rstrip("/") or "/"))
    check_script(script, home / "jobs" / "bfjobs" / render.PREVIEW_ID)
    assert f"# bfjobs {__version__}: pull-image job {render.PREVIEW_ID} (profile {section})" in script
    assert re.fullmatch(r"[A-Za-z0-9._-]+", section)
    prelude = sb.run_prelude(script)
    assert prelude.env["BFJOBS_PULL_TARGET"] == str(cache / "images" / "alpine_3.20.sif")
    if key in ("host", "user", "schema", "type", "default"):  # never in the script
        baseline = sb.baseline("pull-image").replace("(profile hpc)", f"(profile {section})")
        assert script == baseline
    if key == "default" and not any(ch in value for ch in "\n\r"):  # one line: the rule alone decides
        assert section == ("hpc" if value.strip().lower() in ("1", "true", "yes", "on") else "first")
    if key in ("host", "user"):
        assert re.fullmatch(r"[A-Za-z0-9_\[:][A-Za-z0-9._:@\[\]-]*", raw[key]), "an ssh option or shell word"


# ----------------------------------------------------------------------------- bfjobs.toml


def toml_value(value: Any) -> str:
    """TOML for a str/int/float/bool/list, escaping everything but printable ASCII."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return '"' + "".join(c if " " <= c <= "~" and c not in '"\\' else f"\\U{ord(c):08X}" for c in value) + '"'


def toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else toml_value(key)


TOML_SETTINGS: dict[str, tuple[str, list[Any]]] = {
    "partition": ("str", ["cpu", "datamover"]),
    "qos": ("str", ["xfer", "normal"]),
    "account": ("str", ["lab_1"]),
    "time": ("str", ["00:10:00", "90", "1-00:00:00"]),
    "mem": ("str", ["8G", "200M"]),
    "cpus_per_task": ("int", [1, 4, 1024, "2"]),
    "constraint": ("str", ["intel&ib", "[a*2|b]"]),
    "modules": ("list", ["apptainer/1.3.4", "anaconda3/2024.6", "x+y/2.0-rc_1"]),
    "setup": ("list", ["export A=1", "ulimit -n 4096", "echo '{{ 7*7 }}' {% raw %}"]),
    "apptainer": ("str", ["apptainer", "/usr/local/bin/apptainer", "singularity"]),
    "templates_dir": ("str", ["{templates}"]),
    "hf_endpoint": ("str", ["https://hf-mirror.example.org", "http://127.0.0.1:8080/hub/"]),
    "max_workers": ("int", [1, 8, 64]),
    "max_parallel": ("int", [1, 10, 10000]),
    "shared_group": ("str", [grp.getgrgid(os.getgid()).gr_name]),  # a group this user is in (others: refused)
    "remote_python": ("str", ["python3", "/opt/bfjobs/bin/python", "python3.11"]),  # a remote profile's only
    "remote_session": ("int", [0, 300, 86400, "60"]),  # a remote profile's only: not in any script
    "insecure_registries": ("list", ["127.0.0.1:5000", "mirror.internal", "registry.example.org:443"]),
}
SBATCH_FLAGS = {"partition": "partition", "qos": "qos", "account": "account", "time": "time", "mem": "mem",
                "cpus_per_task": "cpus-per-task", "constraint": "constraint"}


def test_every_bfjobs_toml_setting_is_fuzzed() -> None:
    """A new bfjobs.toml key must be added to TOML_SETTINGS (or this fails)."""
    assert set(TOML_SETTINGS) == config._SETTING_KEYS


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same type (TOML's true is not the integer 1)."""
    return type(a) is type(b) and a == b


def setting_values(kind: str, bases: list[Any]) -> st.SearchStrategy[Any]:
    text = hostile([str(b) for b in bases])
    if kind == "list":
        return st.one_of(st.lists(text, min_size=1, max_size=3), st.lists(st.sampled_from(bases), max_size=3), text,
                         st.integers())
    if kind == "int":
        return st.one_of(st.sampled_from(bases), st.integers(-5, 2000), text, st.booleans(),
                         st.floats(allow_nan=True), st.lists(st.integers(), max_size=2))
    return st.one_of(text, st.integers(), st.booleans(), st.lists(text, max_size=2))


@pytest.mark.parametrize("key", list(TOML_SETTINGS))
@PER_PARAMETER
@given(data=st.data())
def test_bfjobs_toml_fields(sb: Sandbox, key: str, data: st.DataObject) -> None:
    kind_of_value, raw_bases = TOML_SETTINGS[key]
    bases = [b.replace("{templates}", str(sb.templates)) if isinstance(b, str) else b for b in raw_bases]
    value = data.draw(setting_values(kind_of_value, bases), label=key)
    kind = "download-model" if key in ("hf_endpoint", "max_workers") else "pull-image"
    other = "pull-image" if kind == "download-model" else "download-model"
    table = data.draw(st.sampled_from(["defaults", f"defaults.{kind}", "profiles.hpc", f"profiles.hpc.{kind}",
                                       f"defaults.{other}"]), label="table")
    sb.write_settings(f"[{table}]\n{key} = {toml_value(value)}\n")
    applies = not table.endswith(other)
    outcome = attempt(sb, kind, ["--", DEFAULT_URI if kind == "pull-image" else DEFAULT_REPO],
                      ["bfjobs.toml", key], submit=False)
    if kind_of_value == "list":
        valid = isinstance(value, list) and all(any(_same(v, b) for b in bases) for v in value)
    else:
        valid = any(_same(value, b) for b in bases)
    if valid:
        assert outcome is not None, f"a valid {key} was refused: {value!r}"
    if outcome is None:
        return
    script = outcome.script
    if key == "setup":
        # Admin-written shell (README: "setup ... admins' code, not quoted"): never executed here,
        # but each line must arrive whole, on its own line, and only if it has no control character.
        assert isinstance(value, list) and all(isinstance(v, str) and 0 < len(v) <= 1024 for v in value)
        assert not any(invisible(ch) for line in value for ch in line)
        if not applies:
            assert script == sb.baseline(kind)
            return
        check_script(script, sb.preview_folder, admin_lines=value)
        lines = script.splitlines()
        start = lines.index(f"export BFJOBS_KIND={kind}") + 1  # setup follows the (here absent) module loads
        assert lines[start : start + len(value)] == value
        return
    check_script(script, sb.preview_folder)
    prelude = sb.run_prelude(script)
    assert set(prelude.env) - BASE_ENV - {"HF_ENDPOINT"} == (PULL_ENV if kind == "pull-image" else DOWNLOAD_ENV)
    if key == "modules":
        expected = [["module", "load", m] for m in value] if applies else []
        assert prelude.calls == expected
        return
    assert prelude.calls == []
    if key in SBATCH_FLAGS:
        got = sbatch_value(script, SBATCH_FLAGS[key])
        if applies:
            assert got == (str(int(value)) if key == "cpus_per_task" else value)
        else:
            assert got == sbatch_value(sb.baseline(kind), SBATCH_FLAGS[key])
    elif key == "hf_endpoint":
        assert prelude.env.get("HF_ENDPOINT") == (value.rstrip("/") if applies else None)
    else:  # apptainer, templates_dir, max_workers, max_parallel, shared_group, insecure_registries,
        # remote_python, remote_session: not in the script of the sandbox's requests (Docker Hub's
        # and library:// names)
        assert script == sb.baseline(kind)


@settings(PROPERTY, max_examples=2 * _EXAMPLES)  # most examples render and run a prelude: slower
@given(data=st.data())
def test_bfjobs_toml_names(sb: Sandbox, data: st.DataObject) -> None:
    """Hostile table and key names: unknown keys, kinds and profiles are refused; another profile's table
    (laptop) is not applied to hpc."""
    name = data.draw(hostile(["partition", "hpc", "pull-image"]), label="name")
    where = data.draw(st.sampled_from(["key", "profile", "kind", "top"]), label="where")
    text = {
        "key": f"[defaults]\n{toml_key(name)} = \"cpu\"\n",
        "profile": f"[profiles.{toml_key(name)}]\npartition = \"cpu\"\n",
        "kind": f"[profiles.hpc.{toml_key(name)}]\npartition = \"cpu\"\n",
        "top": f"[{toml_key(name)}]\npartition = \"cpu\"\n",
    }[where]
    sb.write_settings(text)
    outcome = attempt(sb, "pull-image", ["--", DEFAULT_URI], ["bfjobs.toml"], submit=False)
    if (where == "profile" and name in ("hpc", "laptop")) or (where == "key" and name == "partition"):
        assert outcome is not None, "a profile's table, or a known key, was refused"
    if outcome is None:
        return
    check_script(outcome.script, sb.preview_folder)
    sb.run_prelude(outcome.script)
    accepted_names = {
        "key": {"partition", "qos", "account", "constraint", "apptainer"},  # where "cpu" is a valid value
        "kind": {"pull-image", "download-model"},
        "top": {"defaults", "profiles"},
        "profile": {"hpc", "laptop"},  # the profiles in profiles.cfg
    }
    assert name in accepted_names[where], name
    applied = {"key": "partition", "profile": "hpc", "kind": "pull-image", "top": "defaults"}[where] == name
    assert sbatch_value(outcome.script, "partition") == ("cpu" if applied else None)


# ----------------------------------------------------------------------------- environment


@pytest.mark.parametrize("variable", ["HF_ENDPOINT", "BFJOBS_TEMPLATES_DIR"])
@PER_PARAMETER
@given(data=st.data())
def test_environment_settings(sb: Sandbox, variable: str, data: st.DataObject) -> None:
    bases = ["https://hf-mirror.example.org/"] if variable == "HF_ENDPOINT" else [str(sb.templates)]
    value = data.draw(hostile(bases), label=variable)
    assume("\x00" not in value)  # an environment cannot hold NUL
    kind = "download-model" if variable == "HF_ENDPOINT" else "pull-image"
    outcome = attempt(sb, kind, ["--", DEFAULT_REPO if kind == "download-model" else DEFAULT_URI],
                      [variable, "templates_dir"], env={variable: value}, submit=False)
    if value in bases:
        assert outcome is not None
    if outcome is None:
        return
    check_script(outcome.script, sb.preview_folder)
    prelude = sb.run_prelude(outcome.script)
    if variable == "HF_ENDPOINT":
        assert prelude.env.get("HF_ENDPOINT") == (value.rstrip("/") or None)
    else:
        assert outcome.script == sb.baseline(kind)


# ----------------------------------------------------------------------------- every other command


def other_parameters() -> list[tuple[tuple[str, ...], str]]:
    """(command path, parameter) for every command but submit/render, found in the CLI itself."""
    found: list[tuple[tuple[str, ...], str]] = []

    def walk(command: click.Command, path: tuple[str, ...]) -> None:
        if isinstance(command, click.Group):  # asked as Click asks, so lazily loaded commands count
            ctx = click.Context(command)
            for name in command.list_commands(ctx):
                if path or name not in ("submit", "render"):
                    sub = command.get_command(ctx, name)
                    assert sub is not None, name
                    walk(sub, (*path, name))
            return
        for param in command.params:
            if not (isinstance(param, click.Option) and (param.is_flag or param.name == "help")):
                found.append((path, param.name))

    walk(bfjobs_cli, ())
    return found


def test_the_fuzz_reaches_every_other_command():
    """An empty parameter set would skip the fuzz below silently (as lazy loading once made it)."""
    assert {path[0] for path, _ in other_parameters()} >= {"status", "list", "wait", "cancel", "logs", "verify"}


@pytest.mark.parametrize(("path", "target"), other_parameters(), ids=str)
@PER_PARAMETER
@given(data=st.data())
def test_every_other_command_and_option(sb: Sandbox, path: tuple[str, ...], target: str, data: st.DataObject) -> None:
    """status, list, wait, cancel, logs, verify, ... : refused in one line, or a plain answer."""
    command: click.Command = bfjobs_cli
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    options: list[str] = []
    arguments: list[str] = []
    names: list[str] = ["job"]
    for param in command.params:
        if param.name != target:
            if isinstance(param, click.Argument) and param.required:
                arguments.append("0123456789ab")  # well formed, not in the (empty) database
            continue
        values = data.draw(st.lists(hostile(["0123456789ab", "1", "hpc", "completed", "12h", "30"]), min_size=1,
                                    max_size=1 if param.nargs == 1 or isinstance(param, click.Option) else 3))
        if target == "limit":  # see test_list_limit_beyond_sqlite_is_refused
            assume(not any(_huge_int(v) for v in values))
        if path == ("verify",):
            # verify reads any absolute path it is given (see the report): keep it inside the sandbox
            values = [str(sb.cache) + v if v.startswith("/") else v for v in values]
            assume(not any(".." in v for v in values))
        if isinstance(param, click.Option):
            options += [param.opts[0], values[0]]
            names += [*param.opts, param.name]
        else:
            arguments += values
            names += [param.name, param.human_readable_name, "PATH", "not a job id"]
    before = sb.tree()
    result = sb.invoke(*path, *options, "--", *arguments)
    assert "Traceback" not in result.output and "internal error" not in result.stderr, result.stderr
    if result.exit_code == 2:
        assert_refused(result, names)
    else:
        assert result.exit_code in (0, 1), (result.exit_code, result.stderr)
        for line in result.stderr.splitlines():
            assert line.startswith("bfjobs: "), result.stderr
        if result.exit_code == 1:
            assert len(result.stderr.splitlines()) == 1
    after = sb.tree()
    assert {k for k in after if after[k] != before.get(k)} == set(), "a query command wrote something"


def _huge_int(text: str) -> bool:
    """What Click's int conversion turns into a number SQLite cannot store."""
    try:
        return abs(int(text)) >= 2**63
    except ValueError:
        return False


@PROPERTY
@given(value=hostile(["sqlite:///x.db", "postgresql://u@h/db"]))
def test_db_option_that_is_no_url(sb: Sandbox, value: str) -> None:
    assume("://" not in value)
    assume(value != "")  # an empty --db means the default database, like an empty BFJOBS_DB_URL
    before = sb.tree()
    assert_refused(sb.invoke("--db", value, "list"), ["--db"])
    assert sb.tree() == before


# Once defects (found by this suite, since fixed): each case must be a one-line refusal.
DB_DEFECTS = [
    pytest.param("sqlite:///~nosuchuser/x.db", id="tilde-unknown-user"),
    pytest.param("sqlite:///{root}/db/a\x00b", id="nul-in-path"),
    pytest.param("sqlite:///{root}/db/a?timeout=abc", id="bad-driver-argument"),
    pytest.param("sqlite:///{root}/db/a?foo=1", id="unknown-query-argument-ignored"),
    pytest.param("sqlite:///{root}/db/a%2Fb/c", id="percent-2F-becomes-a-directory"),
    pytest.param("sqlite:///{root}/db/line\nbreak", id="newline-in-db-file-name"),
    pytest.param("nosuchdialect://x", id="unknown-dialect"),
    pytest.param("postgresql://u@127.0.0.1:1/db", id="driver-not-installed"),
]


@pytest.mark.parametrize("url", DB_DEFECTS)
def test_db_option_defects(sb: Sandbox, url: str) -> None:
    (sb.root / "db").mkdir(exist_ok=True)
    assert_refused(sb.invoke("--db", url.format(root=sb.root), "list"), ["--db"])
    assert os.listdir(sb.root / "db") == []


def test_list_limit_beyond_sqlite_is_refused(sb: Sandbox) -> None:
    assert_refused(sb.invoke("list", "--limit", str(2**63)), ["--limit"])


def test_refused_site_template_leaves_no_job_folder(sb: Sandbox) -> None:
    (sb.templates / "pull-image.sh.j2").write_text("{% if %}\n")
    sb.write_settings(f'[defaults]\ntemplates_dir = "{sb.templates}"\n')
    before = sb.tree()
    assert_refused(sb.invoke("submit", "pull-image", DEFAULT_URI), ["template"])
    assert sb.tree() == before


@pytest.mark.parametrize("value", ["nan", "-nan", "NaN"])
def test_wait_timeout_nan_is_refused(sb: Sandbox, value: str) -> None:
    assert_refused(sb.invoke("wait", "0123456789ab", "--timeout", value), ["--timeout"])


# ----------------------------------------------------------------------------- deterministic edges


def test_unexpandable_home_is_one_line(sb: Sandbox) -> None:
    """``~nosuchuser`` used to escape as a RuntimeError from expanduser (exit 1, 'internal error')."""
    for key in ("home_dir", "cache_dir"):
        sb.write_profiles(sb.profiles_text(**{key: "~nosuchuser-bfjobs/x"}))
        assert_refused(sb.invoke("render", "pull-image", DEFAULT_URI), [key])
    sb.write_profiles()
    sb.write_settings('[defaults]\ntemplates_dir = "~nosuchuser-bfjobs/t"\n')
    assert_refused(sb.invoke("render", "pull-image", DEFAULT_URI), ["templates_dir"])


def test_long_path_component_is_one_line(sb: Sandbox) -> None:
    """A 256-character component used to pass validation and fail at stat() (ENAMETOOLONG)."""
    sb.write_profiles(sb.profiles_text(home_dir=str(sb.root / ("h" * 256))))
    assert_refused(sb.invoke("submit", "pull-image", DEFAULT_URI, "--to", "home"), ["home_dir"])


def test_profile_names_in_messages_are_escaped(sb: Sandbox) -> None:
    """A section name with terminal escapes is listed escaped, not raw, when a profile is not found."""
    sb.write_profiles(sb.profiles_text() + "\n[\x1b]0;owned\x07]\nschema = local\n")
    line = assert_refused(sb.invoke("render", "pull-image", DEFAULT_URI, "--profile", "ghost"), ["ghost"])
    assert "\\x1b" in line


def test_longest_accepted_names_fit_on_the_node() -> None:
    """The node prefixes names (partial files, locks, staging folders): 255 characters must still do."""
    tag = "4294967295-" + "f" * 8  # the longest job tag: a 10-digit Slurm id
    name = image.check_sif_name("x" * 196 + ".sif")
    with pytest.raises(BadInput):
        image.check_sif_name("x" * 197 + ".sif")
    from blackfish_jobs import layout

    assert len(layout.partial_name(name, tag)) <= 255
    assert len(f".bfjobs-lock-{name}") <= 255
    repo_id = model.check_repo_id("n" * 63 + "/" + "m" * 96)
    with pytest.raises(BadInput, match="too long"):
        model.check_repo_id("n" * 64 + "/" + "m" * 96)
    assert len(f".bfjobs-staging-{layout.repo_folder(repo_id)}@{'0' * 40}-{tag}") <= 255


# ============================================================================= the real cluster

#: ``touch <canary>`` in every form, for argv, environment and files alike.
E2E_PAYLOADS: tuple[str, ...] = (
    ";touch {c}", "$(touch {c})", "`touch {c}`", "\ntouch {c}", "' ; touch {c} ; '", '" ; touch {c} ; "',
    "&&touch {c}", "|touch {c}", "\rtouch {c}", " ; touch {c} #", ";touch${{IFS}}{c}", "\n\ttouch {c}",
)
DEMO_REPO = "bfjobs-test/tiny-model"


def test_e2e_payloads_would_run_if_pasted_into_a_script(tmp_path: Path) -> None:
    """Each payload creates its canary when pasted raw into an unquoted, single- or double-quoted
    word of a script, so "the canary never appeared" below means something."""
    for template in E2E_PAYLOADS:
        if "\r" in template:
            continue  # a bare CR only ends a line for sbatch's header parser and for eyes, not for bash
        canary = tmp_path / "canary"
        payload = template.format(c=canary)
        for line in (f"X=v{payload}", f"X='v{payload}'", f'X="v{payload}"'):
            subprocess.run(["bash", "-c", line], capture_output=True, cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
        assert canary.exists(), template
        canary.unlink()


@dataclass
class Case:
    """One submission: its command line, profiles.cfg sections, bfjobs.toml tables and environment."""

    kind: str
    positional: str
    options: list[str]
    profiles: dict[str, dict[str, str]]
    settings: dict[str, dict[str, Any]]
    env: dict[str, str] = field(default_factory=dict)
    entries: list[str] | None = None  # a --from-file list (written as <app>/list.txt)
    list_path: str | None = None  # --from-file given verbatim

    def _args(self) -> list[str]:
        if self.list_path is not None:
            return [*self.options, "--from-file", self.list_path]
        return [*self.options, "--", self.positional]

    def render_argv(self) -> list[str]:
        return ["render", self.kind, *self._args()]

    def submit_argv(self) -> list[str]:
        return ["submit", self.kind, "--wait", "--json", *self._args()]

    def write(self, app: Path) -> None:
        app.mkdir(parents=True, exist_ok=True)
        if self.entries is not None:
            (app / "list.txt").write_text("\n".join(self.entries) + "\n", encoding="utf-8")
            self.list_path = str(app / "list.txt")
        (app / "profiles.cfg").write_text(profiles_cfg(self.profiles), encoding="utf-8")
        toml = "".join(
            f"[{table}]\n" + "".join(f"{toml_key(k)} = {toml_value(v)}\n" for k, v in keys.items())
            for table, keys in self.settings.items()
        )
        (app / "bfjobs.toml").write_text(toml, encoding="utf-8")


Edit = Callable[[Case, str], None]


def input_paths() -> dict[str, Edit]:
    """Every place a value enters bfjobs, as an edit of a Case."""

    def option(flag: str) -> Edit:
        return lambda case, v: case.options.extend([flag, v])

    def download(edit: Edit) -> Edit:
        def apply(case: Case, v: str) -> None:
            case.kind, case.positional = "download-model", DEMO_REPO
            edit(case, v)

        return apply

    def positional(case: Case, v: str) -> None:
        case.positional = v

    def list_entry(case: Case, v: str) -> None:
        case.entries = [case.positional, v]

    def list_path(case: Case, v: str) -> None:
        case.list_path = v

    def max_parallel(case: Case, v: str) -> None:
        case.entries = [case.positional, case.positional + "-2"]
        case.options += ["--max-parallel", v]

    def profile(key: str) -> Edit:
        return lambda case, v: case.profiles["hpc"].__setitem__(key, v)

    def section(case: Case, v: str) -> None:
        case.profiles = {(v if k == "hpc" else k): keys for k, keys in case.profiles.items()}

    def ignored_type(case: Case, v: str) -> None:
        case.profiles["hpc"]["type"] = v  # 'schema' wins: accepted, and never used

    def key_name(case: Case, v: str) -> None:
        case.profiles["hpc"][v] = "1"  # keys Blackfish does not know are ignored

    def setting(key: str, wrap: Callable[[str], Any] = lambda v: v) -> Edit:
        return lambda case, v: case.settings["defaults"].__setitem__(key, wrap(v))

    def other_profile_table(case: Case, v: str) -> None:
        case.settings[f"profiles.{toml_key(v)}"] = {"partition": "cpu"}  # a profile not in use: ignored

    def setting_name(case: Case, v: str) -> None:
        case.settings["defaults"][v] = "cpu"

    def environment(var: str) -> Edit:
        def apply(case: Case, v: str) -> None:
            case.settings["defaults"].pop("hf_endpoint", None)  # bfjobs.toml would win over HF_ENDPOINT
            case.env[var] = v

        return apply

    return {
        "URI": positional, "--name": option("--name"), "--profile": option("--profile"), "--to": option("--to"),
        "--from-file entry": list_entry, "--from-file": list_path, "--max-parallel": max_parallel,
        **{flag: option(flag) for flag in SLURM_VALUES},
        "REPO_ID": download(positional), "--revision": download(option("--revision")),
        "--include": download(option("--include")), "--exclude": download(option("--exclude")),
        **{f"profiles.cfg {key}": profile(key) for key in ("schema", "host", "user", "home_dir", "cache_dir",
                                                            "default")},
        "profiles.cfg section": section, "profiles.cfg type": ignored_type, "profiles.cfg key name": key_name,
        **{f"bfjobs.toml {key}": setting(key) for key in ("partition", "qos", "account", "time", "mem",
                                                          "cpus_per_task", "constraint", "apptainer",
                                                          "templates_dir", "hf_endpoint", "max_workers")},
        "bfjobs.toml modules": setting("modules", lambda v: [v]),
        # setup lines are admins' shell by design: only what must never pass (a line break, NUL) is sent
        "bfjobs.toml setup": setting("setup", lambda v: [v.replace("touch", "\x00touch", 1) if "\n" not in v else v]),
        "bfjobs.toml profile table": other_profile_table, "bfjobs.toml key name": setting_name,
        "HF_ENDPOINT": environment("HF_ENDPOINT"), "BFJOBS_TEMPLATES_DIR": environment("BFJOBS_TEMPLATES_DIR"),
    }


def refusal_names(label: str) -> list[str]:
    """What a refusal of a value sent through ``label`` may name."""
    words = label.split()
    if words[0] == "profiles.cfg":
        return ["profiles.cfg", "[hpc]", "profile", words[-1]]
    if words[0] == "bfjobs.toml":
        return ["bfjobs.toml", words[-1]]
    if label.startswith("--from-file"):
        return ["--from-file", "line "]
    return [label, "templates_dir"] if label == "BFJOBS_TEMPLATES_DIR" else [label]


@dataclass
class Batch:
    """What the hostile batch did, for the canary and the confinement tests to judge."""

    root: Path
    marker: str
    home: Path
    cache: Path
    control: Path
    refusals: list[tuple[str, str, Result, Result]]
    jobs: list[tuple[str, dict[str, Any] | None, str]]  # (what, the JSON `submit --wait --json` printed, stderr)
    parent_before: set[str]
    parent_after: set[str]
    tmp_before: set[str]
    tmp_after: set[str]
    module_calls: list[list[str]]


@pytest.fixture(scope="module")
def hostile_batch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Batch]:
    """Send every payload through every path (``submit --wait``); run what is accepted on the cluster."""
    from support.hub import HubServer, make_demo_repo

    marker = uuid.uuid4().hex[:10]
    tmp_before = set(os.listdir("/tmp"))
    root = tmp_path_factory.mktemp(f"hostile-{marker}")
    parent_before = set(os.listdir(root.parent))  # pytest's own entries (e.g. its "...current" link) included
    home, cache = root / "home+1@x-y", root / "cache.d_2"
    run, userhome, tmp, out, stubs, templates, apps = (root / n for n in
                                                       ("run", "userhome", "tmp", "out", "stubs", "templates", "apps"))
    for d in (home, cache, run, userhome, tmp, out, stubs, templates, apps):
        d.mkdir()
        d.chmod(0o755)
    (stubs / "module").write_text(STUB)  # only `module`: apptainer is tests/bin's honest stand-in
    (stubs / "module").chmod(0o755)
    canary = root / f"canary-{marker}"
    control = out / f"control-{marker}"
    long_repo = ("N9_" * 21)[:62] + "z/" + ("m.v-2_" * 16)[:95] + "z"  # 160 characters: the longest accepted
    long_name = ("A+b-c_1." * 30)[:196] + ".sif"  # 200 characters: the longest accepted
    env_overrides = {"HOME": str(userhome), "TMPDIR": str(tmp), "BFJOBS_TEST_CALLS": str(out / "calls"),
                     "PATH": f"{stubs}{os.pathsep}{STUB_BIN}{os.pathsep}{os.environ['PATH']}",
                     "FAKE_APPTAINER_LOG": str(out / "apptainer.jsonl"), "BFJOBS_REGISTRY_OFFLINE": "1"}
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("BFJOBS_", "HF_", "BLACKFISH_"))}
    base_env.update(env_overrides)

    with HubServer([make_demo_repo(), make_demo_repo(model_size=4096, repo_id=long_repo)]) as hub:

        def fresh(n: int) -> Case:
            return Case(
                "pull-image", f"docker://alpine:hostile-{n}", [],
                {"hpc": {"schema": "slurm", "host": "localhost", "user": "root", "home_dir": str(home),
                         "cache_dir": str(cache)},
                 "laptop": {"schema": "local", "home_dir": str(home), "cache_dir": str(cache)}},
                {"defaults": {"time": "00:10:00", "mem": "200M", "cpus_per_task": 1, "hf_endpoint": hub.url}},
            )

        bases = {"URI": "docker://alpine:hostile", "--name": "x.sif", "--profile": "hpc", "--to": "home",
                 "REPO_ID": DEMO_REPO, "--revision": "v1.0", "--include": "*.json", "--exclude": "*.bin",
                 "profiles.cfg home_dir": str(home), "profiles.cfg cache_dir": str(cache),
                 "profiles.cfg section": "hpc", "profiles.cfg schema": "slurm", "profiles.cfg host": "localhost",
                 "profiles.cfg user": "root", "bfjobs.toml templates_dir": str(templates),
                 "bfjobs.toml hf_endpoint": hub.url, "HF_ENDPOINT": hub.url, "BFJOBS_TEMPLATES_DIR": str(templates),
                 "bfjobs.toml apptainer": "apptainer", "bfjobs.toml modules": "apptainer/1.3.4",
                 **{flag: values[0] for flag, values in SLURM_VALUES.items()},
                 **{f"bfjobs.toml {k}": v for k, v in (("partition", "cpu"), ("qos", "normal"), ("account", "lab"),
                                                       ("time", "10"), ("mem", "200M"), ("cpus_per_task", "1"),
                                                       ("constraint", "x"), ("max_workers", "2"))}}
        refusals: list[tuple[str, str, Result, Result]] = []
        accepted: dict[str, list[tuple[str, Edit]]] = {}
        bulk = apps / "bulk"
        with pytest.MonkeyPatch.context() as mp:
            for var in [k for k in os.environ if k.startswith(("BFJOBS_", "HF_"))]:
                mp.delenv(var)
            for k, v in env_overrides.items():
                mp.setenv(k, v)
            mp.setenv("BLACKFISH_HOME_DIR", str(bulk))
            mp.chdir(run)
            for label, edit in input_paths().items():
                for template in E2E_PAYLOADS:
                    payload = template.format(c=canary)
                    for value in (payload, bases[label] + payload) if label in bases else (payload,):
                        case = fresh(0)
                        edit(case, value)
                        case.write(bulk)
                        rendered = CliRunner().invoke(bfjobs_cli, case.render_argv(), env=case.env,
                                                      catch_exceptions=False)
                        if rendered.exit_code == 0:  # accepted: it runs as a real job below
                            accepted.setdefault(value, []).append((label, edit))
                            continue
                        submitted = CliRunner().invoke(bfjobs_cli, case.submit_argv(), env=case.env,
                                                       catch_exceptions=False)
                        refusals.append((label, value, rendered, submitted))

        # The jobs: each accepted payload value (through all its accepting paths at once), the
        # edgiest valid values through every field, the longest repo id, and a local-profile job.
        runs: list[tuple[str, Case]] = []
        for n, (value, edits) in enumerate(sorted(accepted.items()), start=1):
            case = fresh(n)
            for _label, edit in edits:
                edit(case, value)
            runs.append((f"payload {value!r} via {', '.join(label for label, _ in edits)}", case))
        edgy = fresh(1000)
        edgy.positional = "docker://localhost:5000/a-b/c_d:v1.0-rc_1"
        edgy.options = ["--name", long_name, "--partition", "cpu", "--time", "10", "--mem", "200M",
                        "--cpus-per-task", "01"]
        edgy.profiles["hpc"].update(host="[::1]", user="j.doe-2", default="yes")
        edgy.settings["defaults.pull-image"] = {
            "modules": ["apptainer/1.3.4", "x+y/2.0-rc_1"],
            # setup is admins' shell by design (README), so a valid line runs: the positive control
            # showing a payload that reached the prelude would be seen. Jinja text in it stays literal.
            "setup": [f"touch {control}", f"printf '%s' '{{{{ 7*7 }}}}' > {out}/jinja"],
            "apptainer": str(STUB_BIN / "apptainer"),
            "templates_dir": str(templates),
        }
        runs.append(("edgy pull", edgy))
        model = fresh(1001)
        model.kind, model.positional = "download-model", long_repo
        model.options = ["--revision", "v1.0", "--include", "*.json", "--include", "sub/*", "--exclude",
                         "tokenizer.json"]
        model.settings["defaults"]["max_workers"] = 2
        runs.append(("longest repo id download", model))
        local = fresh(1002)
        local.positional = "oras://ghcr.io/org/image:1.0-e2e"
        local.options = ["--profile", "laptop", "--to", "home"]
        runs.append(("local profile pull", local))

        def execute(item: tuple[int, tuple[str, Case]]) -> tuple[str, dict[str, Any] | None, str]:
            n, (what, case) = item
            app = apps / f"job-{n}"
            case.write(app)
            proc = subprocess.run(
                [sys.executable, "-m", "blackfish_jobs", *case.submit_argv()],
                env={**base_env, **case.env, "BLACKFISH_HOME_DIR": str(app)}, cwd=run, capture_output=True,
                text=True, timeout=300,
            )
            try:
                return what, json.loads(proc.stdout)["jobs"][0], proc.stderr
            except (ValueError, KeyError, IndexError):
                return what, None, f"exit {proc.returncode}: {proc.stderr}"

        with ThreadPoolExecutor(max_workers=8) as pool:
            jobs = list(pool.map(execute, enumerate(runs)))

    calls = out / "calls"
    records = calls.read_bytes().decode().split("\x1e") if calls.exists() else []
    yield Batch(root, marker, home, cache, control, refusals, jobs, parent_before,
                set(os.listdir(root.parent)), tmp_before, set(os.listdir("/tmp")),
                [r.split("\0")[:-1] for r in records if r])


@pytest.mark.slurm
def test_payloads_never_run_on_the_cluster(hostile_batch: Batch) -> None:
    """Every payload through every path: refused in one line, or run as a job that does not run it.

    ``setup`` lines in bfjobs.toml are the one exception by design: they are admins' shell
    (README: "admins' code, not quoted"), so a valid one runs in the job. Only what must never
    pass is sent through them (a line break, CR or NUL: refused), and the edgy job's valid setup
    line is the positive control: it does create its file, so a payload that reached the prelude
    would have been seen.
    """
    batch = hostile_batch
    assert len(batch.refusals) > 500
    for label, value, rendered, submitted in batch.refusals:
        names = refusal_names(label)
        line = assert_refused(rendered, names)
        assert assert_refused(submitted, names) == line, (label, value)
    # accepted payload values reach only fields bfjobs never renders (the default flag, an ignored
    # 'type', unknown keys, another profile's table): each ran as a real job and completed
    for what, data, err in batch.jobs:
        assert data is not None and data.get("state") == "COMPLETED", (what, data, err)
        assert data["backend"] == ("local" if what == "local profile pull" else "slurm"), what
    payload_jobs = [what for what, _, _ in batch.jobs if what.startswith("payload")]
    assert len(payload_jobs) >= len(E2E_PAYLOADS), payload_jobs  # the accepted paths really were exercised
    edgy = next(data for what, data, _ in batch.jobs if what == "edgy pull")
    assert edgy is not None and len(Path(edgy["target"]).name) == 200 and os.path.isfile(edgy["target"])
    model = next(data for what, data, _ in batch.jobs if what == "longest repo id download")
    assert model is not None and os.path.isdir(model["result"]["snapshot"])
    # positive controls: a valid setup line did run in the job, its Jinja text untouched, and
    # `module` got each module as one word
    assert batch.control.exists()
    assert (batch.control.parent / "jinja").read_text() == "{{ 7*7 }}"
    assert batch.module_calls == [["module", "load", "apptainer/1.3.4"], ["module", "load", "x+y/2.0-rc_1"]]
    # the canary: nowhere on this machine's filesystem
    found = subprocess.run(["find", "/", "-xdev", "-name", f"canary-{batch.marker}*"], capture_output=True, text=True)
    assert found.stdout == "", found.stdout


@pytest.mark.slurm
def test_nothing_written_outside_the_allowed_places(hostile_batch: Batch) -> None:
    """<home_dir>, <cache_dir>/images, <cache_dir>/models, <cache_dir>/.bfjobs (records of published
    artefacts), job folders in home_dir, the DB file."""
    batch = hostile_batch
    root = batch.root
    allowed = (batch.home, batch.cache / "images", batch.cache / "models", batch.cache / ".bfjobs")
    stray = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here in (root / "out", root / "stubs", root / "templates"):  # the test's own files
            dirnames[:] = []
            continue
        empty_dirs = [d for d in dirnames if not os.listdir(here / d)]
        if here == root:  # the test made these: checked below, or test-owned
            empty_dirs = [d for d in empty_dirs if d not in ("run", "userhome", "tmp", "templates", "apps")]
        for name in filenames + empty_dirs:
            path = here / name
            if path.parent.parent == root / "apps" and name in ("profiles.cfg", "bfjobs.toml", "list.txt", *DB_FILES):
                continue  # the test's configuration, and the DB file
            if not any(path.is_relative_to(a) for a in allowed):
                stray.append(str(path.relative_to(root)))
    assert stray == []
    for name in ("run", "userhome", "tmp"):  # cwd, $HOME and $TMPDIR of bfjobs and of its jobs
        assert os.listdir(root / name) == [], name
    assert batch.parent_after == batch.parent_before  # nothing beside the test's root
    slurm_ids = {str(d["slurm_job_id"]) for _, d, _ in batch.jobs if d and d.get("slurm_job_id")}
    new_in_tmp = batch.tmp_after - batch.tmp_before
    leaked = [n for n in new_in_tmp if batch.marker in n or any(f"-{j}-" in n for j in slurm_ids)]
    assert leaked == []
    # the jobs did publish where they should (so the checks above looked at real work)
    assert any((batch.cache / "images").iterdir())
    assert any((batch.home / "models").iterdir())
    assert len(list((batch.home / "jobs" / "bfjobs").iterdir())) >= len(batch.jobs) - 1  # the local job too
