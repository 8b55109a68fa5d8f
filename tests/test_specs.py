"""Image URIs: what is accepted, what it is called on disk, and what is refused."""

from __future__ import annotations

import pytest

from blackfish_jobs import config, kinds
from blackfish_jobs.errors import BadInput
from blackfish_jobs.kinds import image, model

DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("uri", "filename"),
    [
        ("docker://ghcr.io/huggingface/text-generation-inference:latest", "text-generation-inference_latest.sif"),
        ("docker://vllm/vllm-openai:v0.26.0", "vllm-openai_v0.26.0.sif"),
        ("docker://alpine", "alpine_latest.sif"),
        ("docker://localhost:5000/team/tool:1.2", "tool_1.2.sif"),
        (f"docker://ubuntu@{DIGEST}", f"ubuntu_sha256-{'0123456789abcdef' * 4}.sif"),
        (f"docker://ubuntu:24.04@{DIGEST}", "ubuntu_24.04.sif"),
        ("oras://ghcr.io/org/image:1.0", "image_1.0.sif"),
        ("library://sylabsed/examples/lolcow:latest", "lolcow_latest.sif"),
        ("library://alpine", "alpine_latest.sif"),
        ("shub://vsoch/hello-world", "hello-world_latest.sif"),
        ("https://example.org/images/tool_2.0.sif", "tool_2.0.sif"),
        ("https://example.org/images/tool", "tool_latest.sif"),
    ],
)
def test_accepted_uris_and_file_names(uri, filename):
    assert image.parse_image_uri(uri).filename == filename


HOSTILE = [
    "docker://alpine;touch /tmp/pwned",
    "docker://alpine$(id)",
    "docker://alpine`id`",
    "docker://alpine:latest\nid",
    "docker://alpine:latest\r",
    "docker://alp ine",
    "docker://../../etc/passwd",
    "docker://alpine:..",
    "docker://ALPINE",
    "docker://alpine@sha256:xyz",
    "docker://alpine@sha256:" + "0" * 63,
    "http://example.org/x.sif",
    "file:///etc/passwd",
    "/etc/passwd",
    "alpine",
    "-rf",
    "--help",
    "docker://",
    "docker://alpine:" + "a" * 200,
    "docker://" + "a/" * 300 + "b",
    "https://example.org/x.sif?a=1&b=2",
    "https://example.org/../x.sif",
    "https://user:pw@example.org/x.sif",
    "docker://alpine:{{ 7*7 }}",
    "docker://alpine:%j",
    "docker://\u0430lpine",  # Cyrillic a
    "docker://alpine\u202e",
    "docker://alpine\x00",
    "",
]


@pytest.mark.parametrize("uri", HOSTILE)
def test_hostile_uris_are_refused_in_one_line(uri):
    with pytest.raises(BadInput) as info:
        image.parse_image_uri(uri)
    message = str(info.value)
    assert message.startswith("URI")
    assert "\n" not in message and "\r" not in message
    assert len(message) < 300


@pytest.mark.parametrize("name", ["../x.sif", "x", "x.sif;id", ".hidden.sif", "a/b.sif", "x.SIF", "é.sif"])
def test_bad_sif_names(name):
    with pytest.raises(BadInput):
        image.check_sif_name(name)


def test_destination_shared_or_home(site):
    site.write_profiles()
    profile = config.load_profile("slurm")
    settings = kinds.load_settings("slurm", "pull-image")
    shared = image.pull_image("docker://alpine:3.20", profile, settings)
    home = image.pull_image("docker://alpine:3.20", profile, settings, to="home", name="mine.sif")
    assert shared.target == site.cache_dir / "images" / "alpine_3.20.sif"
    assert home.target == site.home_dir / "images" / "mine.sif"
    assert "token" not in str(shared.request_record()).lower()


@pytest.mark.parametrize("repo_id", ["meta-llama/Llama-3.1-8B", "openai/whisper-large-v3", "a/b", "Org_1/m.v2"])
def test_valid_repo_ids(repo_id):
    assert model.check_repo_id(repo_id) == repo_id


@pytest.mark.parametrize(
    "repo_id",
    ["gpt2", "a/b/c", "a--b/c", "a/b--c", "a/b..c", "../etc", "a/.b", "a/b-", "-a/b", "a/b.git", "a/" + "x" * 97,
     "a/b c", "a/b;id", "a/$(id)", "a/b\n", "a/\u0430", "", "/b", "a/"],
)
def test_invalid_repo_ids(repo_id):
    with pytest.raises(BadInput) as info:
        model.check_repo_id(repo_id)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("rev", ["main", "v1.0", "refs/pr/1", "release/2024-06", "a" * 40])
def test_valid_revisions(rev):
    assert model.check_revision(rev) == rev


@pytest.mark.parametrize(
    "rev", ["..", "a..b", "-x", "x.lock", "a b", "x~1", "x^", "a:b", "@{1}", "@", ".hidden", "a/.b", "a//b", "a/",
            "$(id)", "a;b", "a\nb", "`id`", "A" * 40 + "x" * 200, "v1.0\u200f"],
)
def test_invalid_revisions(rev):
    with pytest.raises(BadInput):
        model.check_revision(rev)


@pytest.mark.parametrize("pattern", ["../*", "/etc/*", "*.bin;id", "$(id)", "a b", "x\n", "{{x}}"])
def test_invalid_patterns(pattern):
    with pytest.raises(BadInput):
        model.check_pattern("--include", pattern)


def test_download_destination(site):
    site.write_profiles()
    profile = config.load_profile("slurm")
    settings = kinds.load_settings("slurm", "download-model")
    home = model.download_model("org/model", profile, settings, include=("*.json",))
    shared = model.download_model("org/model", profile, settings, revision="v1", to="shared")
    assert home.target == site.home_dir / "models" / "models--org--model"
    assert shared.target == site.cache_dir / "models" / "models--org--model"
    assert home.task.allow_patterns == ("*.json",) and home.task.ignore_patterns is None
    assert shared.task.revision == "v1" and shared.task.shared


@pytest.mark.parametrize(
    ("params", "where"),
    [({}, "home"), ({"to": "home"}, "home"), ({"to": "shared"}, "shared"), ({"shared": True}, "shared"),
     ({"shared": True, "to": "shared"}, "shared")],
)
def test_models_take_to_shared_or_home_with_shared_as_its_alias(site, params, where):
    site.write_profiles()
    profile = config.load_profile("slurm")
    settings = kinds.load_settings("slurm", "download-model")
    spec = kinds.get("download-model").build("org/model", profile, settings, params, from_file=False)
    assert spec.where == where and spec.task.shared == (where == "shared")
    assert spec.target.parent == (site.cache_dir if where == "shared" else site.home_dir) / "models"


def test_shared_and_to_home_contradict(site):
    site.write_profiles()
    profile = config.load_profile("slurm")
    settings = kinds.load_settings("slurm", "download-model")
    with pytest.raises(BadInput, match="--shared means --to shared"):
        kinds.get("download-model").build("org/m", profile, settings, {"shared": True, "to": "home"}, from_file=False)
    with pytest.raises(BadInput, match="--to: expected 'shared' or 'home'"):
        model.download_model("org/m", profile, settings, to="elsewhere")
