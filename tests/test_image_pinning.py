"""Images pinned like models: a tag resolved to its manifest digest at submit, against a real registry.

Debian's docker-registry on 127.0.0.1 (tests/support/registry.py, started by scripts/registry-up.sh)
holds images built with umoci and pushed with skopeo; the apptainer stand-in fetches them over HTTP.
Local-profile tests first (fast), then the real Slurm cluster (docs/artefacts.md, "Pinned images").
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from support.site import REPO, json_job, json_jobs

from blackfish_jobs.node import records
from blackfish_jobs.node import registry as oci


@pytest.fixture
def pinning(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registries are asked (conftest sets BFJOBS_REGISTRY_OFFLINE for everything else)."""
    monkeypatch.delenv("BFJOBS_REGISTRY_OFFLINE", raising=False)


def _settings(site, *hosts: str, extra: str = "") -> None:
    entries = ", ".join(f'"{h}"' for h in hosts)
    site.write_settings(f"[defaults]\ninsecure_registries = [{entries}]\n{extra}")


@pytest.fixture
def pin_site(local_site, registry, pinning):
    """A local profile whose settings list the test registry as insecure (plain HTTP)."""
    _settings(local_site, registry.host)
    return local_site


def _record(image: Path) -> dict:
    return json.loads(records.image_record_path(image).read_text())


def _jobs(site) -> list[dict]:
    proc = site.bfjobs("list", "--json")
    assert proc.returncode == 0, proc.stderr
    return json_jobs(proc.stdout)


def _one_line_error(proc) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


# --------------------------------------------------------------------------- local profile


def test_pull_is_pinned_to_the_digest_the_tag_names(pin_site, registry):
    site = pin_site
    name = registry.unique_name()
    digest = registry.push(name, "v1", "first content")
    uri = registry.uri(name, "v1")
    pinned = f"docker://{registry.host}/{name}@{digest}"

    rendered = site.bfjobs("render", "pull-image", uri)
    assert rendered.returncode == 0, rendered.stderr
    assert f"BFJOBS_PULL_DIGEST={digest}" in rendered.stdout

    proc = site.bfjobs("submit", "pull-image", uri, "--wait", "--json")
    assert proc.returncode == 0, proc.stderr
    job = json_job(proc.stdout)
    assert job["state"] == "COMPLETED"
    assert job["request"]["digest"] == digest
    result = job["result"]
    assert (result["source"], result["tag"], result["digest"]) == (uri, "v1", digest)
    assert result["manifest"] == digest and result["pulled"] == pinned and result["pinned"] is True
    # the job pulled exactly that digest, over plain HTTP because the settings list the registry
    argv = site.apptainer_calls()[-1]["argv"]
    assert argv[-1] == pinned and "--no-https" in argv
    image = Path(result["path"])
    assert image.name == f"{name.rsplit('/', 1)[-1]}_v1.sif"
    record = _record(image)
    assert (record["source"], record["tag"], record["digest"], record["manifest"]) == (uri, "v1", digest, digest)

    status = json_job(site.bfjobs("status", job["id"], "--json", check=True).stdout)
    assert status["result"]["digest"] == digest
    listed = json.loads(site.bfjobs("cache", "ls", "--json", check=True).stdout)
    [entry] = [a for a in listed["artefacts"] if a["kind"] == "image"]
    assert (entry["source"], entry["tag"], entry["digest"], entry["upstream"]) == (uri, "v1", digest, None)

    again = site.bfjobs("submit", "pull-image", uri)
    assert again.returncode == 0, again.stderr
    assert "already present" in again.stdout and digest[:19] in again.stdout


def test_moved_tag_is_refused_with_both_digests_then_force_replaces(pin_site, registry):
    site = pin_site
    name = registry.unique_name()
    first = registry.push(name, "latest", "the old latest")
    uri = registry.uri(name, "latest")
    first_job = site.bfjobs("submit", "pull-image", uri, "--wait", "--json")
    assert first_job.returncode == 0, first_job.stderr
    image = Path(json_job(first_job.stdout)["result"]["path"])
    old_bytes = image.read_bytes()
    second = registry.push(name, "latest", "the new latest")
    assert second != first
    calls = len(site.apptainer_calls())

    proc = site.bfjobs("submit", "pull-image", uri)
    line = _one_line_error(proc)
    assert proc.returncode == 1
    assert first[:19] in line and second[:19] in line and "--force" in line, line
    assert len(_jobs(site)) == 1 and len(site.apptainer_calls()) == calls  # nothing submitted
    assert image.read_bytes() == old_bytes

    # an admin sees which tags moved
    checked = json.loads(site.bfjobs("cache", "ls", "--check-upstream", "--json", check=True).stdout)
    [entry] = [a for a in checked["artefacts"] if a["kind"] == "image"]
    assert entry["digest"] == first
    assert entry["upstream"] == {"digest": second, "moved": True, "error": None}
    table = site.bfjobs("cache", "ls", "--check-upstream", check=True).stdout
    assert f"MOVED to {second[7:19]}" in table and "UPSTREAM" in table

    forced = site.bfjobs("submit", "pull-image", uri, "--force", "--wait", "--json")
    assert forced.returncode == 0, forced.stderr
    result = json_job(forced.stdout)["result"]
    assert result["digest"] == second and result["already_present"] is False
    assert image.read_bytes() != old_bytes  # a different digest is a different image
    assert _record(image)["digest"] == second
    assert not [p for p in image.parent.iterdir() if p.name.startswith(".bfjobs-partial")]
    checked = json.loads(site.bfjobs("cache", "ls", "--check-upstream", "--json", check=True).stdout)
    assert [a["upstream"]["moved"] for a in checked["artefacts"] if a["kind"] == "image"] == [False]


def test_unknown_tag_submits_and_publishes_nothing(pin_site, registry):
    site = pin_site
    name = registry.unique_name()
    registry.push(name, "v1", "exists")
    proc = site.bfjobs("submit", "pull-image", registry.uri(name, "nope"))
    line = _one_line_error(proc)
    assert proc.returncode == 1
    assert "manifest unknown" in line and "nothing submitted" in line, line
    assert _jobs(site) == [] and site.apptainer_calls() == []
    jobs_dir = site.home_dir / "jobs" / "bfjobs"
    assert not jobs_dir.exists() or not list(jobs_dir.iterdir())
    assert not (site.cache_dir / "images").exists() or not list((site.cache_dir / "images").iterdir())
    missing = site.bfjobs("submit", "pull-image", registry.uri(name, "sha256:" + "0" * 64))
    assert "manifest unknown" in _one_line_error(missing)


def test_a_list_with_one_unknown_tag_submits_none(pin_site, registry):
    site = pin_site
    name = registry.unique_name()
    registry.push(name, "v1", "exists")
    listing = site.app_dir / "images.txt"
    listing.write_text(f"{registry.uri(name, 'v1')}\n{registry.uri(name, 'v2')}\n")
    proc = site.bfjobs("submit", "pull-image", "--from-file", str(listing))
    line = _one_line_error(proc)
    assert "--from-file: 1 image(s) the registry refused" in line and ":v2" in line, line
    assert _jobs(site) == []


def test_multi_arch_index_pinned_by_its_digest_and_the_platform_recorded(pin_site, registry):
    site = pin_site
    name = registry.unique_name()
    index, platforms = registry.push_index(name, "multi", {"amd64": "for x86", "arm64": "for arm"})
    proc = site.bfjobs("submit", "pull-image", registry.uri(name, "multi"), "--wait", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json_job(proc.stdout)["result"]
    assert result["digest"] == index
    assert result["manifest"] == platforms[oci.node_arch()]
    assert _record(Path(result["path"]))["manifest"] == platforms[oci.node_arch()]


def test_oras_references_are_pinned_too(pin_site, registry):
    """An oras:// image is a SIF artifact (as `apptainer push oras://` uploads it): pinned the same way."""
    site = pin_site
    name = registry.unique_name()
    sif = b"#!/usr/bin/env run-singularity\n" + b"SIF_MAGIC" + b"an oras artefact" * 64
    digest = registry.push_sif(name, "1.0", sif)
    uri = f"oras://{registry.host}/{name}:1.0"
    proc = site.bfjobs("submit", "pull-image", uri, "--wait", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json_job(proc.stdout)["result"]
    assert result["digest"] == digest and result["pulled"] == f"oras://{registry.host}/{name}@{digest}"
    assert Path(result["path"]).read_bytes() == sif
    # an ordinary container image is no SIF artifact: Apptainer's oras client (and the stand-in) refuse it
    other = registry.unique_name()
    registry.push(other, "1.0", "not a SIF")
    failed = site.bfjobs("submit", "pull-image", f"oras://{registry.host}/{other}:1.0", "--wait", "--json")
    assert failed.returncode == 1 and "unable to find SIF layer" in failed.stderr


def test_sources_without_digests_say_they_cannot_be_pinned(pin_site):
    proc = pin_site.bfjobs("submit", "pull-image", "library://lab/default/tool:1.0", "--to", "home", "--wait",
                           "--json")
    assert proc.returncode == 0, proc.stderr
    assert "library:// tags cannot be pinned to a digest" in proc.stderr
    result = json_job(proc.stdout)["result"]
    assert result["pinned"] is False and result["digest"] is None and result["tag"] == "1.0"


def test_plain_http_registry_must_be_listed(local_site, registry, pinning):
    """Not in insecure_registries: https is tried, fails, and the one line names the setting."""
    site = local_site
    name = registry.unique_name()
    registry.push(name, "v1", "plain http")
    proc = site.bfjobs("submit", "pull-image", registry.uri(name, "v1"))
    line = _one_line_error(proc)
    assert proc.returncode == 1 and f"insecure_registries: {registry.host}" in line, line
    assert _jobs(site) == []  # the node's Apptainer would meet the same TLS failure: nothing submitted


@pytest.mark.parametrize("bad", ["registry.example.org:99999", "a b:1", "x;touch /tmp/p:5000", "-h:1", ""])
def test_insecure_registries_entries_are_checked(local_site, bad):
    _settings(local_site, bad)
    proc = local_site.bfjobs("render", "pull-image", "docker://alpine:3.20")
    line = _one_line_error(proc)
    assert proc.returncode == 2 and "insecure_registries" in line, line


def test_check_upstream_is_refused_offline(local_site):
    proc = local_site.bfjobs("cache", "ls", "--check-upstream")
    assert "BFJOBS_REGISTRY_OFFLINE" in _one_line_error(proc)


# --------------------------------------------------------------------------- credentials


def _leaks(password: str, *roots: Path, user: str = "bfjobs") -> list[str]:
    """Files holding the password, or the ``Authorization: Basic`` value made of it."""
    import base64

    canaries = (password.encode(), base64.b64encode(f"{user}:{password}".encode()))
    found = []
    for root in roots:
        for path in [root] if root.is_file() else root.rglob("*"):
            try:
                if path.is_file() and any(c in path.read_bytes() for c in canaries):
                    found.append(str(path))
            except OSError:
                continue
    return found


def test_private_registry_credentials_are_read_where_apptainer_keeps_them(
    local_site, private_registry, pinning, tmp_path
):
    site = local_site
    _settings(site, private_registry.host)
    user, password = private_registry.credentials
    name = private_registry.unique_name()
    digest = private_registry.push(name, "v1", "private content")
    uri = private_registry.uri(name, "v1")

    denied = site.bfjobs("submit", "pull-image", uri)
    line = _one_line_error(denied)
    assert "APPTAINER_DOCKER_USERNAME" in line and "nothing submitted" in line, line

    proc = site.bfjobs("submit", "pull-image", uri, "--wait", "--json",
                       APPTAINER_DOCKER_USERNAME=user, APPTAINER_DOCKER_PASSWORD=password)
    assert proc.returncode == 0, proc.stderr
    assert json_job(proc.stdout)["result"]["digest"] == digest

    # apptainer registry login's file, read from $HOME at the moment of use
    import base64

    home = tmp_path / "userhome"
    (home / ".apptainer").mkdir(parents=True)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    config = {"auths": {private_registry.host: {"auth": auth}}}
    (home / ".apptainer" / "docker-config.json").write_text(json.dumps(config))
    second = private_registry.push(name, "v2", "more private content")
    proc = site.bfjobs("submit", "pull-image", private_registry.uri(name, "v2"), "--wait", "--json", HOME=str(home))
    assert proc.returncode == 0, proc.stderr
    assert json_job(proc.stdout)["result"]["digest"] == second

    assert _leaks(password, site.app_dir, site.home_dir, site.cache_dir, site.apptainer_log, user=user) == []
    for call in site.apptainer_calls():
        assert password not in json.dumps(call)


# --------------------------------------------------------------------------- hostile registries


@pytest.fixture
def client(fake_registry):
    return oci.Client((fake_registry.host,), timeout=3.0)


def _ref(fake_registry, mode: str, tag: str = "v1") -> oci.Reference:
    ref = oci.parse(f"docker://{fake_registry.host}/{mode}/image:{tag}")
    assert ref is not None
    return ref


@pytest.mark.parametrize(
    ("mode", "error", "text"),
    [
        ("bad-digest", oci.BadAnswer, "malformed digest"),
        ("huge", oci.BadAnswer, "larger than"),
        ("html", oci.BadAnswer, "manifest"),
        ("redirect-loop", oci.BadAnswer, "HTTP 30"),
        ("slow", oci.Unreachable, "did not answer"),
    ],
)
def test_hostile_answers_are_one_line_errors(fake_registry, client, mode, error, text):
    with pytest.raises(error) as caught:
        client.resolve(_ref(fake_registry, mode))
    message = str(caught.value)
    assert text in message and "\n" not in message and len(message) < 400, message


def test_digest_that_does_not_match_the_manifest_is_caught_before_the_pull(fake_registry, client):
    ref = _ref(fake_registry, "wrong-digest")
    resolved = client.resolve(ref)  # a HEAD's header is all a resolution sees
    with pytest.raises(oci.RegistryError):  # asked by that digest, the registry has no such manifest
        client.platform_manifest(ref, resolved.digest)


def test_no_digest_header_hashes_the_manifest(fake_registry, client):
    resolved = client.resolve(_ref(fake_registry, "no-digest"))
    assert oci.DIGEST.fullmatch(resolved.digest)


def test_anonymous_bearer_token_flow(fake_registry, client):
    resolved = client.resolve(_ref(fake_registry, "bearer"))
    assert oci.DIGEST.fullmatch(resolved.digest)
    asked = [r for r in fake_registry.requests if r["path"].startswith("/token")]
    assert asked and "Authorization" not in asked[-1]["headers"]  # anonymous: no credentials set


def test_hostile_digest_header_refuses_the_submit(local_site, fake_registry, pinning):
    _settings(local_site, fake_registry.host)
    proc = local_site.bfjobs("submit", "pull-image", f"docker://{fake_registry.host}/bad-digest/image:v1")
    line = _one_line_error(proc)
    assert proc.returncode == 1 and "malformed digest" in line, line
    assert _jobs(local_site) == []


# --------------------------------------------------------------------------- the real cluster

slurm = pytest.mark.slurm


@slurm
def test_pinned_pull_and_moved_tag_on_the_cluster(slurm_site, registry, pinning):
    site = slurm_site
    _settings(site, registry.host, extra='time = "00:10:00"\nmem = "200M"\ncpus_per_task = 1\n')
    name = registry.unique_name()
    digest = registry.push(name, "v1", "on the cluster")
    uri = registry.uri(name, "v1")
    proc = site.bfjobs("submit", "pull-image", uri, "--wait", "--json")
    assert proc.returncode == 0, proc.stderr
    job = json_job(proc.stdout)
    assert job["backend"] == "slurm" and job["result"]["digest"] == digest
    moved = registry.push(name, "v1", "moved on the cluster")
    line = _one_line_error(site.bfjobs("submit", "pull-image", uri))
    assert digest[:19] in line and moved[:19] in line
    forced = site.bfjobs("submit", "pull-image", uri, "--force", "--wait", "--json")
    assert forced.returncode == 0, forced.stderr
    assert json_job(forced.stdout)["result"]["digest"] == moved


@slurm
def test_registry_down_at_submit_is_resolved_on_the_node(slurm_site, pinning, tmp_path, down):
    """The login node cannot reach the registry: bfjobs says so, submits, and the node pins the tag."""
    from support.registry import Registry

    site = slurm_site
    reg = Registry().start(tmp_path / "registry")
    try:
        _settings(site, reg.host, extra='time = "00:10:00"\nmem = "200M"\ncpus_per_task = 1\n')
        name = reg.unique_name()
        digest = reg.push(name, "v1", "resolved on the node")
        port = reg.port
        subprocess.run(["bash", str(REPO / "scripts" / "registry-down.sh"), str(reg.root)], check=True, timeout=60)
        proc = site.bfjobs("submit", "pull-image", reg.uri(name, "v1"), "--partition", down.name, "--json")
        assert proc.returncode == 0, proc.stderr
        assert f"registry {reg.host} not reachable" in proc.stderr and "resolves the tag on the node" in proc.stderr
        job = json_job(proc.stdout)
        assert job["request"]["digest"] is None
        subprocess.run(["bash", str(REPO / "scripts" / "registry-up.sh"), str(reg.root), str(port)],
                       check=True, timeout=60, capture_output=True)
        subprocess.run(["scontrol", "update", f"PartitionName={down.name}", "State=UP"], check=True)
        waited = site.bfjobs("wait", job["id"], "--json")
        assert waited.returncode == 0, waited.stderr
        result = json_job(site.bfjobs("status", job["id"], "--json", check=True).stdout)["result"]
        assert result["digest"] == digest and result["pinned"] is True
        log = Path(json_job(site.bfjobs("status", job["id"], "--json").stdout)["stdout"]).read_text()
        assert "resolved on" in log and digest in log
    finally:
        reg.stop()


@slurm
def test_credentials_never_reach_job_folders_logs_or_the_database(slurm_site, private_registry, pinning):
    site = slurm_site
    _settings(site, private_registry.host, extra='time = "00:10:00"\nmem = "200M"\ncpus_per_task = 1\n')
    user, password = private_registry.credentials
    name = private_registry.unique_name()
    digest = private_registry.push(name, "v1", "private on the cluster")
    proc = site.bfjobs("submit", "pull-image", private_registry.uri(name, "v1"), "--wait", "--json",
                       APPTAINER_DOCKER_USERNAME=user, APPTAINER_DOCKER_PASSWORD=password)
    assert proc.returncode == 0, proc.stderr
    job = json_job(proc.stdout)
    assert job["result"]["digest"] == digest
    assert password not in proc.stdout + proc.stderr
    assert _leaks(password, site.app_dir, site.home_dir, site.cache_dir, site.apptainer_log, user=user) == []
    assert os.path.isdir(job["folder"])


@pytest.mark.parametrize("mode", ["bad-digest-newline", "bad-digest-long", "huge-chunked"])
def test_more_hostile_answers(fake_registry, client, mode):
    with pytest.raises(oci.BadAnswer) as caught:
        ref = _ref(fake_registry, mode)
        client.platform_manifest(ref, client.resolve(ref).digest)  # a GET after the HEAD: the node's request
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 400


def test_basic_auth_uses_apptainers_credentials(fake_registry, client, monkeypatch):
    monkeypatch.delenv("APPTAINER_DOCKER_USERNAME", raising=False)
    monkeypatch.setenv("APPTAINER_CONFIGDIR", "/nonexistent")
    with pytest.raises(oci.Denied, match="APPTAINER_DOCKER_USERNAME"):
        client.resolve(_ref(fake_registry, "basic"))
    user, password = fake_registry.credentials
    monkeypatch.setenv("APPTAINER_DOCKER_USERNAME", user)
    monkeypatch.setenv("APPTAINER_DOCKER_PASSWORD", password)
    assert oci.DIGEST.fullmatch(oci.Client((fake_registry.host,)).resolve(_ref(fake_registry, "basic")).digest)


def test_a_public_image_gets_an_anonymous_token_first(fake_registry, client, monkeypatch):
    """Credentials are sent to a token service only when an anonymous token is not enough."""
    monkeypatch.setenv("APPTAINER_DOCKER_USERNAME", "someone")
    monkeypatch.setenv("APPTAINER_DOCKER_PASSWORD", "canary-password-for-another-registry")
    client.resolve(_ref(fake_registry, "bearer"))
    tokens = [r for r in fake_registry.requests if r["path"].startswith("/token")]
    assert tokens and all("Authorization" not in r["headers"] for r in tokens)


def test_credentials_never_go_to_a_plain_http_token_realm(monkeypatch):
    monkeypatch.setenv("APPTAINER_DOCKER_USERNAME", "alice")
    monkeypatch.setenv("APPTAINER_DOCKER_PASSWORD", "s3cret")
    ref = oci.parse("docker://ghcr.io/org/img:1")
    client = oci.Client(())
    import time as _time

    for realm in ("http://ghcr.io/token", "http://evil.example/token", "ftp://ghcr.io/t", "https://[::1/t"):
        with pytest.raises(oci.BadAnswer, match="realm"):
            client._authorize(ref, f'Bearer realm="{realm}",service="x"', _time.monotonic() + 5, True)


def test_a_registry_dripping_its_answer_is_cut_at_the_deadline():
    """The deadline bounds the whole request, not each read: one byte every 0.3 s gets nowhere."""
    import socket
    import threading
    import time as _time

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    stop = threading.Event()

    def drip() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\n")
            while not stop.is_set():
                try:
                    conn.sendall(b"X-Drip: 1\r\n")
                except OSError:
                    return
                _time.sleep(0.3)

    threading.Thread(target=drip, daemon=True).start()
    host = f"127.0.0.1:{server.getsockname()[1]}"
    started = _time.monotonic()
    try:
        with pytest.raises(oci.Unreachable, match="did not answer within"):
            oci.Client((host,), timeout=1.5).resolve(oci.parse(f"docker://{host}/drip/image:v1"))
        assert _time.monotonic() - started < 4
    finally:
        stop.set()
        server.close()


def test_a_running_pull_of_an_older_digest_is_not_taken_for_the_moved_tag(pin_site, registry):
    site = pin_site
    name = registry.unique_name()
    first = registry.push(name, "v1", "slow first")
    uri = registry.uri(name, "v1")
    proc = site.bfjobs("submit", "pull-image", uri, "--json", FAKE_APPTAINER_SLEEP="30")
    assert proc.returncode == 0, proc.stderr
    job = json_job(proc.stdout)
    try:
        moved = registry.push(name, "v1", "moved while pulling")
        again = site.bfjobs("submit", "pull-image", uri)
        line = _one_line_error(again)
        assert f"job {job['id']} is pulling" in line and first[:19] in line and moved[:19] in line, line
        assert len(_jobs(site)) == 1
    finally:
        site.bfjobs("cancel", job["id"])


def test_a_token_service_without_anonymous_tokens_gets_the_credentials(fake_registry, client, monkeypatch):
    """Private ghcr.io packages: the anonymous token request is refused; the credentials are then used."""
    monkeypatch.delenv("APPTAINER_DOCKER_USERNAME", raising=False)
    monkeypatch.setenv("APPTAINER_CONFIGDIR", "/nonexistent")
    ref = _ref(fake_registry, "private-bearer")
    with pytest.raises(oci.Denied, match="APPTAINER_DOCKER_USERNAME"):
        client.resolve(ref)
    user, password = fake_registry.credentials
    monkeypatch.setenv("APPTAINER_DOCKER_USERNAME", user)
    monkeypatch.setenv("APPTAINER_DOCKER_PASSWORD", password)
    assert oci.DIGEST.fullmatch(oci.Client((fake_registry.host,)).resolve(ref).digest)


@slurm
def test_a_queued_force_pull_never_takes_the_image_back_to_an_older_digest(slurm_site, registry, pinning, down):
    """--force pinned to A waits in the queue; B is published meanwhile and the tag names B: the
    queued job replaces nothing (it would take every service back to A)."""
    site = slurm_site
    _settings(site, registry.host, extra='time = "00:10:00"\nmem = "200M"\ncpus_per_task = 1\n')
    name = registry.unique_name()
    first = registry.push(name, "v1", "the first")
    uri = registry.uri(name, "v1")
    assert site.bfjobs("submit", "pull-image", uri, "--wait", "--json").returncode == 0
    queued = site.bfjobs("submit", "pull-image", uri, "--force", "--partition", down.name, "--json")
    assert queued.returncode == 0, queued.stderr
    job = json_job(queued.stdout)
    assert job["request"]["digest"] == first
    second = registry.push(name, "v1", "the second")
    forced = site.bfjobs("submit", "pull-image", uri, "--force", "--wait", "--json")
    assert forced.returncode == 0, forced.stderr
    image = Path(json_job(forced.stdout)["result"]["path"])
    assert _record(image)["digest"] == second
    subprocess.run(["scontrol", "update", f"PartitionName={down.name}", "State=UP"], check=True)
    waited = site.bfjobs("wait", job["id"], "--json")
    assert waited.returncode == 1
    reason = json_job(site.bfjobs("status", job["id"], "--json").stdout)["reason"]
    assert "which the tag names now" in reason and first[:19] in reason and second[:19] in reason, reason
    assert _record(image)["digest"] == second


def test_a_list_of_images_in_place_is_checked_against_the_registry(pin_site, registry):
    """Each image of a --from-file list already in place is compared with what its tag names now
    (the registry asked for all of them at once, before the presence checks read the answers)."""
    site = pin_site
    name = registry.unique_name()
    digests = {tag: registry.push(name, tag, f"content {tag}") for tag in ("a", "b", "c")}
    listing = site.app_dir / "in-place.txt"
    listing.write_text("".join(f"{registry.uri(name, tag)}\n" for tag in digests))
    first = site.bfjobs("submit", "pull-image", "--from-file", str(listing), "--wait", "--json")
    assert first.returncode == 0, first.stderr
    again = site.bfjobs("submit", "pull-image", "--from-file", str(listing))
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("already present") == 3 and len(_jobs(site)) == 3
    moved = registry.push(name, "b", "b moved")
    refused = site.bfjobs("submit", "pull-image", "--from-file", str(listing))
    line = _one_line_error(refused)
    assert digests["b"][:19] in line and moved[:19] in line, line
    assert len(_jobs(site)) == 3
