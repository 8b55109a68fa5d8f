"""The everyday commands' fast paths: no SQLAlchemy on an up-to-date SQLite database, and
``bfjobs status`` starting its one ``sacct`` call before the CLI is imported (entry.py).

Behaviour only; how fast they are is measured by benchmarks/run.py, never asserted here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from support.rows import insert_rows, job_row
from support.site import json_jobs

from blackfish_jobs import entry, tracking
from blackfish_jobs.backends import Backends, slurmcmd
from blackfish_jobs.backends.slurm import SlurmBackend
from blackfish_jobs.store import Database, JobRow, utcnow

# Runs the console script's entry in a fresh interpreter, then says which heavy modules it loaded.
_RUN = """
import json, sys
from blackfish_jobs.entry import main
heavy = ("sqlalchemy", "alembic", "submitit", "huggingface_hub", "jinja2")
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print("HEAVY " + json.dumps([m for m in heavy if m in sys.modules]), file=sys.stderr)
"""

# A stand-in sacct: logs its argv, answers PENDING (held) for every id it is asked about.
_FAKE_SACCT = """#!/bin/bash
printf '%s\\n' "$*" >> {log}
ids=""
while [ $# -gt 0 ]; do [ "$1" = -j ] && ids="$2"; shift; done
for id in ${{ids//,/ }}; do echo "$id|$id|PENDING|None assigned|$(date +%s)|Unknown|0:0|JobHeldUser"; done
"""


@pytest.fixture
def fake_sacct(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATH with the stand-in sacct; returns its call log (one line per call)."""
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    log = tmp_path / "sacct-calls.log"
    script = bindir / "sacct"
    script.write_text(_FAKE_SACCT.format(log=log))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return log


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def add_jobs(db: Database, count: int, *, start: int = 0, profile: str = "slurm") -> list[JobRow]:
    now = utcnow()
    return insert_rows(db, [
        job_row(start + i, profile=profile, native_id=str(9000 + start + i), folder=f"/nowhere/{i}",
                target=f"/cache/img{start + i}.sif", request={"uri": f"docker://img:{i}"}, user="me",
                submitted_at=now - timedelta(seconds=30 * (count - i)), updated_at=now)
        for i in range(count)
    ])


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["status"], (None, None)),
        (["status", "--json"], (None, None)),
        (["--db", "sqlite:////x.db", "status", "--profile", "della", "--json"], ("sqlite:////x.db", "della")),
        (["--db=sqlite:////x.db", "status", "--profile=della"], ("sqlite:////x.db", "della")),
        (["status", "0123456789ab"], None),  # job ids: resolved by the CLI, no head start
        (["status", "--help"], None),
        (["status", "--json", "--json"], None),
        (["status", "--profile"], None),
        (["status", "--profile", "--json"], None),
        (["--db", "status"], None),
        (["--verbose", "status"], None),
        (["list"], None),
        (["wait", "status"], None),
        ([], None),
    ],
)
def test_only_a_plain_status_gets_a_head_start(args, expected):
    assert entry.plain_status(args) == expected


def prestarted(argv: list[str]) -> tuple[slurmcmd.Prestarted, SlurmBackend]:
    """``argv`` started early, and a Slurm backend holding it (as entry.py hands it over)."""
    early = slurmcmd.prestart(argv)
    assert early is not None
    return early, SlurmBackend(prestarted=early)


def test_a_prestarted_call_is_collected_once_and_fails_like_a_run():
    ok = [sys.executable, "-c", "print('hello')"]
    early, backend = prestarted(ok)
    assert backend.run(ok) == "hello\n"
    assert early.used and backend.prestarted is None  # collected once: the next call runs again
    bad = [sys.executable, "-c", "import sys; sys.stderr.write('boom'); sys.exit(3)"]
    _early, backend = prestarted(bad)
    with pytest.raises(subprocess.CalledProcessError) as failed:
        backend.run(bad)
    assert failed.value.returncode == 3 and failed.value.stderr == "boom"
    assert slurmcmd.prestart(["/nonexistent/sacct", "-X"]) is None  # cannot start: left to run() to report
    with pytest.raises(FileNotFoundError):
        SlurmBackend().run(["/nonexistent/sacct", "-X"])


def test_a_prestarted_call_with_more_output_than_a_pipe_holds_is_read_whole():
    """Both pipes are drained together: a client filling stderr while stdout waits cannot hang."""
    chatty = [sys.executable, "-c", "import sys; sys.stderr.write('e' * 300000); print('x' * 500000 + '\\xff')"]
    _early, backend = prestarted(chatty)
    assert backend.run(chatty) == "x" * 500000 + "\xff\n"
    raw = [sys.executable, "-c", "import sys; sys.stdout.buffer.write(b'ok\\xff\\n')"]
    _early, backend = prestarted(raw)
    assert backend.run(raw) == "ok\ufffd\n"  # undecodable bytes from Slurm never crash a refresh
    assert slurmcmd.run(raw) == "ok\ufffd\n"  # (the same on the ordinary path)


def test_a_prestarted_call_gets_only_its_pipes_and_standard_descriptors():
    """As subprocess' close_fds: a descriptor the caller left inheritable does not reach sacct."""
    read_end, write_end = os.pipe()
    os.set_inheritable(write_end, True)
    try:
        lister = [sys.executable, "-c", "import os; print(sorted(int(n) for n in os.listdir('/proc/self/fd')))"]
        _early, backend = prestarted(lister)
        seen = json.loads(backend.run(lister))
        assert write_end not in seen and seen[:3] == [0, 1, 2], seen
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_prestarted_call_that_hangs_is_killed_at_the_timeout():
    sleeper = [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"]
    early, _backend = prestarted(sleeper)
    with pytest.raises(subprocess.TimeoutExpired) as late:
        early.collect(timeout=0.5)
    assert late.value.output == b"started\n" and early.process.returncode == -9


def test_an_unused_prestarted_call_is_killed_at_exit():
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    early, _backend = prestarted(sleeper)
    backends = Backends(prestarted=early)
    backends.close()
    assert early.process.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.kill(early.process.pid, 0)  # killed and reaped: no zombie left


def test_status_head_start_is_its_one_sacct_call(tmp_path, fake_sacct):
    """The call entry.py starts is exactly the one the tracker asks for: one sacct in all."""
    url = f"sqlite:///{tmp_path / 'app.sqlite'}"
    db = Database(url)
    rows = add_jobs(db, 30)
    add_jobs(db, 3, start=100, profile="other")
    early = entry._prestart_sacct(entry._read_live(url, "slurm"))
    assert early is not None
    fresh = [r for r in db.unfinished() if r.profile == "slurm"]  # what `status --profile slurm` reads
    report = tracking.refresh_report(db, fresh, Backends(prestarted=early))
    assert early.used and report.problems == []
    [call] = calls(fake_sacct)
    assert call.split(" -j ")[1].split(",") == [r.native_id for r in rows]
    assert {(r.state, r.reason) for r in report.rows} == {("PENDING", "JobHeldUser")}
    assert {r.reason for r in db.unfinished() if r.profile == "slurm"} == {"JobHeldUser"}


def test_status_whose_jobs_changed_meanwhile_asks_again(tmp_path, fake_sacct):
    """A job recorded between the head start and the CLI's read: the CLI's own call answers."""
    url = f"sqlite:///{tmp_path / 'app.sqlite'}"
    db = Database(url)
    add_jobs(db, 5)
    early = entry._prestart_sacct(entry._read_live(url, None))
    assert early is not None
    add_jobs(db, 1, start=50)
    backends = Backends(prestarted=early)
    report = tracking.refresh_report(db, db.unfinished(), backends)
    assert len(report.rows) == 6 and {r.reason for r in report.rows} == {"JobHeldUser"}
    assert not early.used  # the stale call, killed at exit
    backends.close()
    assert early.process.returncode is not None
    assert len(calls(fake_sacct)) == 2


def _survey_request(rows: list[JobRow]) -> dict:
    from blackfish_jobs.backends.protocol import PROTOCOL
    from blackfish_jobs.backends.remote import encode_rows

    return json.loads(json.dumps({"protocol": PROTOCOL, "op": "survey", "args": {"rows": encode_rows(rows)}}))


def test_a_cluster_survey_starts_its_one_sacct_before_its_imports(tmp_path, fake_sacct):
    """The agent (a remote profile's cluster side) starts the survey's sacct from the request alone;
    the survey collects it: one call in all, the same answer."""
    from blackfish_jobs import agent
    from blackfish_jobs.api import cluster

    now = utcnow()
    rows = [job_row(i, backend="remote", native_id=str(7000 - i), submitted_at=now - timedelta(minutes=i))
            for i in range(40)]
    request = _survey_request(rows)
    early = agent.prestart_sacct(request)
    assert early is not None
    answer = cluster.serve("survey", request["args"], early)
    assert early.used
    [call] = calls(fake_sacct)
    assert call.split(" -j ")[1].split(",") == sorted(r.native_id for r in rows)
    assert {o["reason"] for o in answer["observed"].values()} == {"JobHeldUser"} and len(answer["observed"]) == 40


@pytest.mark.parametrize(
    "change",
    [
        {"native_id": None},  # a lost submission's row: looked up in its folder first
        {"native_id": "1; touch /tmp/x"},
        {"submitted_at": "yesterday"},
        {"submitted_at": "0001-01-01T00:00:00"},  # the sacct -S bound would be before year 1
        {"submitted_at": None},
    ],
)
def test_a_cluster_survey_starts_nothing_ahead_for_rows_it_must_look_up_or_cannot_read(change, fake_sacct):
    from blackfish_jobs import agent

    request = _survey_request([job_row(i, backend="remote") for i in range(3)])
    request["args"]["rows"][1].update(change)
    assert agent.prestart_sacct(request) is None
    assert agent.prestart_sacct({"op": "cancel", "args": {"rows": request["args"]["rows"]}}) is None
    assert agent.prestart_sacct({"op": "survey", "args": "rows"}) is None
    assert calls(fake_sacct) == []


def test_a_cluster_survey_with_more_ids_than_one_call_holds_starts_the_first(fake_sacct):
    """As the entry point does: the first of the survey's calls, which its backend collects."""
    from blackfish_jobs import agent

    rows = [{"native_id": str(1_000_000 + i), "submitted_at": "2026-12-07 10:00:00"} for i in range(20_000)]
    early = agent.prestart_sacct({"op": "survey", "args": {"rows": rows}})
    assert early is not None
    early.collect()
    [call] = calls(fake_sacct)
    listed = call.split(" -j ")[1].split(",")
    assert listed == [r["native_id"] for r in rows][: len(listed)] and len(listed) < len(rows)


def test_the_cluster_starts_sacct_before_loading_the_survey(tmp_path, fake_sacct):
    """The head start loads only the protocol and the Slurm command lines, not api.cluster."""
    request = _survey_request([job_row(i, backend="remote") for i in range(3)])
    code = (
        "import json, sys\n"
        "from blackfish_jobs import agent\n"
        "early = agent.prestart_sacct(json.loads(sys.stdin.read()))\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('blackfish_jobs'))\n"
        "early.collect()\n"
        "print(json.dumps(loaded))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], input=json.dumps(request), capture_output=True, text=True,
                          check=True, timeout=60)
    loaded = json.loads(done.stdout)
    assert "blackfish_jobs.backends.slurmcmd" in loaded
    assert not {"blackfish_jobs.api.cluster", "blackfish_jobs.backends.slurm", "blackfish_jobs.store"} & set(loaded)
    assert len(calls(fake_sacct)) == 1


def test_a_cluster_sacct_started_for_a_request_it_cannot_serve_is_killed(tmp_path, monkeypatch):
    """A survey refused after its sacct started (malformed rows): the agent answers the error, and
    the call is killed and reaped, not left running on the login node."""
    import io

    from blackfish_jobs import agent

    bindir = tmp_path / "slowbin"
    bindir.mkdir()
    (bindir / "sacct").write_text("#!/bin/sh\nexec sleep 60\n")
    (bindir / "sacct").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    request = _survey_request([job_row(i, backend="remote") for i in range(3)])
    del request["args"]["rows"][2]["target"]
    started = []
    real = agent.prestart_sacct
    monkeypatch.setattr(agent, "prestart_sacct", lambda req: started.append(real(req)) or started[-1])
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(json.dumps(request).encode())))
    monkeypatch.setattr(sys, "stdout", out)
    assert agent.main() == 0
    [early] = started
    assert early is not None and early.process.returncode is not None  # killed and reaped
    answer = json.loads(out.getvalue().splitlines()[-1].split(" ", 1)[1])
    assert answer["type"] == "BadInput" and "malformed rows" in answer["error"]


def test_no_head_start_without_a_migrated_sqlite_file(tmp_path, fake_sacct):
    assert entry._prestart_sacct(entry._read_live(f"sqlite:///{tmp_path / 'missing.sqlite'}", None)) is None
    assert entry._prestart_sacct(entry._read_live("postgresql://u@127.0.0.1:1/db", None)) is None
    assert calls(fake_sacct) == [] and not (tmp_path / "missing.sqlite").exists()


def _run(site, *args: str, **env: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    proc = subprocess.run(
        [sys.executable, "-c", _RUN, *args], capture_output=True, text=True, env=site.env(**env), timeout=120
    )
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("HEAVY "), proc.stderr
    return proc, json.loads(last.removeprefix("HEAVY "))


def test_everyday_commands_do_not_import_sqlalchemy(site, fake_sacct):
    """list, status and a submit whose artefact is present: the stdlib path, nothing heavy."""
    db = Database()
    add_jobs(db, 4)
    proc, heavy = _run(site, "list")
    assert heavy == [] and len(proc.stdout.splitlines()) == 5, proc.stderr
    proc, heavy = _run(site, "status", "--json")
    assert heavy == [] and [j["reason"] for j in json_jobs(proc.stdout)] == ["JobHeldUser"] * 4, proc.stderr
    assert len(calls(fake_sacct)) == 1
    site.write_profiles()
    site.place_image("alpine_3.20.sif", "docker://alpine:3.20")
    proc, heavy = _run(site, "submit", "pull-image", "docker://alpine:3.20")
    assert heavy == [] and proc.stdout.startswith("already present:"), proc.stderr


def test_a_fresh_database_is_migrated_on_first_use(site):
    """No bfjobs table yet: the first command migrates through Alembic, then reads with the stdlib."""
    proc, heavy = _run(site, "list")
    assert proc.stdout.strip() == "no jobs" and "sqlalchemy" in heavy, proc.stderr
    proc, heavy = _run(site, "list")
    assert proc.stdout.strip() == "no jobs" and heavy == [], proc.stderr


def test_the_status_process_exits_with_its_output_and_kills_an_unused_call(tmp_path):
    """entry.main hands its prestarted call to the CLI and kills it afterwards if nobody used it."""
    pid_file = tmp_path / "sleeper.pid"
    script = f"""
import sys
from blackfish_jobs import entry
from blackfish_jobs.backends import slurmcmd
body = "import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
entry._prestart_sacct = lambda live: slurmcmd.prestart([sys.executable, "-c", body])
entry.main(["status"])
"""
    env = dict(os.environ, BLACKFISH_HOME_DIR=str(tmp_path), BFJOBS_DB_URL=f"sqlite:///{tmp_path / 'app.sqlite'}")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert (proc.returncode, proc.stdout.strip()) == (0, "no unfinished jobs"), proc.stderr
    if pid_file.exists() and pid_file.read_text():  # it got as far as starting: it must be gone now
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid_file.read_text()), 0)


def test_bfjobs_status_as_a_command_exits_with_its_code(site, fake_sacct, tmp_path):
    """The console script's own process (python -m): the table whole, then 0; Slurm unreachable: 1."""
    add_jobs(Database(), 300)
    proc = subprocess.run(
        [sys.executable, "-m", "blackfish_jobs", "status"], capture_output=True, text=True, env=site.env(), timeout=120
    )
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 301, proc.stderr
    assert len(calls(fake_sacct)) == 1
    dead = tmp_path / "dead"
    dead.mkdir()
    for name in ("sacct", "squeue"):
        (dead / name).write_text(
            "#!/bin/sh\necho 'slurm_load_jobs error: Unable to contact slurm controller' >&2\nexit 1\n"
        )
        (dead / name).chmod(0o755)
    env = site.env(PATH=f"{dead}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(
        [sys.executable, "-m", "blackfish_jobs", "status"], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 1 and proc.stderr.startswith("bfjobs: error: some jobs were not refreshed"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and len(proc.stdout.splitlines()) == 301


def test_reading_a_result_names_submitits_file_without_importing_it(tmp_path):
    """status meets finished jobs all the time: their result file must not cost a submitit import."""
    script = f"""
import sys
from submitit.core.utils import JobPaths
paths = JobPaths({str(tmp_path)!r}, job_id="77_3", task_id=0).result_pickle
for name in [m for m in sys.modules if m.startswith("submitit")]:
    del sys.modules[name]
from blackfish_jobs.backends import folder
sys.path.insert(0, {str(Path(__file__).parent)!r})
from support.rows import job_row
import pickle
with open(paths, "wb") as fh:
    pickle.dump(("success", {{"path": "/x.sif"}}), fh)
row = job_row(id="0" * 12, profile="p", native_id="77_3", state="RUNNING", folder={str(tmp_path)!r},
              target="/x.sif", request={{}}, user=None)
assert folder.result_path(row) == paths, (folder.result_path(row), paths)
assert folder.read_result(row) == ("success", {{"path": "/x.sif"}})
print(sorted(m for m in sys.modules if m.startswith("submitit")))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr


def test_only_the_console_script_freezes_the_collector(monkeypatch):
    """``gc.freeze()`` pays only where the process ends next: a Python caller of ``entry.main``
    keeps its collector whole (frozen objects would never be collected)."""
    import gc

    from blackfish_jobs import entry

    frozen: list[bool] = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(True))
    with pytest.raises(SystemExit) as exited:
        entry.main(["--version"])
    assert exited.value.code == 0 and frozen == []
    monkeypatch.setattr(sys, "argv", ["bfjobs", "--version"])
    with pytest.raises(SystemExit):
        entry.run()
    assert frozen == [True]
