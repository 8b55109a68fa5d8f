"""The library facade (``blackfish_jobs.api``) used without Click, the CLI's command families through
CliRunner (sqlite-utils style), and the layering rule that the CLI imports only the facade."""

from __future__ import annotations

import ast
import calendar
import json
import subprocess
import sys
from pathlib import Path

import pytest
from support.rows import job_row
from support.site import json_findings, json_job, json_jobs

from blackfish_jobs.api import JSON_VERSION, Client, JobsResult, VerifyResult
from blackfish_jobs.errors import JobFailed
from blackfish_jobs.store import Database, JobRow, utcnow

CLI_DIR = Path(__file__).resolve().parent.parent / "blackfish_jobs" / "cli"


def job(job_id: str, **columns: object) -> JobRow:
    """A COMPLETED Slurm pull with Slurm id 77 in /jobs/x (other columns by keyword)."""
    values: dict = {"id": job_id, "state": "COMPLETED", "native_id": "77", "target": "/nowhere/a.sif",
                    "folder": "/jobs/x", "node": "vm", "ended_at": utcnow()}
    return job_row(**{**values, **columns})


# ----------------------------------------------------------------------------- layering


def test_the_cli_imports_only_the_facade_errors_and_itself():
    allowed = {"blackfish_jobs.api", "blackfish_jobs.errors"}
    for path in sorted(CLI_DIR.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = "blackfish_jobs" if node.level == 2 else "blackfish_jobs.cli"
                names = [f"{base}.{node.module}"] if node.module else [f"{base}.{a.name}" for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                if name == "blackfish_jobs" or name.startswith("blackfish_jobs."):
                    ok = name.startswith("blackfish_jobs.cli") or any(
                        name == a or name.startswith(a + ".") for a in allowed
                    )
                    assert ok, f"{path.name} imports {name}: the CLI goes through blackfish_jobs.api"


def test_a_command_loads_only_its_own_family(site):
    code = (
        "import sys\nfrom blackfish_jobs.cli import main\n"
        "try:\n    main(['list'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('blackfish_jobs.cli.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=site.env()).stdout
    assert out.strip().splitlines()[-1] == str(["blackfish_jobs.cli._output", "blackfish_jobs.cli._utils",
                                                "blackfish_jobs.cli.jobs"])


# ----------------------------------------------------------------------------- the facade, no Click


def test_results_carry_the_exit_code_and_one_json_shape(site):
    db = Database()
    db.insert(job("a00000000001", native_id="88_2"))
    client = Client(db=db)
    listed = client.list_jobs()
    assert isinstance(listed, JobsResult) and listed.exit_code == 0 and listed.failure() is None
    data = listed.to_json()
    assert data["version"] == JSON_VERSION == 1 and list(data) == ["version", "jobs"]
    [item] = data["jobs"]
    assert (item["id"], item["kind"], item["array_index"], item["slurm_job_id"]) == ("a00000000001", "pull-image", 2,
                                                                                    "88_2")
    assert item["stdout"] == "/jobs/x/88_2_0_log.out" and item["stderr"] == "/jobs/x/88_2_0_log.err"
    # success means COMPLETED *and* the artefact in place: this image is not there
    waited = client.wait(["a00000000001"])
    assert waited.exit_code == 1
    assert "but its pull-image artefact is not in place (/nowhere/a.sif)" in str(waited.failure())
    with pytest.raises(JobFailed, match="did not complete"):
        waited.raise_for_status()


def test_mode_is_octal_digits_whatever_the_row_stored(site):
    db = Database()
    db.insert(job("b00000000001", result={"path": "/x.sif", "mode": "0o755"}))
    [item] = Client(db=db).list_jobs().to_json()["jobs"]
    assert item["result"]["mode"] == "755"


def test_verify_without_click(site):
    site.write_profiles()
    image = site.cache_dir / "images" / "handmade_1.sif"
    image.parent.mkdir(parents=True)
    image.write_bytes(b"no record")
    result = Client().verify([str(image)])
    assert isinstance(result, VerifyResult) and result.exit_code == 1
    assert result.to_json()["findings"] == [{
        "id": None, "kind": "pull-image", "path": str(image), "status": "UNVERIFIED", "ok": False,
        "problem": "no bfjobs record of its pull", "checked_files": 0,
    }]
    assert Client().verify([str(image)], accept_unverified=True).exit_code == 0


def test_present_has_a_jobs_keys(site):
    site.write_profiles()
    site.place_image("alpine_3.20.sif", "docker://alpine:3.20")
    result = Client().submit("pull-image", "docker://alpine:3.20", wait=True)
    assert result.exit_code == 0 and not result.waited
    [present] = result.to_json()["jobs"]
    assert present["id"] is None and present["state"] == "PRESENT" and present["kind"] == "pull-image"
    Database().insert(job("c00000000001"))
    [stored] = Client().list_jobs().to_json()["jobs"]
    assert set(present) == set(stored)


def test_submission_asks_slurm_through_the_clients_backends(site, monkeypatch):
    """``render``/``submit`` refresh a job in flight for the same artefact through the Client's
    backends (a caller's runner, the command's prestarted call), not a set of their own."""
    from blackfish_jobs.backends import Backends
    from blackfish_jobs.backends.slurm import SlurmBackend

    monkeypatch.setattr(SlurmBackend, "require_clients", lambda self, spec: None)  # no sbatch needed here

    site.write_profiles()
    target = site.cache_dir / "images" / "alpine_flying.sif"
    request = {"uri": "docker://alpine:flying", "dest_dir": str(target.parent), "filename": target.name,
               "apptainer": "apptainer", "force": False}
    db = Database()
    db.insert(job("d00000000001", state="PENDING", native_id="4242", target=str(target), request=request,
                  ended_at=None, node=None))
    asked: list[str] = []
    submitted = calendar.timegm(db.get("d00000000001").submitted_at.timetuple())

    def runner(argv: list[str]) -> str:
        asked.append(argv[0])
        return f"4242|4242|RUNNING|vm|{submitted}|Unknown|0:0|None\n" if argv[0] == "sacct" else ""

    result = Client(db=db, backends=Backends(runner=runner)).render("pull-image", "docker://alpine:flying")
    assert asked == ["sacct"]
    [flying] = result.to_json()["jobs"]
    assert flying["id"] == "d00000000001" and flying["state"] == "RUNNING"


# ----------------------------------------------------------------------------- command families (CliRunner)


def test_jobs_family_json_is_always_one_object(cli, site):
    db = Database()
    db.insert(job("d00000000001", target=str(site.root / "there.sif")))
    (site.root / "there.sif").write_bytes(b"x")
    for args in (["status", "d00000000001"], ["status"], ["list"], ["wait", "d00000000001"],
                 ["cancel", "d00000000001"]):
        result = cli(*args, "--json")
        assert result.exit_code == 0, (args, result.stderr)
        data = json.loads(result.stdout)
        assert data["version"] == 1 and isinstance(data["jobs"], list), args
    assert json_job(cli("status", "d00000000001", "--json").stdout)["id"] == "d00000000001"
    assert json_jobs(cli("status", "--json").stdout) == []  # a COMPLETED job is not unfinished
    cancelled = cli("cancel", "d00000000001")
    assert cancelled.stdout == "d00000000001  Slurm job 77  already ended: COMPLETED\n"


def test_logs_family_prints_the_log(cli, site):
    folder = site.root / "job"
    folder.mkdir()
    (folder / "77_0_log.out").write_text("hello\n")
    Database().insert(job("e00000000001", folder=str(folder)))
    result = cli("logs", "e00000000001")
    assert (result.exit_code, result.stdout) == (0, "hello\n")


def test_cache_family_sync_and_verify_json(cli, site):
    result = cli("sync", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout) == {"version": 1, "registered": 0, "waiting": 0}
    assert cli("sync").stdout == "registered 0 model(s) in Blackfish's model table; 0 waiting\n"
    assert json_findings(cli("verify", "--json").stdout) == []
