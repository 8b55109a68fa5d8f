"""The test infrastructure for images pinned by digest: the real registry (support/registry.py), the hostile one
(support/fake_registry.py), the scripts that start a registry, and the apptainer stand-in's registry pulls
(tests/bin/apptainer). Fast: one registry per session, images of one small layer."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from support.fake_registry import HUGE_SIZE, FakeRegistry
from support.registry import INDEX_MEDIA_TYPE, Registry, sha256_digest
from support.site import REPO, STUB_BIN

APPTAINER = STUB_BIN / "apptainer"
UNKNOWN = "sha256:" + "0" * 64


class StandIn:
    """Runs the apptainer stand-in with its own HOME, cache and log, and no credentials from the test's env."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"
        self.out = root / "out"
        self.log = root / "apptainer.jsonl"
        self.home.mkdir()
        self.out.mkdir()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("APPTAINER", "FAKE_APPTAINER"))}
        self.env.update(HOME=str(self.home), APPTAINER_CACHEDIR=str(root / "cache"), FAKE_APPTAINER_LOG=str(self.log),
                        APPTAINER_TMPDIR=str(root / "tmp"))
        (root / "tmp").mkdir()

    def pull(self, uri: str, *flags: str, output: str = "image.sif", **env: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(APPTAINER), "pull", "--force", *flags, str(self.out / output), uri],
                              capture_output=True, text=True, env={**self.env, **env}, timeout=60)

    def sif(self, output: str = "image.sif") -> bytes:
        return (self.out / output).read_bytes()

    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def leftovers(self) -> list[str]:
        """What the pulls left: the output directory's files (a temp file in APPTAINER_TMPDIR counts too)."""
        return sorted(os.listdir(self.out)) + sorted(os.listdir(self.root / "tmp"))

    def docker_config(self, auths: dict) -> None:
        (self.home / ".apptainer").mkdir(exist_ok=True)
        (self.home / ".apptainer" / "docker-config.json").write_text(json.dumps({"auths": auths}))


@pytest.fixture
def stand_in(tmp_path: Path) -> StandIn:
    return StandIn(tmp_path)


@pytest.fixture
def fake(fake_registry: FakeRegistry) -> FakeRegistry:
    """conftest's ``fake_registry``, a shorter name."""
    return fake_registry


@pytest.fixture
def name(registry: Registry) -> Callable[[], str]:
    return registry.unique_name


def assert_fatal(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 255, (proc.stdout, proc.stderr)
    fatal = [line for line in proc.stderr.splitlines() if line.startswith("FATAL:   ")]
    assert fatal, proc.stderr
    for fragment in fragments:
        assert fragment in fatal[-1], fatal


# -- the real registry ------------------------------------------------------------------------------------------
def test_push_reports_the_registry_digest_and_moves_tags(registry: Registry, name) -> None:
    repo = name()
    first = registry.push(repo, "v1", "one")
    assert first.startswith("sha256:") and len(first) == 71
    assert registry.digest(repo, "v1") == first
    media_type, manifest = registry.manifest(repo, first)
    assert media_type == "application/vnd.oci.image.manifest.v1+json"  # skopeo pushes the OCI manifest as it is
    config = json.loads(registry.blob(repo, manifest["config"]["digest"]))
    assert (config["os"], config["architecture"]) == ("linux", "amd64")

    second = registry.push(repo, "v1", "two")
    assert second != first
    assert registry.digest(repo, "v1") == second
    assert registry.manifest(repo, first)[0]  # the old digest is still there, only the tag moved
    assert registry.digest(repo, "nope") is None
    assert registry.digest("no/such-repo", "v1") is None
    assert registry.uri(repo, "v1") == f"docker://{registry.host}/{repo}:v1"
    assert registry.uri(repo, first) == f"docker://{registry.host}/{repo}@{first}"


def test_push_arch(registry: Registry, name) -> None:
    repo = name()
    digest = registry.push(repo, "arm", "x", arch="arm64")
    _, manifest = registry.manifest(repo, digest)
    assert json.loads(registry.blob(repo, manifest["config"]["digest"]))["architecture"] == "arm64"


def test_push_index(registry: Registry, name) -> None:
    repo = name()
    index, platforms = registry.push_index(repo, "multi", {"amd64": "for amd64", "arm64": "for arm64"})
    assert registry.digest(repo, "multi") == index
    media_type, body = registry.manifest(repo, "multi")
    assert media_type == INDEX_MEDIA_TYPE
    listed = {m["platform"]["architecture"]: m["digest"] for m in body["manifests"]}
    assert listed == platforms and len(set(platforms.values())) == 2
    assert all(m["platform"]["os"] == "linux" for m in body["manifests"])
    for arch, digest in platforms.items():
        _, manifest = registry.manifest(repo, digest)
        config = json.loads(registry.blob(repo, manifest["config"]["digest"]))
        assert config["architecture"] == arch


def test_registry_scripts(tmp_path: Path, registry: Registry) -> None:
    """A second registry on the same root or on a port that answers is refused; down leaves a stale pid alone."""
    up, down = REPO / "scripts" / "registry-up.sh", REPO / "scripts" / "registry-down.sh"
    again = subprocess.run(["bash", str(up), str(registry.root), "1"], capture_output=True, text=True)
    assert again.returncode != 0 and "already serves" in again.stderr
    taken = subprocess.run(["bash", str(up), str(tmp_path / "r"), str(registry.port)], capture_output=True, text=True)
    assert taken.returncode != 0 and "already answers" in taken.stderr
    assert registry.digest("x/y", "v1") is None  # still serving
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / "pid").write_text(str(os.getpid()))
    proc = subprocess.run(["bash", str(down), str(stale)], capture_output=True, text=True)
    assert proc.returncode == 0 and "nothing stopped" in proc.stdout


# -- the stand-in against the real registry ---------------------------------------------------------------------
def test_pull_by_tag_and_by_digest(registry: Registry, name, stand_in: StandIn) -> None:
    repo = name()
    digest = registry.push(repo, "v1", "hello")
    by_tag = stand_in.pull(registry.uri(repo, "v1"), "--no-https", output="tag.sif")
    assert by_tag.returncode == 0, by_tag.stderr
    assert "INFO:    Fetching OCI image..." in by_tag.stdout and "INFO:    Creating SIF file..." in by_tag.stdout
    by_digest = stand_in.pull(registry.uri(repo, digest), "--no-https", output="digest.sif")
    assert by_digest.returncode == 0, by_digest.stderr
    sif = stand_in.sif("tag.sif")
    assert sif == stand_in.sif("digest.sif")
    assert sif.startswith(b"SIF_MAGIC\x00" + digest.encode())
    records = stand_in.records()
    assert [r["digest"] for r in records] == [digest, digest]
    assert records[0]["registry"] is True and records[0]["https"] is False and records[0]["auth"] is None
    assert stand_in.leftovers() == ["digest.sif", "tag.sif"]
    _, manifest = registry.manifest(repo, digest)
    for blob in [manifest["config"], *manifest["layers"]]:  # the blobs land in the cache
        assert (stand_in.root / "cache" / "blob" / blob["digest"].split(":")[1]).is_file()


def test_pull_without_no_https_fails_like_apptainer(registry: Registry, name, stand_in: StandIn) -> None:
    repo = name()
    registry.push(repo, "v1", "hello")
    proc = stand_in.pull(registry.uri(repo, "v1"))
    assert_fatal(proc, "While making image from oci registry", "server gave HTTP response to HTTPS client")
    assert stand_in.leftovers() == []


@pytest.mark.parametrize("ref", ["nope", UNKNOWN])
def test_pull_unknown_tag_or_digest(registry: Registry, name, stand_in: StandIn, ref: str) -> None:
    repo = name()
    registry.push(repo, "v1", "hello")
    proc = stand_in.pull(registry.uri(repo, ref), "--no-https")
    assert_fatal(proc, "While making image from oci registry: error fetching image to cache:", "manifest unknown")
    assert stand_in.leftovers() == []
    record = stand_in.records()[0]  # a failed pull is logged too, without a digest
    assert record["registry"] is True and "digest" not in record


def test_another_digest_gives_other_bytes(registry: Registry, name, stand_in: StandIn) -> None:
    repo = name()
    first = registry.push(repo, "v1", "first")
    assert stand_in.pull(registry.uri(repo, "v1"), "--no-https", output="1.sif").returncode == 0
    second = registry.push(repo, "v1", "second")
    assert stand_in.pull(registry.uri(repo, "v1"), "--no-https", output="2.sif").returncode == 0
    assert stand_in.pull(registry.uri(repo, first), "--no-https", output="pinned.sif").returncode == 0
    assert first != second
    assert stand_in.sif("1.sif") != stand_in.sif("2.sif")
    assert stand_in.sif("1.sif") == stand_in.sif("pinned.sif")  # pinned by digest: the tag moving changes nothing


def test_index_platform_chosen_by_arch(registry: Registry, name, stand_in: StandIn) -> None:
    repo = name()
    index, platforms = registry.push_index(repo, "v1", {"amd64": "a", "arm64": "b"})
    for arch in ("amd64", "arm64"):
        proc = stand_in.pull(registry.uri(repo, "v1"), "--no-https", "--arch", arch, output=f"{arch}.sif")
        assert proc.returncode == 0, proc.stderr
        assert stand_in.sif(f"{arch}.sif").startswith(b"SIF_MAGIC\x00" + platforms[arch].encode())
    by_index = stand_in.pull(registry.uri(repo, index), "--no-https", "--arch", "arm64", output="pinned.sif")
    assert by_index.returncode == 0, by_index.stderr
    assert stand_in.sif("pinned.sif") == stand_in.sif("arm64.sif")
    assert [(r["index_digest"], r["digest"]) for r in stand_in.records()] == [
        (index, platforms["amd64"]), (index, platforms["arm64"]), (index, platforms["arm64"])]
    proc = stand_in.pull(registry.uri(repo, "v1"), "--no-https", "--arch", "s390x", output="none.sif")
    assert_fatal(proc, "no image found in manifest list for architecture s390x")
    assert not (stand_in.out / "none.sif").exists()


def test_knobs_on_registry_pulls(registry: Registry, name, stand_in: StandIn) -> None:
    repo = name()
    registry.push(repo, "v1", "knobs")
    uri = registry.uri(repo, "v1")
    sized = stand_in.pull(uri, "--no-https", FAKE_APPTAINER_SIZE="100000")
    assert sized.returncode == 0 and len(stand_in.sif()) == 100000
    failed = stand_in.pull(uri, "--no-https", output="failed.sif", FAKE_APPTAINER_FAIL_ON=repo)
    assert_fatal(failed, "requested failure")
    assert stand_in.leftovers() == ["image.sif"]  # no failed.sif, no temp file


# -- private registry -------------------------------------------------------------------------------------------
def test_private_registry(private_registry: Registry, stand_in: StandIn) -> None:
    reg = private_registry
    assert reg.credentials is not None
    user, password = reg.credentials
    repo = reg.unique_name("private/image")
    digest = reg.push(repo, "v1", "secret stuff")
    uri = reg.uri(repo, "v1")

    anonymous = stand_in.pull(uri, "--no-https", output="anon.sif")
    assert_fatal(anonymous, "unauthorized: authentication required")
    wrong = stand_in.pull(uri, "--no-https", output="wrong.sif",
                          APPTAINER_DOCKER_USERNAME=user, APPTAINER_DOCKER_PASSWORD="not-" + password)
    assert_fatal(wrong, "unauthorized: authentication required")
    assert stand_in.leftovers() == []

    env = stand_in.pull(uri, "--no-https", output="env.sif",
                        APPTAINER_DOCKER_USERNAME=user, APPTAINER_DOCKER_PASSWORD=password)
    assert env.returncode == 0, env.stderr
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    for key in (reg.host, f"http://{reg.host}", f"docker://{reg.host}/"):
        stand_in.docker_config({"other.example:5000": {"auth": "eDp5"}, key: {"auth": auth}})
        config = stand_in.pull(uri, "--no-https", output="config.sif")
        assert config.returncode == 0, (key, config.stderr)
    assert stand_in.sif("env.sif") == stand_in.sif("config.sif")
    assert stand_in.sif("env.sif").startswith(b"SIF_MAGIC\x00" + digest.encode())

    records = stand_in.records()
    assert [(r["auth"], r["auth_source"]) for r in records] == [
        (None, None), ("basic", "env"), ("basic", "env"), ("basic", "config"), ("basic", "config"), ("basic", "config")]
    assert records[1]["APPTAINER_DOCKER_PASSWORD_SET"] is True and records[0]["APPTAINER_DOCKER_PASSWORD_SET"] is False
    log = stand_in.log.read_text()
    assert password not in log and auth not in log
    assert all(password not in p.stdout + p.stderr for p in (anonymous, wrong, env, config))


# -- the hostile registry ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("mode", "expected"), [
    ("wrong-digest", "does not match Docker-Content-Digest"),
    ("bad-digest", "does not match Docker-Content-Digest"),
    ("bad-digest-long", "does not match Docker-Content-Digest"),
    ("bad-digest-newline", "does not match Docker-Content-Digest"),
    ("bad-blob", "Digest did not match"),
    ("huge", "manifest too big"),
    ("huge-chunked", "manifest too big"),
    ("html", "unsupported manifest format"),
    ("missing", "manifest unknown"),
    ("redirect-loop", "reading manifest v1"),
])
def test_stand_in_refuses_what_a_hostile_registry_serves(fake: FakeRegistry, stand_in: StandIn, mode: str,
                                                         expected: str) -> None:
    proc = stand_in.pull(fake.uri(f"test/{mode}", "v1"), "--no-https")
    assert_fatal(proc, "While making image from oci registry", expected)
    assert stand_in.leftovers() == []


def test_stand_in_checks_the_digest_it_asked_for(fake: FakeRegistry, stand_in: StandIn) -> None:
    good = fake.manifest_digest("test/good")
    ok = stand_in.pull(fake.uri("test/good", good), "--no-https")
    assert ok.returncode == 0, ok.stderr
    no_digest = stand_in.pull(fake.uri("test/no-digest", "v1"), "--no-https", output="nd.sif")
    assert no_digest.returncode == 0, no_digest.stderr  # no header: the body's own digest is used
    assert stand_in.records()[-1]["digest"] == fake.manifest_digest("test/no-digest")


def test_stand_in_follows_blob_redirects_without_credentials(fake: FakeRegistry, stand_in: StandIn) -> None:
    user, password = fake.credentials
    proc = stand_in.pull(fake.uri("test/redirect", "v1"), "--no-https",
                         APPTAINER_DOCKER_USERNAME=user, APPTAINER_DOCKER_PASSWORD=password)
    assert proc.returncode == 0, proc.stderr
    blobs = [(r.status, r.query) for r in fake.requests if "/blobs/" in r.path]
    assert blobs == [(307, ""), (200, "cdn=1")] * 2  # the config, then the layer


def test_stand_in_bearer_token_flow(fake: FakeRegistry, stand_in: StandIn) -> None:
    proc = stand_in.pull(fake.uri("test/bearer", "v1"), "--no-https",
                         APPTAINER_DOCKER_USERNAME="someone", APPTAINER_DOCKER_PASSWORD="hunter2")
    assert proc.returncode == 0, proc.stderr
    assert stand_in.records()[-1]["auth"] == "bearer"
    token_requests = [r for r in fake.requests if r.path == "/token"]
    assert len(token_requests) == 1
    assert token_requests[0].auth == "basic" and token_requests[0].auth_user == "someone"
    assert token_requests[0].headers["Authorization"] == "Basic [redacted]"
    assert "scope=repository%3Atest%2Fbearer%3Apull" in token_requests[0].query
    blob_requests = [r for r in fake.requests if "/blobs/" in r.path]
    assert blob_requests and all(r.auth == "bearer" and r.status == 200 for r in blob_requests)
    assert "hunter2" not in stand_in.log.read_text() and fake.token not in stand_in.log.read_text()

    fake.clear_requests()
    anonymous = stand_in.pull(fake.uri("test/bearer", "v1"), "--no-https", output="anon.sif")
    assert anonymous.returncode == 0, anonymous.stderr  # anonymous tokens, as public registries hand out
    assert [r.auth for r in fake.requests if r.path == "/token"] == [None]


def test_stand_in_basic_mode_and_timeout(fake: FakeRegistry, stand_in: StandIn) -> None:
    user, password = fake.credentials
    denied = stand_in.pull(fake.uri("test/basic", "v1"), "--no-https")
    assert_fatal(denied, "unauthorized: authentication required")
    ok = stand_in.pull(fake.uri("test/basic", "v1"), "--no-https",
                       APPTAINER_DOCKER_USERNAME=user, APPTAINER_DOCKER_PASSWORD=password)
    assert ok.returncode == 0, ok.stderr
    slow = stand_in.pull(fake.uri("test/slow", "v1"), "--no-https", FAKE_APPTAINER_TIMEOUT="0.5")
    assert_fatal(slow, "timed out")


def test_fake_registry_modes_as_served(fake: FakeRegistry) -> None:
    """What a client of bfjobs' own sees: the headers and sizes each mode promises."""
    import http.client

    def get(name: str, method: str = "GET") -> tuple[http.client.HTTPResponse, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=10)
        conn.request(method, f"/v2/{name}/manifests/v1", headers={"Accept": "application/json"})
        resp = conn.getresponse()
        return resp, resp.read()

    resp, body = get("x/good")
    assert resp.getheader("Docker-Content-Digest") == sha256_digest(body) == fake.manifest_digest("x/good")
    resp, body = get("x/wrong-digest")
    assert resp.getheader("Docker-Content-Digest") != sha256_digest(body)
    assert get("x/bad-digest")[0].getheader("Docker-Content-Digest") == "sha256:xyz"
    resp, _ = get("x/no-digest", "HEAD")
    assert resp.status == 200 and resp.getheader("Docker-Content-Digest") is None
    resp, body = get("x/huge")
    assert int(resp.getheader("Content-Length")) == len(body) == HUGE_SIZE
    assert resp.getheader("Docker-Content-Digest") == sha256_digest(body)
    resp, body = get("x/huge-chunked")
    assert resp.getheader("Content-Length") is None and len(body) == HUGE_SIZE
    resp, _ = get("x/bearer")
    assert resp.status == 401
    assert resp.getheader("WWW-Authenticate") == (
        f'Bearer realm="http://{fake.host}/token",service="fake",scope="repository:x/bearer:pull"')
    resp, body = get("x/html")
    assert resp.status == 200 and resp.getheader("Content-Type") == "text/html"
    assert get("x/redirect-loop")[0].status == 302
    assert not any("Authorization" in r.headers for r in fake.requests)
    rec = fake.requests[0]
    assert rec["path"] == rec.path == "/v2/x/good/manifests/v1" and rec.headers["ACCEPT"] == "application/json"
    assert fake.mode("bad-digest/image") == fake.mode("test/bad-digest") == "bad-digest"
    assert fake.mode("test/image") == "good"


# -- the synthetic path stays as it was -------------------------------------------------------------------------
def test_other_hosts_stay_synthetic(stand_in: StandIn) -> None:
    """Docker Hub and ghcr.io names never reach a network: the file is derived from the URI, 1 MiB by default."""
    proc = stand_in.pull("docker://alpine:3.20", "--no-https", "--arch", "arm64")
    assert proc.returncode == 0, proc.stderr
    sif = stand_in.sif()
    assert len(sif) == 1024 * 1024 and sif.startswith(b"SIF_MAGIC\x00")
    assert "registry" not in stand_in.records()[0]
    other = stand_in.pull("docker://ghcr.io/x/y@" + UNKNOWN, output="other.sif", FAKE_APPTAINER_SIZE="1000")
    assert other.returncode == 0 and len(stand_in.sif("other.sif")) == 1000
    # localhost names too (tests/test_hostile.py pulls docker://localhost:5000/... as an edge case of syntax)
    local = stand_in.pull("docker://localhost:5000/a-b/c_d:v1.0-rc_1", output="local.sif")
    assert local.returncode == 0 and "registry" not in stand_in.records()[-1]
