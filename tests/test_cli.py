"""Each command through Click's CliRunner, plus start-up cost checks in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys

import pytest
from support.site import json_job, json_jobs

HEAVY = ("submitit", "sqlalchemy", "huggingface_hub", "alembic", "jinja2")


def test_help_imports_no_heavy_library():
    code = (
        "import sys\n"
        "from blackfish_jobs.cli import cli\n"
        "try:\n    cli.main(['--help'], prog_name='bfjobs')\nexcept SystemExit:\n    pass\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_version(cli):
    from blackfish_jobs import __version__

    result = cli("--version")
    assert result.exit_code == 0
    assert __version__ in result.output


def test_help_lists_commands(cli):
    result = cli("--help")
    assert result.exit_code == 0
    for command in ("submit", "render", "status", "list", "wait"):
        assert command in result.output
    assert "pull-image" in cli("submit", "--help").output


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["nope"], 2, "No such command"),
        (["submit", "pull-image"], 2, "give either URI or --from-file"),
        (["submit", "pull-image", "docker://alpine$(id)"], 2, "not a valid docker://"),
        (["submit", "pull-image", "docker://alpine", "--to", "/etc"], 2, "--to"),
        (["submit", "pull-image", "docker://alpine", "--name", "../../x.sif"], 2, "--name"),
        (["submit", "pull-image", "docker://alpine", "--time", "forever"], 2, "--time"),
        (["submit", "pull-image", "docker://alpine", "--partition", "a;b"], 2, "--partition"),
        (["submit", "pull-image", "docker://alpine", "--cpus-per-task", "1e9"], 2, "--cpus-per-task"),
        (["submit", "pull-image", "docker://alpine", "--profile", "ghost"], 2, "ghost"),
        (["submit", "pull-image", "docker://alpine", "--profile", "../x"], 2, "not a profile name"),
        (["status", "nosuchjob"], 2, "no bfjobs job"),
        (["status", "a;b"], 2, "not a job id"),
        (["--db", "notaurl", "list"], 2, "not a database URL"),
    ],
)
def test_bad_input_is_one_line_exit_2(cli, site, args, code, fragment):
    result = cli(*args)
    assert result.exit_code == code, result.output
    err_lines = [line for line in result.stderr.splitlines() if line.startswith("bfjobs: error")]
    assert len(err_lines) == 1, result.stderr
    assert fragment in err_lines[0]
    assert "Traceback" not in result.output
    assert not list(site.cache_dir.iterdir())


def test_builtin_profile_notice_and_render(cli, local_site):
    result = cli("render", "pull-image", "docker://alpine:3.20")
    assert result.exit_code == 0
    assert "built-in 'local' profile (no sbatch on PATH" in result.stderr
    assert result.stdout.startswith("#!/bin/bash\n")
    assert f"{local_site.app_dir.resolve()}/jobs/bfjobs/render-preview/%j_0_log.out" in result.stdout


def test_render_uses_profile_settings_and_flags(cli, site):
    site.write_profiles()
    site.write_settings('[profiles.slurm]\npartition = "datamover"\ntime = "00:30:00"\n')
    out = cli("render", "pull-image", "docker://alpine:3.20").stdout
    assert "#SBATCH --partition=datamover" in out and "#SBATCH --time=00:30:00" in out
    out = cli("render", "pull-image", "docker://alpine:3.20", "--partition", "cpu", "--qos", "xfer").stdout
    assert "#SBATCH --partition=cpu" in out and "#SBATCH --qos=xfer" in out
    assert f"{site.cache_dir}/images/alpine_3.20.sif" in out
    out = cli("render", "pull-image", "docker://alpine:3.20", "--to", "home").stdout
    assert f"{site.home_dir}/images/alpine_3.20.sif" in out


def test_both_kinds_take_to_shared_or_home(cli, site):
    """--to is the one spelling; a model's --shared is its alias; contradicting them is one line, exit 2."""
    site.write_profiles()
    commit = "a" * 40
    model = ("render", "download-model", "org/m", "--revision", commit)
    assert f"{site.home_dir}/models/models--org--m" in cli(*model).stdout
    for flags in (["--to", "shared"], ["--shared"], ["--shared", "--to", "shared"]):
        result = cli(*model, *flags)
        assert result.exit_code == 0, result.stderr
        assert f"{site.cache_dir}/models/models--org--m" in result.stdout
    result = cli(*model, "--shared", "--to", "home")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "--shared means --to shared" in result.stderr
    result = cli(*model, "--to", "elsewhere")
    assert result.exit_code == 2 and "'elsewhere' is not one of 'shared', 'home'" in result.stderr
    assert cli("render", "pull-image", "docker://alpine:3.20", "--to", "elsewhere").exit_code == 2


def test_already_present_submits_nothing(cli, site):
    site.write_profiles()
    images = site.cache_dir / "images"
    site.place_image("alpine_3.20.sif", "docker://alpine:3.20")
    result = cli("submit", "pull-image", "docker://alpine:3.20", "--json")
    assert result.exit_code == 0
    data = json_job(result.stdout)
    assert data["state"] == "PRESENT" and data["result"]["path"] == str(images / "alpine_3.20.sif")
    assert data["id"] is None and data["target"] == data["result"]["path"] and data["in_flight"] is False
    assert not (site.home_dir / "jobs").exists()
    assert "already present" in cli("submit", "pull-image", "docker://alpine:3.20").stdout


def test_unwritable_destination_refused_before_submitting(cli, site, read_only_cache):
    site.write_profiles()
    result = cli("submit", "pull-image", "docker://alpine:3.20")
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert f"cannot write to the destination {site.cache_dir}/images" in line and "--to home" in line
    assert not (site.home_dir / "jobs").exists()
    # --to home is writable: render works and names the home destination
    assert cli("render", "pull-image", "docker://alpine:3.20", "--to", "home").exit_code == 0


def test_list_and_status_on_empty_db(cli, site):
    assert json_jobs(cli("list", "--json").stdout) == []
    result = cli("status")
    assert result.exit_code == 0 and "no unfinished jobs" in result.stdout


@pytest.mark.parametrize("path", ["/", "/etc/passwd", "/proc/kcore", "{cache}/images/../../x.sif", "{cache}/.."])
def test_verify_reads_only_the_profiles_artefacts(cli, site, path):
    site.write_profiles()
    (site.cache_dir / "images").mkdir()
    (site.root / "x.sif").write_bytes(b"not in a cache")
    result = cli("verify", path.format(cache=site.cache_dir))
    assert result.exit_code == 2
    assert result.stderr.startswith("bfjobs: error: verify:") and result.stderr.count("\n") == 1


def test_verify_a_sif_by_path(cli, site):
    site.write_profiles()
    path = site.place_image("a_1.sif", "docker://a:1")
    result = cli("verify", str(path))
    assert result.exit_code == 0 and result.stdout.startswith("OK ")
    path.write_bytes(b"sig")  # same size, another byte
    result = cli("verify", str(path))
    assert result.exit_code == 1 and result.stdout.startswith("CORRUPT ")
