"""profiles.cfg is read as Blackfish reads it; bfjobs.toml holds bfjobs' own settings."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from blackfish_jobs import config, kinds
from blackfish_jobs.errors import BadInput, ConfigError


def write(path: Path, text: str) -> None:
    path.write_text(textwrap.dedent(text))


def test_no_profiles_file_and_no_slurm_gives_builtin_local_profile(local_site):
    profile = config.load_profile()
    assert profile.builtin and profile.name == "local" and profile.schema == "local"
    assert profile.home_dir == local_site.app_dir.resolve() == profile.cache_dir
    assert profile.jobs_dir == local_site.app_dir.resolve() / "jobs" / "bfjobs"


def test_named_profile_without_profiles_file_is_an_error(site):
    with pytest.raises(ConfigError, match="not found"):
        config.load_profile("della")


LOCAL = "schema=local\nhome_dir=/tmp\ncache_dir=/tmp\n"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (f"[a]\n{LOCAL}[b]\n{LOCAL}default=yes\n", "b"),
        (f"[a]\n{LOCAL}[default]\n{LOCAL}", "default"),
        (f"[a]\n{LOCAL}[b]\n{LOCAL}", "a"),
        ("[a]\ntype=local\nhome_dir=/tmp\ncache_dir=/tmp\n", "a"),
    ],
)
def test_default_profile_rules(site, body, expected):
    (site.app_dir / "profiles.cfg").write_text(body)
    assert config.load_profile().name == expected


def test_slurm_profile_fields(site):
    site.write_profiles()
    p = config.load_profile("slurm")
    assert (p.schema, p.host, p.user, p.home_dir, p.cache_dir) == (
        "slurm", "localhost", "root", site.home_dir, site.cache_dir
    )
    assert config.load_profile().name == "slurm"  # default = true


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[x]\nschema=slurm\nhost=h\nuser=u\nhome_dir=/h\n", "missing required key 'cache_dir'"),
        ("[x]\nschema=slurm\nuser=u\nhome_dir=/h\ncache_dir=/c\n", "missing required key 'host'"),
        ("[x]\nschema=cloud\nhome_dir=/h\ncache_dir=/c\n", "'schema' must be"),
        ("[DEFAULT]\nschema=local\n[x]\nhome_dir=/h\ncache_dir=/c\n", "DEFAULT"),
        ("[x]\nschema=local\nhome_dir=/h%(oops)s\ncache_dir=/c\n", "x"),
        ("[x]\nschema=local\nhome_dir=/h/../etc\ncache_dir=/c\n", "'..'"),
        ("[x]\nschema=local\nhome_dir=/h;touch /tmp/p\ncache_dir=/c\n", "home_dir"),
        ("[x]\nschema=local\nhome_dir=relative\ncache_dir=/c\n", "absolute"),
        ("[x\nschema=local\n", "cannot be read"),
    ],
)
def test_bad_profiles_are_one_line_errors(site, body, message):
    (site.app_dir / "profiles.cfg").write_text(body)
    with pytest.raises(BadInput) as info:
        config.load_profile("x")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_profile_lists_known_ones(site):
    site.write_profiles()
    with pytest.raises(ConfigError, match=r"profile 'nope' not found .*slurm, laptop"):
        config.load_profile("nope")


def test_hostile_profile_name_refused(site):
    with pytest.raises(ConfigError, match="not a profile name"):
        config.load_profile("a;b")


def test_settings_layering(site):
    (site.app_dir / "profiles.cfg").write_text(f"[della]\n{LOCAL}[other]\n{LOCAL}")
    site.write_settings(
        """
        [defaults]
        time = "01:00:00"
        mem = "2G"

        [defaults.download-model]
        time = "10:00:00"

        [profiles.della]
        partition = "datamover"
        modules = ["apptainer/1.3"]
        setup = ["export HTTPS_PROXY=http://proxy:3128"]

        [profiles.della.pull-image]
        mem = "16G"
        """
    )
    s = kinds.load_settings("della", "pull-image")
    assert (s.time, s.mem, s.partition, s.cpus_per_task) == ("01:00:00", "16G", "datamover", 2)
    assert s.modules == ("apptainer/1.3",)
    d = kinds.load_settings("della", "download-model")
    assert (d.time, d.mem) == ("10:00:00", "2G")
    other = kinds.load_settings("other", "pull-image")
    assert other.partition is None and other.mem == "2G"
    merged = s.merged(**config.check_overrides(partition="cpu", mem=None))
    assert merged.partition == "cpu" and merged.mem == "16G"


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[defaults]\npartiton = "x"\n', "unknown setting 'partiton'"),
        ('[defaults]\ntime = "2 hours"\n', "not a Slurm time"),
        ('[defaults]\nmem = "8G; rm -rf /"\n', "not a Slurm memory size"),
        ('[defaults]\npartition = "a\\nb"\n', "control"),
        ('[defaults]\ncpus_per_task = 0\n', "from 1 to 1024"),
        ('[defaults]\nmodules = "apptainer"\n', "list of strings"),
        ('[defaults]\nmodules = ["$(id)"]\n', "not a module name"),
        ('[defaults]\napptainer = "apptainer; id"\n', "command name or absolute path"),
        ('[defaults]\ntemplates_dir = "../t"\n', "absolute"),
        ('[defaults]\nhf_endpoint = "https://x.org/?a=$(id)"\n', "http(s) URL"),
        ('[slurm]\npartition = "x"\n', "unknown top-level table"),
        ("[defaults\n", "not valid TOML"),
    ],
)
def test_bad_settings_are_refused(site, toml, message):
    site.write_settings(toml)
    with pytest.raises(BadInput) as info:
        kinds.load_settings("p", "pull-image")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_templates_dir_from_environment(site, monkeypatch, tmp_path):
    monkeypatch.setenv("BFJOBS_TEMPLATES_DIR", str(tmp_path))
    assert kinds.load_settings("p", "pull-image").templates_dir == tmp_path


def test_examples_are_valid(site, monkeypatch):
    """The shipped examples parse with the same code users run (their sites' directories are not here)."""
    examples = Path(__file__).resolve().parent.parent / "examples"
    for site_dir in sorted(p for p in examples.iterdir() if (p / "profiles.cfg").is_file()):
        monkeypatch.setenv("BLACKFISH_HOME_DIR", str(site_dir))
        profile = config.load_profile(check_dirs=False)
        settings = kinds.load_settings(profile.name, "pull-image")
        assert profile.schema == "slurm"
        assert settings.partition or settings.qos
    # the site install's site file, for a user with no file of their own and a profile named della
    monkeypatch.setenv("BFJOBS_SITE_CONFIG", str(examples / "site-install" / "etc-bfjobs.toml"))
    monkeypatch.setenv("BLACKFISH_HOME_DIR", str(examples / "della"))
    monkeypatch.setenv("BFJOBS_CONFIG", str(site.site_settings_path))  # an empty user file
    resolved = kinds.resolve_settings("della", "download-model")
    assert (resolved.settings.partition, resolved.settings.qos) == ("datamover", "dtn")
    assert resolved.fixed == ("partition", "templates_dir")
