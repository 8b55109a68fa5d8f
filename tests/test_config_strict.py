"""Configuration says what it does (issue 10, items 5 and 6).

A missing ``BFJOBS_CONFIG`` file, a ``[profiles.NAME]`` table for no profile, a misspelt kind
table, a profile directory that does not exist, a database folder that does not exist and a
``--profile`` that names nothing are each one line on stderr and exit 2, with nothing written.
With no ``profiles.cfg`` the built-in profile is ``slurm`` where ``sbatch`` is on PATH (the heavy
work never runs on the login node by default) and ``local`` only where it is not.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from support.rows import insert_rows, job_row
from support.site import json_job, json_jobs, local_profile, slurm_profile

from blackfish_jobs import config

URI = "docker://alpine:3.20"


def one_error(result) -> str:
    """Exit 2, and stderr is exactly one ``bfjobs: error:`` line (no notice before it); returns it."""
    assert result.exit_code == 2, (result.exit_code, result.stderr, result.stdout)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("bfjobs: error: "), result.stderr
    assert result.stdout == ""
    return lines[0]


def della_profiles(site, **dirs: str) -> None:
    """profiles.cfg with a local-schema ``della`` (default) and a Slurm ``hpc``: no job needs Slurm."""
    home, cache = dirs.get("home_dir", site.home_dir), dirs.get("cache_dir", site.cache_dir)
    site.write_profiles({
        "della": local_profile(home, cache, default="true"),
        "hpc": slurm_profile(site.home_dir, site.cache_dir),
    })


def nothing_written(site) -> None:
    assert not (site.home_dir / "jobs").exists()
    assert list(site.cache_dir.iterdir()) == []
    assert not (site.app_dir / "jobs").exists()


# ----------------------------------------------------------------------------- bfjobs.toml


@pytest.mark.parametrize("command", ["render", "submit"])
def test_bfjobs_config_naming_a_missing_file_is_an_error(cli, site, monkeypatch, tmp_path, command):
    della_profiles(site)
    missing = tmp_path / "no" / "such.toml"
    monkeypatch.setenv("BFJOBS_CONFIG", str(missing))
    line = one_error(cli(command, "pull-image", URI))
    assert "BFJOBS_CONFIG" in line and str(missing) in line
    nothing_written(site)


def test_bfjobs_config_naming_an_existing_file_is_used(cli, site, monkeypatch, tmp_path):
    della_profiles(site)
    settings = tmp_path / "site.toml"
    settings.write_text('[profiles.hpc]\npartition = "datamover"\n')
    monkeypatch.setenv("BFJOBS_CONFIG", str(settings))
    result = cli("render", "pull-image", URI, "--profile", "hpc")
    assert result.exit_code == 0, result.stderr
    assert "#SBATCH --partition=datamover" in result.stdout


@pytest.mark.parametrize("command", ["render", "submit"])
def test_a_profile_table_for_no_profile_is_an_error(cli, site, command):
    della_profiles(site)
    site.write_settings('[profiles.dela]\npartition = "datamover"\n')
    line = one_error(cli(command, "pull-image", URI))
    assert "bfjobs.toml [profiles.dela]" in line and str(site.app_dir / "profiles.cfg") in line
    assert "profiles: della, hpc" in line and "did you mean 'della'?" in line
    nothing_written(site)


def test_a_profile_table_for_no_profile_without_profiles_cfg(cli, site):
    """No profiles.cfg: only the built-in profiles' tables can apply."""
    site.write_settings('[profiles.della]\npartition = "datamover"\n')
    line = one_error(cli("render", "pull-image", URI))
    assert "[profiles.della]" in line and "there is no" in line and "profiles: slurm, local" in line
    site.write_settings('[profiles.slurm]\npartition = "datamover"\n')
    result = cli("render", "pull-image", URI, "--profile", "slurm")
    assert result.exit_code == 0 and "#SBATCH --partition=datamover" in result.stdout


def test_a_misspelt_kind_table_is_an_unknown_kind(cli, site):
    della_profiles(site)
    site.write_settings('[profiles.della.pull-images]\nmem = "16G"\n')
    line = one_error(cli("render", "pull-image", URI))
    assert "[profiles.della.pull-images]: unknown kind 'pull-images'" in line
    assert "(kinds: pull-image, download-model)" in line and "did you mean 'pull-image'?" in line
    site.write_settings('[defaults.dowload-model]\nmem = "16G"\n')
    line = one_error(cli("render", "pull-image", URI))
    assert "[defaults.dowload-model]: unknown kind" in line and "did you mean 'download-model'?" in line


def test_a_misspelt_kind_table_of_another_profile_is_refused_too(cli, site):
    della_profiles(site)
    site.write_settings('[profiles.hpc.pull-images]\nmem = "16G"\n')
    assert "[profiles.hpc.pull-images]: unknown kind" in one_error(cli("render", "pull-image", URI))


def test_an_unknown_setting_suggests_the_known_one(cli, site):
    della_profiles(site)
    site.write_settings('[profiles.della]\npartiton = "datamover"\n')
    line = one_error(cli("render", "pull-image", URI))
    assert "[profiles.della]: unknown setting 'partiton'; did you mean 'partition'?" in line


def test_a_flag_is_named_once(cli, site):
    della_profiles(site)
    line = one_error(cli("render", "pull-image", URI, "--time", "2 hours"))
    assert line.startswith("bfjobs: error: --time: not a Slurm time") and "--time time" not in line
    line = one_error(cli("render", "pull-image", URI, "--cpus-per-task", "0"))
    assert line.startswith("bfjobs: error: --cpus-per-task: ") and "cpus_per_task" not in line


# ----------------------------------------------------------------------------- profiles.cfg directories


@pytest.mark.parametrize("key", ["cache_dir", "home_dir"])
def test_a_profile_directory_that_does_not_exist_is_an_error(site, key):
    """Not created and published into (a typo, or a filesystem not mounted on this host)."""
    missing = site.root / f"no-such-{key}"
    della_profiles(site, **{key: str(missing)})
    proc = site.bfjobs("submit", "pull-image", URI, "--wait")
    assert proc.returncode == 2, proc.stderr
    [line] = proc.stderr.splitlines()
    assert f"profiles.cfg [della] {key}: {missing} does not exist" in line
    assert not missing.exists()
    assert site.apptainer_calls() == []
    assert not (site.home_dir / "jobs").exists() and list(site.cache_dir.iterdir()) == []


def test_the_builtin_profile_home_is_still_created(cli, site, no_slurm_path, monkeypatch):
    monkeypatch.setenv("PATH", no_slurm_path)
    app = site.root / "fresh-app"
    monkeypatch.setenv("BLACKFISH_HOME_DIR", str(app))
    assert config.load_profile().home_dir == app.resolve()
    result = cli("list")
    assert result.exit_code == 0 and result.stdout == "no jobs\n"
    assert (app / "app.sqlite").is_file()


# ----------------------------------------------------------------------------- database


DB_COMMANDS = [["list"], ["status"], ["sync"], ["verify"], ["wait", "abc"], ["logs", "abc"], ["cancel", "abc"]]


@pytest.mark.parametrize("args", DB_COMMANDS, ids=lambda a: a[0])
def test_a_database_in_a_missing_directory_is_an_error(cli, site, args):
    folder = site.root / "no" / "such" / "dir"
    line = one_error(cli("--db", f"sqlite:///{folder}/app.sqlite", *args))
    assert line.startswith("bfjobs: error: --db: directory") and f"'{folder}'" in line and "does not exist" in line
    assert not (site.root / "no").exists()


def test_bfjobs_db_url_in_a_missing_directory_is_an_error(cli, site, monkeypatch):
    folder = site.root / "gone"
    monkeypatch.setenv("BFJOBS_DB_URL", f"sqlite:///{folder}/app.sqlite")
    line = one_error(cli("list"))
    assert line.startswith("bfjobs: error: BFJOBS_DB_URL: directory") and str(folder) in line
    assert not folder.exists()


def test_a_new_database_file_in_an_existing_directory_is_a_fresh_start(site):
    """`list` on a database not yet created: a fresh install, "no jobs", exit 0 (a real process)."""
    url = f"sqlite:///{site.root}/new.sqlite"
    proc = site.bfjobs("--db", url, "list")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "no jobs\n", "")
    proc = site.bfjobs("--db", f"sqlite:///{site.root}/missing/new.sqlite", "list")
    assert proc.returncode == 2 and proc.stderr.startswith("bfjobs: error: --db: directory")


# ----------------------------------------------------------------------------- --profile of list/status


@pytest.mark.parametrize("command", ["list", "status", "verify"])
def test_listing_an_unknown_profile_is_an_error(cli, site, command):
    della_profiles(site)
    line = one_error(cli(command, "--profile", "dela"))
    assert "profile 'dela' not found in" in line and "profiles: della, hpc" in line
    assert "did you mean 'della'?" in line
    line = one_error(cli(command, "--profile", "nosuch"))
    assert "profile 'nosuch' not found" in line and "did you mean" not in line


def test_listing_an_unknown_profile_without_profiles_cfg(cli, site):
    line = one_error(cli("list", "--profile", "nosuch"))
    assert "there is no" in line and "built-in profiles: slurm, local" in line
    for name in ("slurm", "local"):
        result = cli("list", "--profile", name)
        assert (result.exit_code, result.stdout) == (0, "no jobs\n")


def test_a_removed_profile_with_jobs_can_still_be_listed(cli, site):
    """A profile taken out of profiles.cfg still names its jobs in the database."""
    della_profiles(site)
    now = datetime.now(UTC).replace(tzinfo=None)
    insert_rows(None, [job_row(
        id="0123456789ab", profile="oldsite", backend="local", native_id="1", state="COMPLETED", folder="/x",
        target="/c/images/a.sif", request={}, submitted_at=now, ended_at=now, updated_at=now,
    )])
    result = cli("list", "--profile", "oldsite", "--json")
    assert result.exit_code == 0, result.stderr
    assert [job["id"] for job in json_jobs(result.stdout)] == ["0123456789ab"]
    assert cli("status", "--profile", "oldsite").exit_code == 0


# ----------------------------------------------------------------------------- the built-in profiles


def test_builtin_profile_is_slurm_where_sbatch_is_on_path(cli, site):
    profile = config.load_profile()
    assert (profile.name, profile.schema, profile.host, profile.builtin) == ("slurm", "slurm", "localhost", True)
    assert profile.home_dir == profile.cache_dir == site.app_dir.resolve()
    result = cli("render", "pull-image", URI)
    assert result.exit_code == 0
    assert result.stderr.splitlines() == [
        f"bfjobs: no {site.app_dir}/profiles.cfg; using the built-in 'slurm' profile (sbatch is on PATH: jobs "
        f"are submitted to Slurm from this host; home_dir and cache_dir {site.app_dir.resolve()})"
    ]
    assert "local profile" not in result.stderr


def test_builtin_profile_is_local_where_sbatch_is_not(cli, site, no_slurm_path, monkeypatch):
    monkeypatch.setenv("PATH", no_slurm_path)
    profile = config.load_profile()
    assert (profile.name, profile.schema, profile.builtin) == ("local", "local", True)
    result = cli("render", "pull-image", URI)
    assert "using the built-in 'local' profile (no sbatch on PATH: jobs run on this machine" in result.stderr


@pytest.mark.slurm
def test_builtin_slurm_profile_submits_to_the_cluster(site):
    site.write_settings('[profiles.slurm]\nmem = "200M"\ntime = "00:10:00"\ncpus_per_task = 1\n')
    proc = site.bfjobs("submit", "pull-image", "docker://alpine:builtin", "--wait", "--json")
    assert proc.returncode == 0, proc.stderr
    job = json_job(proc.stdout)
    assert (job["backend"], job["profile"], job["state"]) == ("slurm", "slurm", "COMPLETED")
    assert job["slurm_job_id"] and job["local_pid"] is None
    assert (site.app_dir / "images" / "alpine_builtin.sif").is_file()
    assert "built-in 'slurm' profile (sbatch is on PATH" in proc.stderr


def test_profile_local_still_runs_here_on_purpose(site):
    proc = site.bfjobs("submit", "pull-image", "docker://alpine:here", "--profile", "local", "--wait", "--json")
    assert proc.returncode == 0, proc.stderr
    job = json_job(proc.stdout)
    assert (job["backend"], job["profile"], job["state"]) == ("local", "local", "COMPLETED")
    assert "built-in 'local' profile (--profile local: jobs run on this machine, not through Slurm" in proc.stderr


@pytest.mark.parametrize("with_profiles_cfg", [True, False])
def test_a_slurm_profile_without_slurm_commands_is_one_clear_line(site, no_slurm_path, with_profiles_cfg):
    """Not `internal error: RuntimeError: Could not detect "srun"`; no job folder, no job row."""
    if with_profiles_cfg:
        site.write_profiles()  # its default profile is a Slurm one
    args = () if with_profiles_cfg else ("--profile", "slurm")
    proc = site.bfjobs("submit", "pull-image", URI, *args, PATH=no_slurm_path)
    assert proc.returncode == 2, proc.stderr
    [line] = proc.stderr.splitlines()
    assert line == (
        "bfjobs: error: profile 'slurm' submits to Slurm, but sbatch and srun are not on PATH: run bfjobs on a "
        "login node of the cluster (or load its Slurm module), or choose a local profile"
    )
    assert not (site.home_dir / "jobs").exists() and not (site.app_dir / "jobs").exists()
    assert not site.db_path.exists()
    assert site.apptainer_calls() == []
