"""The test hub (``tests/support/hub.py``) against the real huggingface_hub 2.4 client (no network): what
bfjobs relies on - every revision kind, the Hub's error answers, the wire protocol, the token, the fault
switches and the minimal-mirror switch. huggingface_hub's own behaviour is not tested here."""

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
from support.hub import DEMO_FOLDER, DEMO_REPO_ID, HubRepo, HubServer, MiB, make_demo_repo, snapshot_files

HUBSERVER_PY = Path(__file__).parent / "support" / "hub.py"
REPO_FOLDER = DEMO_FOLDER
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


read_tree = snapshot_files


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


# -- metadata & errors --------------------------------------------------------------------------------------------
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


# -- auth -------------------------------------------------------------------------------------------------------
def test_require_token(repo: HubRepo, tmp_path: Path) -> None:
    with HubServer([repo], require_token="hf_secret") as hub:
        with pytest.raises(GatedRepoError) as no_token:
            download(hub, tmp_path, token=False)
        assert no_token.value.response.status_code == 401

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
        assert (info.private, info.gated) == (False, "auto")


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


def test_connection_reset_is_not_retried(repo: HubRepo, tmp_path: Path) -> None:
    with HubServer([repo], fail_mid_file="config.json", fail_mode="reset") as hub:
        with pytest.raises(httpx2.ReadError):
            download(hub, tmp_path, allow_patterns="config.json")
        assert hub.failures_injected == 1
        assert incomplete_files(tmp_path) == []


# -- script -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("minimal", [False, True], ids=["hub", "mirror"])
def test_script_mode_serves_demo_repo(minimal: bool) -> None:
    args = ["--minimal"] if minimal else ["--model-mib", "1.5"]
    proc = subprocess.Popen([sys.executable, str(HUBSERVER_PY), *args], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if minimal:
            assert plain_404(*raw("GET", f"{url}/api/models/{DEMO_REPO_ID}"))
        else:
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


