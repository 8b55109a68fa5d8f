"""The fake Hub in ``tests/support/hub.py`` against the real huggingface_hub 2.4 client (no network)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import httpx2
import pytest
from huggingface_hub import HfApi, constants, file_download, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from support.hub import DEMO_REPO_ID, HubRepo, HubServer, MiB, make_demo_repo, pseudo_random_bytes
from support.site import wait_for

HUBSERVER_PY = Path(__file__).parent / "support" / "hub.py"
REPO_FOLDER = "models--bfjobs-test--tiny-model"
LOOPBACK = {"127.0.0.1", "::1", "localhost"}


@pytest.fixture(autouse=True)
def hermetic(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """No telemetry/update checks, never offline by accident, and fail any socket leaving the loopback."""
    for var in ("HF_HUB_DISABLE_TELEMETRY", "HF_HUB_DISABLE_UPDATE_CHECK", "HF_HUB_DISABLE_PROGRESS_BARS"):
        monkeypatch.setenv(var, "1")
    for var in ("HF_TOKEN", "HF_HUB_OFFLINE", "HF_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    outside: list[object] = []
    real_connect = socket.socket.connect

    def connect(sock: socket.socket, address: object) -> None:
        if isinstance(address, tuple) and address[0] not in LOOPBACK:
            outside.append(address)
            raise OSError(f"test tried to reach {address!r}")
        real_connect(sock, address)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "connect", connect)
    yield outside
    assert outside == [], "something tried to leave 127.0.0.1"


@pytest.fixture
def repo() -> HubRepo:
    return make_demo_repo()


@pytest.fixture
def hub(repo: HubRepo) -> Iterator[HubServer]:
    with HubServer([repo]) as server:
        yield server


@pytest.fixture
def no_retry_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    """``http_get`` sleeps 1 s before each resume attempt; skip that (the server uses Event.wait, not sleep)."""
    fake_time = SimpleNamespace(**{**vars(time), "sleep": lambda _seconds: None})
    monkeypatch.setattr(file_download, "time", fake_time)


def download(hub: HubServer, cache_dir: Path, revision: str = "main", **kwargs: object) -> Path:
    """Real ``snapshot_download`` of the demo repo from ``hub``."""
    kwargs.setdefault("token", False)
    path = snapshot_download(DEMO_REPO_ID, revision=revision, cache_dir=cache_dir, endpoint=hub.url, **kwargs)  # type: ignore[call-overload]
    return Path(path)


def read_tree(root: Path) -> dict[str, bytes]:
    """All files under ``root`` (following the snapshot symlinks), keyed by posix relative path."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def incomplete_files(cache_dir: Path) -> list[Path]:
    return sorted(cache_dir.rglob("*.incomplete"))


def raw(method: str, url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request with http.client (no redirects, no magic)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)


# -- downloads ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("revision", ["main", "dev", "v1.0", "sha-of-v1.0"])
def test_snapshot_download_revisions(hub: HubServer, repo: HubRepo, tmp_path: Path, revision: str) -> None:
    sha = repo.resolve(revision.removeprefix("sha-of-"))
    assert sha is not None
    requested = sha if revision.startswith("sha-of-") else revision
    snapshot = download(hub, tmp_path, requested)

    assert snapshot == tmp_path / REPO_FOLDER / "snapshots" / sha
    assert read_tree(snapshot) == repo.files_at(sha)
    refs = tmp_path / REPO_FOLDER / "refs"
    if requested == sha:  # a pinned sha is never resolved nor recorded as a ref
        assert not refs.exists()
        assert not [r for r in hub.requests if "/revision/" in r.path]
    else:
        assert (refs / revision).read_text() == sha
    # Blobs are named by sha256 for LFS files and by the git blob sha1 otherwise.
    commit = repo.commits[sha]
    for path, f in commit.files.items():
        assert Path(os.path.realpath(snapshot / path)).name == (f.sha256 or f.blob_id)
    # LFS bodies come from the CDN listener, without the Authorization header, everything else from the hub.
    cdn = [r for r in hub.requests if r.listener == "cdn"]
    assert sorted(r.query for r in cdn) == sorted(f"path={p}" for p, f in commit.files.items() if f.is_lfs)
    assert all(r.status in (200, 302) for r in hub.requests)  # 302: HEAD of an LFS file
    assert incomplete_files(tmp_path) == []


def test_allow_and_ignore_patterns(hub: HubServer, repo: HubRepo, tmp_path: Path) -> None:
    only_json = download(hub, tmp_path / "a", "v1.0", allow_patterns=["*.json"])
    assert set(read_tree(only_json)) == {"config.json", "tokenizer.json"}

    hub.clear_requests()
    no_weights = download(hub, tmp_path / "b", "v1.0", ignore_patterns=["*.safetensors", "*.bin"])
    assert set(read_tree(no_weights)) == set(repo.files_at("v1.0")) - {"model.safetensors", "pytorch_model.bin"}
    assert not [r for r in hub.requests if r.listener == "cdn"]

    sub = download(hub, tmp_path / "c", "dev", allow_patterns="sub/*")
    assert set(read_tree(sub)) == {"sub/extra.txt", "sub/dev-notes.txt"}
    # *.bin only exists at v1.0
    assert set(read_tree(download(hub, tmp_path / "d", "main", allow_patterns="*.bin"))) == set()


def test_branch_moves_on_the_hub(hub: HubServer, repo: HubRepo, tmp_path: Path) -> None:
    first = download(hub, tmp_path)
    new_sha = repo.commit({"config.json": '{"moved": true}\n'}, message="Move main")
    hub.clear_requests()

    second = download(hub, tmp_path)

    assert second.name == new_sha != first.name
    assert (tmp_path / REPO_FOLDER / "refs" / "main").read_text() == new_sha
    assert first.is_dir()  # the old snapshot stays
    assert (second / "config.json").read_bytes() == b'{"moved": true}\n'
    # Unchanged blobs are reused: only the changed file is fetched again.
    gets = [r.decoded_path for r in hub.requests if r.method == "GET" and "/resolve/" in r.path]
    assert gets == [f"/{DEMO_REPO_ID}/resolve/{new_sha}/config.json"]
    assert not [r for r in hub.requests if r.listener == "cdn"]


def test_cached_revisions_cost_zero_requests(hub: HubServer, repo: HubRepo, tmp_path: Path) -> None:
    sha = repo.branches["main"]
    first = download(hub, tmp_path, sha)
    download(hub, tmp_path, "main")  # also records refs/main
    hub.clear_requests()

    assert download(hub, tmp_path, sha) == first  # pinned + cached: no request at all
    assert download(hub, tmp_path, sha, local_files_only=True) == first
    assert download(hub, tmp_path, "main", local_files_only=True) == first
    assert hub.requests == []

    assert download(hub, tmp_path, "main") == first  # a branch costs exactly one call
    assert [r.decoded_path for r in hub.requests] == [f"/api/models/{DEMO_REPO_ID}/revision/main"]


def test_hf_hub_offline_env_makes_no_requests(hub: HubServer, repo: HubRepo, tmp_path: Path) -> None:
    expected = download(hub, tmp_path, "main")
    hub.clear_requests()
    code = (
        "from huggingface_hub import snapshot_download as s\n"
        f"print(s({DEMO_REPO_ID!r}, cache_dir={str(tmp_path)!r}, token=False))\n"
        f"print(s({DEMO_REPO_ID!r}, revision={repo.branches['main']!r}, cache_dir={str(tmp_path)!r}, token=False))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "home")}
    proc = run_python(code, env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(expected)] * 2
    assert hub.requests == []


def test_local_dir_download(hub: HubServer, repo: HubRepo, tmp_path: Path) -> None:
    out = snapshot_download(DEMO_REPO_ID, revision="dev", local_dir=tmp_path / "out", endpoint=hub.url, token=False)
    files = read_tree(Path(out))
    assert {k: v for k, v in files.items() if not k.startswith(".cache/")} == repo.files_at("dev")


def test_hf_hub_download_single_file_from_tag(hub: HubServer, repo: HubRepo, tmp_path: Path) -> None:
    path = hf_hub_download(
        DEMO_REPO_ID, "pytorch_model.bin", revision="v1.0", cache_dir=tmp_path, endpoint=hub.url, token=False
    )
    assert Path(path).read_bytes() == repo.files_at("v1.0")["pytorch_model.bin"]
    assert (tmp_path / REPO_FOLDER / "refs" / "v1.0").read_text() == repo.tags["v1.0"]
    assert [(r.method, r.listener, r.status) for r in hub.requests] == [("HEAD", "hub", 302), ("GET", "cdn", 200)]


def test_pr_ref_revision_is_url_encoded(hub: HubServer, repo: HubRepo, tmp_path: Path) -> None:
    sha = repo.set_branch("refs/pr/1", "dev")
    snapshot = download(hub, tmp_path, "refs/pr/1")
    assert snapshot.name == sha
    assert (tmp_path / REPO_FOLDER / "refs" / "refs" / "pr" / "1").read_text() == sha
    assert hub.requests[0].path == f"/api/models/{DEMO_REPO_ID}/revision/refs%2Fpr%2F1"
    refs = HfApi(endpoint=hub.url).list_repo_refs(DEMO_REPO_ID, include_pull_requests=True, token=False)
    assert [(r.ref, r.target_commit) for r in refs.pull_requests or []] == [("refs/pr/1", sha)]


def test_tree_pagination(hub: HubServer, repo: HubRepo, tmp_path: Path) -> None:
    hub.tree_page_size = 2
    entries = list(HfApi(endpoint=hub.url).list_repo_tree(DEMO_REPO_ID, recursive=True, revision="dev", token=False))
    assert [e.path for e in entries] == sorted([*repo.files_at("dev"), "sub"])
    tree_calls = [r for r in hub.requests if "/tree/" in r.path]
    assert len(tree_calls) == 4 and all("cursor=" in r.query for r in tree_calls[1:])
    assert read_tree(download(hub, tmp_path, "dev")) == repo.files_at("dev")


# -- metadata & errors --------------------------------------------------------------------------------------------
def test_model_info_refs_and_commits(hub: HubServer, repo: HubRepo) -> None:
    api = HfApi(endpoint=hub.url)
    info = api.model_info(DEMO_REPO_ID, token=False)
    assert (info.id, info.pipeline_tag, info.sha, info.private) == (
        DEMO_REPO_ID,
        "text-generation",
        repo.branches["main"],
        False,
    )
    assert sorted(s.rfilename for s in info.siblings or []) == sorted(repo.files_at("main"))

    dev = api.model_info(DEMO_REPO_ID, revision="dev", files_metadata=True, token=False)
    assert dev.sha == repo.branches["dev"]
    lfs = {s.rfilename: s.lfs for s in dev.siblings or [] if s.lfs}
    assert set(lfs) == {"model.safetensors"}
    assert lfs["model.safetensors"].sha256 == repo.commits[repo.branches["dev"]].files["model.safetensors"].sha256

    refs = api.list_repo_refs(DEMO_REPO_ID, token=False)
    assert {b.name: b.target_commit for b in refs.branches} == repo.branches
    assert {t.name: t.target_commit for t in refs.tags} == repo.tags
    assert [c.commit_id for c in api.list_repo_commits(DEMO_REPO_ID, revision="dev", token=False)] == [
        c.sha for c in repo.history("dev")
    ]


def test_not_found_errors(hub: HubServer, tmp_path: Path) -> None:
    api = HfApi(endpoint=hub.url)
    with pytest.raises(RepositoryNotFoundError) as missing_repo:
        snapshot_download("bfjobs-test/nope", cache_dir=tmp_path, endpoint=hub.url, token=False)
    assert not isinstance(missing_repo.value, GatedRepoError)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("bfjobs-test/nope", token="hf_anything")  # 404 when authenticated, 401 otherwise
    with pytest.raises(RevisionNotFoundError):
        download(hub, tmp_path, "no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(DEMO_REPO_ID, "config.json", revision="nope", cache_dir=tmp_path, endpoint=hub.url)
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(DEMO_REPO_ID, "missing.txt", cache_dir=tmp_path, endpoint=hub.url, token=False)
    assert list((tmp_path / REPO_FOLDER / ".no_exist").rglob("missing.txt"))  # the client caches the 404
    assert {r.status for r in hub.requests} == {401, 404}


def test_wire_protocol(hub: HubServer, repo: HubRepo) -> None:
    sha = repo.branches["dev"]
    model = repo.commits[sha].files["model.safetensors"]
    config = repo.commits[sha].files["config.json"]

    status, headers, body = raw("HEAD", f"{hub.url}/{DEMO_REPO_ID}/resolve/refs%2Fheads%2Fdev/config.json")
    assert status == 200 and body == b""
    assert (headers["x-repo-commit"], headers["etag"], headers["content-length"]) == (
        sha,
        f'"{config.blob_id}"',
        str(config.size),
    )

    status, headers, _ = raw("HEAD", f"{hub.url}/{DEMO_REPO_ID}/resolve/dev/model.safetensors")
    assert status == 302 and headers["location"].startswith(f"{hub.cdn_url}/cdn/{model.sha256}")
    assert (headers["x-repo-commit"], headers["x-linked-etag"], headers["x-linked-size"]) == (
        sha,
        f'"{model.sha256}"',
        str(model.size),
    )
    cdn = headers["location"]
    status, headers, body = raw("GET", cdn, {"Range": "bytes=0-7"})
    assert (status, headers["content-range"], body) == (206, f"bytes 0-7/{model.size}", model.data[:8])
    header_len = struct.unpack("<Q", body)[0]  # model.safetensors is a real safetensors file
    assert json.loads(model.data[8 : 8 + header_len])["weight"]["dtype"] == "U8"
    assert raw("GET", cdn, {"Range": f"bytes={model.size}-"})[0] == 416
    assert raw("GET", cdn, {"Range": "bytes=-4"})[2] == model.data[-4:]

    status, headers, body = raw("GET", f"{hub.url}/api/models/{DEMO_REPO_ID}/tree/{sha}/sub")
    assert status == 200 and [e["path"] for e in json.loads(body)] == ["sub/dev-notes.txt", "sub/extra.txt"]

    status, headers, body = raw("GET", f"{hub.url}/api/whatever")
    assert status == 404 and "error" in json.loads(body)
    assert raw("GET", f"{hub.cdn_url}/cdn/{'0' * 64}")[0] == 404
    # Never advertise Xet, so the client always takes the plain HTTP path.
    assert not [r for r in hub.requests if r.status is None]
    status, headers, body = raw("GET", f"{hub.url}/api/models/{DEMO_REPO_ID}/tree/main?recursive=true")
    assert b"xet" not in body.lower() and not [h for h in headers if h.startswith("x-xet")]


def test_same_origin_cdn_breaks_the_client(repo: HubRepo, tmp_path: Path) -> None:
    """Why the CDN has its own port: the client follows same-origin redirects in its HEAD and loses X-Repo-Commit."""
    with HubServer([repo], separate_cdn=False) as hub:
        assert hub.cdn_url == hub.url
        with pytest.raises(LocalEntryNotFoundError, match="X-Repo-Commit"):
            download(hub, tmp_path)


# -- auth -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("auth_mode", "error"), [("gated", GatedRepoError), ("private", RepositoryNotFoundError)])
def test_require_token(repo: HubRepo, tmp_path: Path, auth_mode: str, error: type[Exception]) -> None:
    with HubServer([repo], require_token="hf_secret", auth_mode=auth_mode) as hub:  # type: ignore[arg-type]
        with pytest.raises(error) as no_token:
            download(hub, tmp_path, token=False)
        assert no_token.value.response.status_code == 401  # type: ignore[attr-defined]
        if auth_mode == "private":
            assert not isinstance(no_token.value, GatedRepoError)

        with pytest.raises(HfHubHTTPError) as wrong:
            download(hub, tmp_path, token="hf_wrong")
        assert not isinstance(wrong.value, RepositoryNotFoundError)
        assert wrong.value.response.status_code == 401
        assert "Invalid credentials" in str(wrong.value)
        assert not (tmp_path / REPO_FOLDER / "snapshots").exists()

        hub.clear_requests()
        snapshot = download(hub, tmp_path, token="hf_secret")
        assert read_tree(snapshot) == repo.files_at("main")
        assert all(r.has_auth for r in hub.requests if r.listener == "hub")
        assert not any(r.has_auth for r in hub.requests if r.listener == "cdn")  # stripped for the CDN
        info = HfApi(endpoint=hub.url).model_info(DEMO_REPO_ID, token="hf_secret")
        assert (info.private, info.gated) == ((True, False) if auth_mode == "private" else (False, "auto"))


# -- failures ---------------------------------------------------------------------------------------------------
def test_mid_file_failure_is_retried(repo: HubRepo, tmp_path: Path, no_retry_sleep: None) -> None:
    with HubServer([repo], fail_mid_file="model.safetensors", fail_times=1) as hub:
        snapshot = download(hub, tmp_path)
        assert read_tree(snapshot) == repo.files_at("main")
        assert hub.failures_injected == 1
        cdn = [r for r in hub.requests if r.listener == "cdn"]
        assert [(r.aborted, r.body_bytes) for r in cdn] == [(True, 3 * MiB // 2), (False, 3 * MiB)]
        # The client reads 10 MiB chunks, so a smaller file is fetched again from scratch (no Range).
        assert "range" not in cdn[1].headers


def test_mid_file_failure_gives_up_then_succeeds(repo: HubRepo, tmp_path: Path, no_retry_sleep: None) -> None:
    with HubServer([repo], fail_mid_file="model.safetensors", fail_times=6) as hub:
        with pytest.raises(httpx2.RemoteProtocolError):  # 1 try + 5 retries without progress
            download(hub, tmp_path)
        assert hub.failures_injected == 6 and hub.fail_times == 0
        # The partial file is removed on error; the other files of the snapshot are complete.
        assert incomplete_files(tmp_path) == []
        snapshot = tmp_path / REPO_FOLDER / "snapshots" / repo.branches["main"]
        assert not (snapshot / "model.safetensors").exists() and (snapshot / "config.json").is_file()

        assert read_tree(download(hub, tmp_path)) == repo.files_at("main")


def test_connection_reset_is_not_retried(repo: HubRepo, tmp_path: Path) -> None:
    with HubServer([repo], fail_mid_file="config.json", fail_mode="reset") as hub:
        with pytest.raises(httpx2.ReadError):
            download(hub, tmp_path, allow_patterns="config.json")
        assert hub.failures_injected == 1
        assert incomplete_files(tmp_path) == []


def test_large_file_resumes_with_range(tmp_path: Path, no_retry_sleep: None) -> None:
    big = HubRepo(DEMO_REPO_ID)
    data = pseudo_random_bytes(12 * MiB, "big")
    big.commit({"big.safetensors": data})
    with HubServer([big], fail_mid_file="big.safetensors", fail_at=11 * MiB) as hub:
        assert (download(hub, tmp_path) / "big.safetensors").read_bytes() == data
        first, second = [r for r in hub.requests if r.listener == "cdn"]
        assert first.aborted and first.body_bytes == 11 * MiB
        assert (second.headers["range"], second.status) == (f"bytes={10 * MiB}-", 206)


def test_killed_download_leaves_incomplete_file(hub: HubServer, repo: HubRepo, tmp_path: Path) -> None:
    hub.delay_per_chunk = 0.02  # 3 MiB in 64 KiB chunks: about 1 s
    code = (
        "from huggingface_hub import snapshot_download as s\n"
        f"s({DEMO_REPO_ID!r}, revision='dev', cache_dir={str(tmp_path)!r}, token=False,\n"
        "  allow_patterns='*.safetensors')\n"
    )
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        wait_for(lambda: any(r.listener == "cdn" and r.body_bytes > 0 for r in hub.requests), 10, 0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    leftovers = incomplete_files(tmp_path)
    sha256 = repo.commits[repo.branches["dev"]].files["model.safetensors"].sha256
    assert [p.name.split(".")[0] for p in leftovers] == [sha256]  # <sha256>.<random>.incomplete
    wait_for(lambda: any(r.aborted for r in hub.requests if r.listener == "cdn"), 10, 0.01)  # server saw the disconnect

    hub.delay_per_chunk = 0
    assert read_tree(download(hub, tmp_path, "dev")) == repo.files_at("dev")
    assert incomplete_files(tmp_path) == leftovers  # random tmp names: nobody cleans them up


# -- CLI & script -----------------------------------------------------------------------------------------------
def test_hf_cli_download(hub: HubServer, repo: HubRepo, tmp_path: Path) -> None:
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "home")}
    cmd = ["hf", "download", DEMO_REPO_ID, "--cache-dir", str(tmp_path / "cache"), "--exclude", "*.md"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    snapshot = tmp_path / "cache" / REPO_FOLDER / "snapshots" / repo.branches["main"]
    assert str(snapshot) in proc.stdout
    assert read_tree(snapshot) == {k: v for k, v in repo.files_at("main").items() if not k.endswith(".md")}


def test_script_mode_serves_demo_repo(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(HUBSERVER_PY), "--port", "0", "--model-mib", "1.5"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        status, _, body = raw("GET", f"{url}/api/models/{DEMO_REPO_ID}")
        assert status == 200 and json.loads(body)["pipeline_tag"] == "text-generation"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)


# -- the minimal mirror switch ----------------------------------------------------------------------------------
def plain_404(status: int, headers: dict[str, str], body: bytes) -> bool:
    """A web framework's default 404: no Hub error headers."""
    hub_headers = {"x-error-code", "x-error-message"} & set(headers)
    return status == 404 and not hub_headers and (not body or json.loads(body) == {"detail": "Not Found"})


def test_minimal_mirror_serves_only_snapshot_downloads_requests(repo: HubRepo, tmp_path: Path) -> None:
    main = repo.branches["main"]
    with HubServer([repo], minimal=True) as mirror:
        base = f"{mirror.url}/api/models/{DEMO_REPO_ID}"
        status, _, body = raw("GET", f"{base}/revision/main")
        assert status == 200 and json.loads(body) == {"id": DEMO_REPO_ID, "sha": main}  # nothing optional
        for path in ("", "/refs", f"/commits/{main}", "/tree/main?recursive=true", f"/tree/{main}"):
            assert plain_404(*raw("GET", base + path)), path
        assert plain_404(*raw("HEAD", f"{mirror.url}/{DEMO_REPO_ID}/resolve/main/config.json"))
        assert plain_404(*raw("GET", f"{mirror.url}/api/datasets/{DEMO_REPO_ID}/revision/main"))
        # the endpoints it serves still say why a repo or revision is missing, as the Hub does
        assert raw("GET", f"{mirror.url}/api/models/no/such/revision/main")[1]["x-error-code"] == "RepoNotFound"
        assert raw("GET", f"{base}/revision/nope")[1]["x-error-code"] == "RevisionNotFound"
        # the real client: the bare info endpoint fails with a bare 404, the explicit revision works
        api = HfApi(endpoint=mirror.url)
        with pytest.raises(HfHubHTTPError) as bare:
            api.model_info(DEMO_REPO_ID)
        assert type(bare.value) is HfHubHTTPError and bare.value.response.status_code == 404
        info = api.model_info(DEMO_REPO_ID, revision="main")
        assert info.sha == main and info.pipeline_tag is None and info.siblings is None
        with pytest.raises(RevisionNotFoundError):
            api.model_info(DEMO_REPO_ID, revision="nope")
        # ... and snapshot_download gets every revision kind through it
        for revision in ("main", "v1.0", repo.branches["dev"]):
            assert read_tree(download(mirror, tmp_path, revision)) == repo.files_at(revision)


def test_unserved_routes_answer_a_plain_404(repo: HubRepo, tmp_path: Path) -> None:
    with HubServer([repo], unserved={"tree"}) as hub:
        assert raw("GET", f"{hub.url}/api/models/{DEMO_REPO_ID}")[0] == 200  # the rest as the Hub
        with pytest.raises(LocalEntryNotFoundError) as failed:  # snapshot_download hides the answer...
            download(hub, tmp_path)
        cause = failed.value.__cause__  # ... behind "not in the cache"; the 404 is its cause
        assert isinstance(cause, HfHubHTTPError) and cause.response.status_code == 404
        assert "x-error-code" not in {k.lower() for k in cause.response.headers}


def test_hf_cli_download_from_minimal_mirror(repo: HubRepo, tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, str(HUBSERVER_PY), "--port", "0", "--minimal"], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert plain_404(*raw("GET", f"{url}/api/models/{DEMO_REPO_ID}"))
        env = {**os.environ, "HF_ENDPOINT": url, "HF_HOME": str(tmp_path / "home")}
        cmd = ["hf", "download", DEMO_REPO_ID, "--revision", "v1.0", "--cache-dir", str(tmp_path / "cache")]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        snapshot = tmp_path / "cache" / REPO_FOLDER / "snapshots" / repo.tags["v1.0"]
        assert read_tree(snapshot) == repo.files_at("v1.0")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
