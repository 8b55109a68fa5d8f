"""Shared fixtures and hooks: an isolated Blackfish home, the apptainer stand-in, the real Slurm cluster.

The helpers behind them live in the ``tests/support/`` package, imported as ``support``: tests/ has no
``__init__.py``, so pytest's default (prepend) import mode puts tests/ itself on ``sys.path``.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from support.blackfish import create_blackfish_db
from support.group import ADMINS, GROUP, RESEARCHER, Cluster
from support.hub import HubServer, make_demo_repo
from support.install import SiteInstall, install_site
from support.remote import Laptop
from support.site import STUB_BIN, Site, path_without_slurm, skip_or_fail, slurm_available, tmpfs_over
from support.slurm import DownPartition, make_call_log
from support.unprivileged import copy_bfjobs_for_nobody


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C tests send SIGINT to child processes: a suite started as a background job (``cmd &``
    in a script, where the shell sets SIGINT to ignored and every child would inherit that)
    gives them the default disposition again (a Python handler here resets to it at ``exec``)."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    # Tests never reach the internet: no registry is asked for Docker Hub's or ghcr.io's names
    # (docker://alpine:3.20 and the like are the stand-in's synthetic images). The tests of
    # pinning unset it and use the real registry on 127.0.0.1 (tests/support/registry.py).
    os.environ["BFJOBS_REGISTRY_OFFLINE"] = "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip Slurm tests when no cluster is up, unless CI demands one (then they fail loudly)."""
    if slurm_available():
        return
    if os.environ.get("BFJOBS_REQUIRE_SLURM"):
        return  # let them run and fail: CI must not pass by skipping the real cluster
    skip = pytest.mark.skip(reason="no Slurm cluster (run scripts/slurm-up.sh)")
    for item in items:
        if "slurm" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Site:
    s = Site.create(tmp_path)
    for var in ("BFJOBS_DB_URL", "BFJOBS_TEMPLATES_DIR", "BFJOBS_CONFIG", "HF_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("BLACKFISH_HOME_DIR", str(s.app_dir))
    s.write_site_settings("")  # an empty site file: no test reads the machine's /etc/bfjobs/bfjobs.toml
    monkeypatch.setenv("BFJOBS_SITE_CONFIG", str(s.site_settings_path))
    monkeypatch.setenv("PATH", f"{STUB_BIN}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_APPTAINER_LOG", str(s.apptainer_log))
    return s


@pytest.fixture(scope="session")
def no_slurm_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The test process' PATH (with the apptainer stand-in first) less Slurm's commands."""
    return path_without_slurm(tmp_path_factory.mktemp("no-slurm"), f"{STUB_BIN}{os.pathsep}{os.environ['PATH']}")


@pytest.fixture
def local_site(site: Site, no_slurm_path: str, monkeypatch: pytest.MonkeyPatch) -> Site:
    """A site on a machine without Slurm (no profiles.cfg): the built-in profile is ``local``."""
    monkeypatch.setenv("PATH", no_slurm_path)
    return site


@pytest.fixture
def cli() -> Callable[..., Result]:
    """Invoke the Click CLI in-process (CliRunner), the way sqlite-utils tests its commands."""
    from blackfish_jobs.cli import cli as command

    runner = CliRunner()

    def invoke(*args: str, **kwargs) -> Result:
        return runner.invoke(command, list(args), catch_exceptions=False, **kwargs)

    return invoke


@pytest.fixture
def slurm_site(site: Site) -> Iterator[Site]:
    """A site whose default profile submits to the real cluster with small resources."""
    site.configure(mem="200M")
    yield site


@pytest.fixture
def calls(tmp_path: Path):
    """A PATH directory whose Slurm clients log each call before running the real one."""
    return make_call_log(tmp_path / "calls")


@pytest.fixture
def down() -> Iterator[DownPartition]:
    """A DOWN partition of its own: jobs sent there stay PENDING; they are cancelled and it is removed after."""
    part = DownPartition()
    yield part
    subprocess.run(["scancel", "-p", part.name], capture_output=True)  # a failed test may leave its job there
    part.remove()


@pytest.fixture
def read_only_cache(site):
    """Make cache_dir read-only for everyone, root included: a read-only mount over it."""
    if os.geteuid() != 0:
        site.cache_dir.chmod(0o555)
        yield site.cache_dir
        site.cache_dir.chmod(0o755)
        return
    with tmpfs_over(site.cache_dir, "ro,size=1m") as path:
        yield path


@pytest.fixture
def hub(request: pytest.FixtureRequest):
    """A hub-compatible server on 127.0.0.1 serving the demo repo (tests/support/hub.py); parametrized
    indirectly with ``"mirror"`` (see :data:`hub_and_mirror`) it serves only what a minimal mirror serves."""
    with HubServer([make_demo_repo()], minimal=getattr(request, "param", "hub") == "mirror") as server:
        yield server


@pytest.fixture
def blackfish_site(slurm_site: Site, hub: HubServer) -> Site:
    """The Slurm site downloading from the test hub, with Blackfish's app database already in place."""
    slurm_site.configure(hub)
    create_blackfish_db(slurm_site.db_path)
    return slurm_site


#: Run a test against the Hub-like server and against a minimal mirror (no bare info endpoint, no optional fields).
hub_and_mirror = pytest.mark.parametrize("hub", ["hub", "mirror"], indirect=True)


@pytest.fixture(scope="session")
def site_install() -> Iterator[SiteInstall]:
    """bfjobs installed the way docs/install.md says (support.install), for tests running as other users."""
    install = install_site()
    yield install
    shutil.rmtree(install.root, ignore_errors=True)


@pytest.fixture(scope="module")
def nobody_env() -> Iterator[Path]:
    """A world-readable copy of bfjobs and its imports for user ``nobody`` (see support.unprivileged)."""
    root = copy_bfjobs_for_nobody()
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def cluster(site_install, hub) -> Iterator[Cluster]:
    """A site whose shared cache two admins keep as a group, and a researcher (support/group.py)."""
    try:
        for user in (*ADMINS, RESEARCHER):
            pwd.getpwnam(user)
        members = grp.getgrnam(GROUP).gr_mem
    except KeyError:
        skip_or_fail("needs the site's test users: run scripts/test-site.sh (as root, after scripts/slurm-up.sh)")
    assert set(ADMINS) <= set(members) and RESEARCHER not in members
    site = Cluster(site_install, hub.url)
    yield site
    shutil.rmtree(site.root, ignore_errors=True)


# The real OCI registries (tests/support/registry.py), for the tests of images pinned by digest.
@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory):
    """A docker-registry on 127.0.0.1, plain HTTP, anonymous: a ``support.registry.Registry``."""
    from support.registry import running_registry

    with running_registry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


@pytest.fixture(scope="session")
def private_registry(tmp_path_factory: pytest.TempPathFactory):
    """Another one needing HTTP basic auth: ``.credentials`` is (user, a password made up for the session)."""
    import secrets

    from support.registry import running_registry

    with running_registry(tmp_path_factory.mktemp("private-registry"), ("bfjobs", secrets.token_hex(12))) as reg:
        yield reg


@pytest.fixture
def fake_registry():
    """A hostile registry on 127.0.0.1 whose repository names choose its faults (tests/support/fake_registry.py)."""
    from support.fake_registry import FakeRegistry

    with FakeRegistry() as server:
        yield server


@pytest.fixture(scope="module")
def cluster_install() -> Iterator[SiteInstall]:
    """The remote tests' cluster user's own bfjobs: a second install, as a site module or a user's
    venv would be (tests/test_remote.py, tests/test_remote_session.py)."""
    from support.remote import cluster_login_profile, sshd_ready

    sshd_ready()
    if not slurm_available():
        skip_or_fail("Slurm is not running: run scripts/slurm-up.sh")
    install = install_site()
    cluster_login_profile("BFJOBS_REGISTRY_OFFLINE=1")
    yield install
    cluster_login_profile()
    shutil.rmtree(install.root, ignore_errors=True)


@pytest.fixture
def laptop(site_install: SiteInstall, cluster_install: SiteInstall) -> Iterator[Laptop]:
    """One remote test's laptop (tests/support/remote.py), its ssh masters closed afterwards."""
    made = Laptop(site_install, cluster_install)
    yield made
    made.close()
