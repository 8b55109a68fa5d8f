"""The site layer: /etc/bfjobs/bfjobs.toml (BFJOBS_SITE_CONFIG) below each user's bfjobs.toml,
keys an admin fixes, and ``bfjobs config show`` saying where each setting came from."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.site import skip_or_fail

from blackfish_jobs import config, constants, kinds
from blackfish_jobs.errors import BadInput, ConfigError

SITE = """
    [site]
    fixed = ["partition", "templates_dir"]

    [defaults]
    partition = "transfer"
    qos = "dtn"
    modules = ["apptainer/1.3"]

    [defaults.download-model]
    time = "08:00:00"

    [profiles.slurm]
    account = "lab"

    [profiles.othercluster]
    partition = "elsewhere"
    """


@pytest.fixture
def admin_site(site):
    site.write_profiles()  # slurm (default) and laptop
    site.write_site_settings(SITE)
    return site


def test_a_user_without_a_file_gets_the_sites_settings(admin_site):
    s = kinds.load_settings("slurm", "download-model")
    assert (s.partition, s.qos, s.modules) == ("transfer", "dtn", ("apptainer/1.3",))
    assert (s.time, s.account) == ("08:00:00", "lab")
    laptop = kinds.load_settings("laptop", "pull-image")
    assert (laptop.partition, laptop.account, laptop.time) == ("transfer", None, "02:00:00")


def test_every_level_of_the_users_file_sits_above_every_level_of_the_sites(admin_site):
    admin_site.write_settings(
        """
        [defaults]
        qos = "mine"
        time = "01:00:00"
        """
    )
    resolved = kinds.resolve_settings("slurm", "download-model")
    # the user's [defaults] beats the site's [defaults.download-model] and [profiles.slurm]
    assert (resolved.settings.qos, resolved.settings.time) == ("mine", "01:00:00")
    site_file = str(admin_site.site_settings_path)
    user_file = str(admin_site.app_dir / "bfjobs.toml")
    assert resolved.sources["time"] == f"{user_file} [defaults]"
    assert resolved.sources["account"] == f"{site_file} [profiles.slurm]"
    assert resolved.sources["partition"] == f"{site_file} [defaults]"
    assert resolved.sources["mem"] == "default" and resolved.fixed == ("partition", "templates_dir")


def test_the_sites_tables_for_profiles_a_user_lacks_are_ignored_but_the_users_are_not(admin_site):
    assert config.site_profiles()[1:] == (["slurm"], ["othercluster"])
    kinds.load_settings("slurm", "pull-image")  # no error for [profiles.othercluster] in the site file
    admin_site.write_settings('[profiles.othercluster]\nqos = "x"\n')
    with pytest.raises(ConfigError, match=r"\[profiles.othercluster\]: no such profile"):
        kinds.load_settings("slurm", "pull-image")


@pytest.mark.parametrize(
    "table",
    [
        'templates_dir = "/nonexistent/templates"',
        'mem = "lots"',
        'partiton = "x"',
        "[profiles.othercluster.pull-imagez]",
    ],
)
def test_a_broken_site_table_of_a_profile_a_user_lacks_never_fails_that_user(admin_site, cli, table):
    """Another cluster's table may name folders not on this machine, or be broken: it is not this
    user's to fix, and not read for them; config show still lists it as ignored."""
    admin_site.write_site_settings(SITE.replace('partition = "elsewhere"', table))
    shown = cli("config", "show")
    assert shown.exit_code == 0, shown.stderr
    assert "site profiles you do not have (ignored): othercluster" in shown.stdout.splitlines()
    rendered = cli("render", "pull-image", "docker://alpine:3.20")
    assert rendered.exit_code == 0, rendered.stderr
    assert "#SBATCH --partition=transfer" in rendered.stdout


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('[profiles.slurm]\npartiton = "x"\n', "[profiles.slurm]: unknown setting 'partiton'; did you mean"),
        ('[profiles.slurm]\ntemplates_dir = "/nonexistent/templates"\n', "'/nonexistent/templates' does not exist"),
        ('[profiles.slurm.pull-imagez]\nmem = "1G"\n', "unknown kind 'pull-imagez'"),
        ('[defaults.download-model]\nmem = "lots"\n', "not a Slurm memory size"),
    ],
)
def test_the_site_tables_a_user_gets_are_still_checked(site, table, message):
    site.write_profiles()
    site.write_site_settings(table)
    with pytest.raises(BadInput) as info:
        kinds.load_settings("slurm", "pull-image")
    assert message in str(info.value) and str(site.site_settings_path) in str(info.value)


def test_a_site_table_is_read_only_for_the_profile_in_use(admin_site, cli):
    """The site's [profiles.slurm] is checked when slurm is used, not while laptop is."""
    admin_site.write_site_settings(SITE.replace('account = "lab"', 'templates_dir = "/nonexistent/templates"'))
    assert cli("config", "show", "--profile", "laptop").exit_code == 0
    refused = cli("config", "show", "--profile", "slurm")
    assert refused.exit_code == 2 and "[profiles.slurm] templates_dir: '/nonexistent/templates'" in refused.stderr


def _with_remote_profile(site) -> None:
    """profiles.cfg: ``slurm`` (the default, this machine) and ``della``, a remote one (docs/remote.md)."""
    from support.site import profiles_cfg, slurm_profile

    della = {"schema": "slurm", "host": "della.example.edu", "user": "alice",
             "home_dir": "/home/alice/.blackfish", "cache_dir": "/scratch/gpfs/blackfish"}
    (site.app_dir / "profiles.cfg").write_text(
        profiles_cfg({"slurm": slurm_profile(site.home_dir, site.cache_dir, default="true"), "della": della})
    )


def test_a_remote_profiles_cluster_paths_do_not_break_the_profile_in_use(site, cli):
    """The user's own [profiles.della] names the cluster's folders: not looked up on the laptop
    while another profile is used, and taken as the cluster's when della is."""
    _with_remote_profile(site)
    site.write_settings(
        '[profiles.della]\ntemplates_dir = "/home/alice/bfjobs-templates"\n'
        'remote_python = "/home/alice/venv/bin/python"\n'
        '[profiles.della.download-model]\ntemplates_dir = "/home/alice/model-templates"\n'
    )
    shown = cli("config", "show", "--profile", "slurm")
    assert shown.exit_code == 0, shown.stderr
    assert cli("render", "pull-image", "docker://alpine:3.20", "--profile", "slurm").exit_code == 0
    assert kinds.load_settings("slurm", "pull-image").templates_dir is None
    della = kinds.resolve_settings("della", "pull-image", remote=True)
    assert str(della.settings.templates_dir) == "/home/alice/bfjobs-templates"
    model = kinds.resolve_settings("della", "download-model", remote=True).settings
    assert str(model.templates_dir) == "/home/alice/model-templates"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('[profiles.della]\ntemplate_dir = "/x"\n', "unknown setting 'template_dir'; did you mean 'templates_dir'?"),
        ('[profiles.della]\ntemplates_dir = "templates"\n', "templates_dir: must be an absolute path"),
        ('[profiles.della]\nmem = "lots"\n', "not a Slurm memory size"),
        ('[profiles.della.pull-images]\nmem = "1G"\n', "unknown kind 'pull-images'"),
    ],
)
def test_a_typo_in_the_users_table_of_a_profile_not_in_use_is_still_an_error(site, table, message):
    _with_remote_profile(site)
    site.write_settings(table)
    with pytest.raises(BadInput, match=re.escape(message)):
        kinds.load_settings("slurm", "pull-image")


@pytest.mark.parametrize(
    ("user_toml", "flags", "env", "named", "remedy"),
    [
        ('[defaults]\npartition = "cpu"\n', {}, {}, "bfjobs.toml [defaults] partition", "from your settings"),
        ('[profiles.slurm.pull-image]\npartition = "cpu"\n', {}, {}, "[profiles.slurm.pull-image] partition",
         "from your settings"),
        ("", {"partition": "cpu"}, {}, "--partition partition", "remove it from the command"),
        ("", {}, {"BFJOBS_TEMPLATES_DIR": "TMP"}, "BFJOBS_TEMPLATES_DIR templates_dir",
         "unset the environment variable BFJOBS_TEMPLATES_DIR"),
    ],
)
def test_changing_a_fixed_key_is_one_line(admin_site, monkeypatch, tmp_path, user_toml, flags, env, named, remedy):
    admin_site.write_settings(user_toml)
    for key, value in env.items():
        monkeypatch.setenv(key, str(tmp_path) if value == "TMP" else value)
    with pytest.raises(ConfigError) as info:
        kinds.resolve_settings("slurm", "pull-image", flags=flags)
    message = str(info.value)
    assert named in message and "the site fixes this setting" in message and "\n" not in message
    assert f"{admin_site.site_settings_path} [site] fixed" in message
    assert message.endswith(remedy)


@pytest.mark.parametrize(
    ("label", "remedy"),
    [
        ("BFJOBS_TEMPLATES_DIR", "unset the environment variable BFJOBS_TEMPLATES_DIR"),
        ("--templates-dir", "remove it from the command"),
        ("/home/alice/.blackfish/bfjobs.toml [defaults]", "remove it from your settings"),
    ],
)
def test_a_fixed_key_sent_by_the_laptop_names_where_to_remove_it(admin_site, tmp_path, label, remedy):
    """On the cluster, the layers a laptop sent: the same remedy as on the laptop itself."""
    sent = config.check_layers([[label, {"templates_dir": str(tmp_path)}]])
    with pytest.raises(ConfigError) as info:
        kinds.resolve_settings("slurm", "pull-image", user_layers=sent)
    assert "(sent by the laptop) templates_dir: the site fixes this setting" in str(info.value)
    assert str(info.value).endswith(remedy)


def test_repeating_a_fixed_value_is_not_a_change(admin_site):
    admin_site.write_settings('[defaults]\npartition = "transfer"\n')
    resolved = kinds.resolve_settings("slurm", "pull-image", flags={"partition": "transfer", "qos": "mine"})
    assert (resolved.settings.partition, resolved.settings.qos) == ("transfer", "mine")
    assert resolved.sources["qos"] == "--qos"


@pytest.mark.parametrize(
    ("site_toml", "message"),
    [
        ('[site]\nfixd = ["partition"]\n', "[site]: unknown key 'fixd'; did you mean 'fixed'?"),
        ('[site]\nfixed = ["partiton"]\n', "[site] fixed: unknown setting 'partiton'; did you mean 'partition'?"),
        ('[site]\nfixed = "partition"\n', "[site] fixed: expected a list of strings"),
        ('[defaults]\nmem = "lots"\n', "not a Slurm memory size"),
        ('[sites]\nfixed = []\n', "unknown top-level table 'sites'"),
    ],
)
def test_a_bad_site_file_is_one_line(site, site_toml, message):
    site.write_site_settings(site_toml)
    with pytest.raises(BadInput) as info:  # exit 2, as every configuration error
        kinds.load_settings("slurm", "pull-image")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_site_only_tables_and_missing_files(site, monkeypatch):
    site.write_settings('[site]\nfixed = ["qos"]\n')
    with pytest.raises(ConfigError, match=r"a \[site\] table belongs in the site file"):
        kinds.load_settings("slurm", "pull-image")
    site.write_settings("")
    monkeypatch.setenv("BFJOBS_SITE_CONFIG", str(site.root / "nope.toml"))
    with pytest.raises(ConfigError, match=r"BFJOBS_SITE_CONFIG: .*nope\.toml' does not exist"):
        kinds.load_settings("slurm", "pull-image")
    monkeypatch.delenv("BFJOBS_SITE_CONFIG")
    monkeypatch.setattr("blackfish_jobs.constants.SITE_CONFIG", site.root / "etc" / "bfjobs.toml")
    assert kinds.load_settings("slurm", "pull-image").partition is None  # the default path may be absent


def test_render_uses_the_sites_partition_and_refuses_a_flag_that_changes_it(admin_site, cli):
    script = cli("render", "pull-image", "docker://alpine:3.20")
    assert script.exit_code == 0, script.stderr
    assert "#SBATCH --partition=transfer" in script.stdout and "#SBATCH --account=lab" in script.stdout
    refused = cli("render", "pull-image", "docker://alpine:3.20", "--partition", "cpu")
    assert refused.exit_code == 2 and refused.stdout == ""
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith("bfjobs: error: --partition partition: the site fixes this setting")


def test_config_show_names_each_settings_source(admin_site, cli):
    admin_site.write_settings('[profiles.slurm.download-model]\nmem = "3G"\n')
    shown = cli("config", "show")
    assert shown.exit_code == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == f"profile:   slurm ({admin_site.app_dir / 'profiles.cfg'})"
    assert lines[1] == f"site file: {admin_site.site_settings_path}"
    assert lines[2] == f"user file: {admin_site.app_dir / 'bfjobs.toml'}"
    assert "fixed by the site: partition, templates_dir" in lines
    assert "site profiles you do not have (ignored): othercluster" in lines
    model = lines[lines.index("[download-model]") + 1 :]
    row = {line.split()[0]: line.split(None, 2)[1:] for line in model if line.startswith("  ")}
    assert row["mem"] == ["3G", f"{admin_site.app_dir / 'bfjobs.toml'} [profiles.slurm.download-model]"]
    assert row["partition"] == ["transfer", f"{admin_site.site_settings_path} [defaults] (fixed)"]
    assert row["cpus_per_task"] == ["2", "default"]

    data = json.loads(cli("config", "show", "--profile", "laptop", "--json").stdout)
    assert data["version"] == 1 and data["profile"] == "laptop"
    assert data["site_file"] == {"path": str(admin_site.site_settings_path), "exists": True}
    assert data["fixed"] == ["partition", "templates_dir"] and data["ignored_site_profiles"] == ["othercluster"]
    pull = data["kinds"]["pull-image"]
    assert pull["modules"] == {"value": ["apptainer/1.3"], "from": f"{admin_site.site_settings_path} [defaults]"}
    assert pull["account"] == {"value": None, "from": "default"}  # [profiles.slurm] is not laptop's


def test_config_show_of_an_unknown_profile_is_one_line(admin_site, cli):
    result = cli("config", "show", "--profile", "slurn")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"bfjobs: error: profile 'slurn' not found in {admin_site.app_dir / 'profiles.cfg'} "
        "(profiles: slurm, laptop); did you mean 'slurm'?"
    )


@pytest.fixture
def etc_site_file(site, monkeypatch) -> Iterator[Path]:
    """The real default path, /etc/bfjobs/bfjobs.toml, with no BFJOBS_SITE_CONFIG: a file already
    there is kept aside and put back after, as is the folder's absence."""
    if os.geteuid() != 0:
        skip_or_fail("writing /etc/bfjobs/bfjobs.toml needs root")
    path = constants.SITE_CONFIG
    assert str(path) == "/etc/bfjobs/bfjobs.toml"
    monkeypatch.delenv("BFJOBS_SITE_CONFIG")
    made_folder = not path.parent.exists()
    path.parent.mkdir(mode=0o755, exist_ok=True)
    backup = path.with_name(f".{path.name}.bfjobs-test-{os.getpid()}")
    if path.exists():
        os.replace(path, backup)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)
        if backup.exists():
            os.replace(backup, path)
        if made_folder:
            path.parent.rmdir()


def test_the_site_file_at_its_default_path_is_read_and_named(etc_site_file, site):
    site.write_profiles()
    absent = site.bfjobs("config", "show", check=True).stdout.splitlines()
    assert absent[1] == "site file: /etc/bfjobs/bfjobs.toml (absent)"  # no file there: no site settings
    etc_site_file.write_text('[site]\nfixed = ["max_workers"]\n\n[defaults]\nmax_workers = 7\n')
    etc_site_file.chmod(0o644)
    lines = site.bfjobs("config", "show", check=True).stdout.splitlines()
    assert lines[1] == "site file: /etc/bfjobs/bfjobs.toml"
    assert "fixed by the site: max_workers" in lines
    row = next(line for line in lines if line.split()[:1] == ["max_workers"])
    assert row.split(None, 2)[1:] == ["7", "/etc/bfjobs/bfjobs.toml [defaults] (fixed)"]
    data = json.loads(site.bfjobs("config", "show", "--json", check=True).stdout)
    assert data["site_file"] == {"path": "/etc/bfjobs/bfjobs.toml", "exists": True}
    assert data["kinds"]["download-model"]["max_workers"] == {"value": 7, "from": "/etc/bfjobs/bfjobs.toml [defaults]"}
