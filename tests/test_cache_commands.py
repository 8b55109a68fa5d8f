"""``bfjobs cache ls|rm|prune|verify`` and ``bfjobs jobs prune`` on a local profile.

The caches are filled by the real huggingface_hub client from the test hub (tests/support/hub.py),
so their layout is the one Blackfish and huggingface_hub read; huggingface_hub's own
``scan_cache_dir`` (and its delete strategy's ``expected_freed_size``) is the oracle for sizes.
The same commands through a remote profile are in test_remote.py, on the real Slurm cluster's
caches in test_cache_slurm.py.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from support.blackfish import create_blackfish_db
from support.hub import DEMO_REPO_ID
from support.site import local_profile, with_tty

REPO_FOLDER = "models--" + DEMO_REPO_ID.replace("/", "--")


@pytest.fixture
def laptop(local_site, hub):
    """A local profile with its own home_dir and shared cache_dir, Blackfish's app database, and
    the demo repo's three revisions (v1.0, main, dev) in the home cache."""
    local_site.write_profiles({"laptop": local_profile(local_site.home_dir, local_site.cache_dir, default="true")})
    create_blackfish_db(local_site.db_path)
    fill(local_site.home_dir / "models", hub, "v1.0", "main", "dev")
    local_site.hub = hub
    return local_site


def fill(models: Path, hub, *revisions: str) -> dict[str, str]:
    """Download revisions with the real client, as a job would leave them; ``{revision: commit}``."""
    from huggingface_hub import snapshot_download

    found = {}
    for revision in revisions:
        path = snapshot_download(DEMO_REPO_ID, revision=revision, cache_dir=models, endpoint=hub.url)
        found[revision] = Path(path).name
    return found


def register(site, profile: str, model_dir: Path, commit: str) -> None:
    """A row in Blackfish's model table, as Blackfish (or a bfjobs job) writes it."""
    conn = sqlite3.connect(site.db_path)
    with conn:
        conn.execute(
            "INSERT INTO model (id, repo, profile, revision, image, created_at, updated_at, model_dir, metadata) "
            "VALUES (?, ?, ?, ?, 'text-generation', '2026-12-01 00:00:00', '2026-12-01 00:00:00', ?, '{}')",
            (uuid.uuid4().bytes, DEMO_REPO_ID, profile, commit, str(model_dir)),
        )
    conn.close()


def model_rows(site) -> set[tuple[str, str]]:
    conn = sqlite3.connect(site.db_path)
    try:
        return {(r[0], r[1]) for r in conn.execute("SELECT revision, model_dir FROM model")}
    finally:
        conn.close()


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every entry under ``root`` (links not followed) with its size and mtime: a picture of the cache."""
    found = {}
    for dirpath, dirnames, names in os.walk(root):
        for name in dirnames + names:
            st = os.lstat(os.path.join(dirpath, name))
            found[os.path.relpath(os.path.join(dirpath, name), root)] = (st.st_size, st.st_mtime_ns)
    return found


def caches(site) -> tuple[dict[str, tuple[int, int]], dict[str, tuple[int, int]]]:
    """A picture of both caches of the site's profile (the database beside them may change)."""
    return tree(site.home_dir), tree(site.cache_dir)


def contents(site) -> dict[str, int]:
    """What both caches hold, entry by entry with sizes, without times."""
    return {path: size for picture in caches(site) for path, (size, _mtime) in picture.items()}


def cache_json(cli, *args: str) -> dict:
    result = cli("cache", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def hub_scan(models: Path):
    from huggingface_hub import scan_cache_dir

    return scan_cache_dir(models)


# ------------------------------------------------------------------------------------- ls


def test_ls_lists_each_snapshot_and_image_with_what_huggingface_hub_counts(laptop, cli):
    home_models = laptop.home_dir / "models"
    repo = home_models / REPO_FOLDER
    scan = hub_scan(home_models)
    [info] = scan.repos
    expected = {r.commit_hash: r for r in info.revisions}
    main = (repo / "refs" / "main").read_text()
    register(laptop, "laptop", repo, main)
    register(laptop, "other-profile", repo, (repo / "refs" / "dev").read_text())  # another profile's row
    laptop.place_image("vllm-openai_v0.26.0.sif", "docker://vllm/vllm-openai:v0.26.0", b"x" * 1000)
    (laptop.home_dir / "images").mkdir(exist_ok=True)
    (laptop.home_dir / "images" / "mine_1.0.sif").write_bytes(b"y" * 10)  # no record: no source

    listed = cache_json(cli, "ls")
    models = [a for a in listed["artefacts"] if a["kind"] == "model"]
    assert {m["commit"] for m in models} == set(expected)
    for m in models:
        rev = expected[m["commit"]]
        assert m["where"] == "home" and m["repo_id"] == DEMO_REPO_ID
        assert m["path"] == str(rev.snapshot_path)
        assert m["bytes"] == rev.size_on_disk  # each blob once per snapshot, as huggingface_hub counts
        assert m["files"] == rev.nb_files
        assert set(m["refs"]) == set(rev.refs)
        assert m["blackfish"] is (m["commit"] == main)
        assert m["dangling"] == 0
    images = {a["name"]: a for a in listed["artefacts"] if a["kind"] == "image"}
    assert images["vllm-openai_v0.26.0.sif"]["where"] == "shared"
    assert images["vllm-openai_v0.26.0.sif"]["source"] == "docker://vllm/vllm-openai:v0.26.0"
    assert images["vllm-openai_v0.26.0.sif"]["sha256"] and images["vllm-openai_v0.26.0.sif"]["bytes"] == 1000
    assert images["mine_1.0.sif"]["source"] is None and images["mine_1.0.sif"]["where"] == "home"
    assert [c["where"] for c in listed["caches"]] == ["shared", "home"]
    assert all(c["free_bytes"] > 0 for c in listed["caches"])

    table = cli("cache", "ls")
    assert table.exit_code == 0
    assert "home   cache" in table.stdout and "free" in table.stdout
    line = rf"home\s+model\s+\S+ [kM]B\s+{DEMO_REPO_ID}\s+{main[:12]}\s+main\s+yes"
    assert re.search(line, table.stdout), table.stdout


def test_ls_skips_what_jobs_are_still_writing(laptop, cli):
    models = laptop.home_dir / "models"
    staging = models / f".bfjobs-staging-{REPO_FOLDER}@{'a' * 40}-123-0123abcd" / REPO_FOLDER / "snapshots" / ("a" * 40)
    staging.mkdir(parents=True)
    (staging / "config.json").write_text("{}")
    listed = cache_json(cli, "ls")
    assert all(".bfjobs" not in a["path"] for a in listed["artefacts"])
    assert len(listed["artefacts"]) == 3


# ------------------------------------------------------------------------------------- rm


def test_rm_one_revision_frees_what_only_it_uses_and_keeps_the_rest_whole(laptop, cli):
    home_models = laptop.home_dir / "models"
    repo = home_models / REPO_FOLDER
    v1 = (repo / "refs" / "v1.0").read_text()
    main = (repo / "refs" / "main").read_text()
    register(laptop, "laptop", repo, v1)
    register(laptop, "laptop", repo, main)
    strategy = hub_scan(home_models).delete_revisions(v1)  # huggingface_hub's own answer: what deleting it frees
    blob_paths = {str(p) for p in strategy.blobs}

    result = cache_json(cli, "rm", f"{DEMO_REPO_ID}@v1.0")
    [removed] = result["removed"]
    assert removed["commits"] == [v1] and removed["refs"] == ["v1.0"] and not removed["whole_repo"]
    assert result["bytes"] == strategy.expected_freed_size > 0
    assert removed["blobs"] == len(blob_paths)
    assert not (repo / "snapshots" / v1).exists() and not (repo / "refs" / "v1.0").exists()
    assert not any(Path(p).exists() for p in blob_paths)
    assert not (repo / "trees" / f"{v1}.json").exists()
    # what is left is whole: huggingface_hub finds nothing corrupt, bfjobs verifies every byte
    after = hub_scan(home_models)
    assert not after.warnings
    [left] = after.repos
    assert {r.commit_hash for r in left.revisions} == {main, (repo / "refs" / "dev").read_text()}
    verified = cli("cache", "verify", str(repo / "snapshots" / main))
    assert verified.exit_code == 0 and verified.stdout.startswith("OK"), verified.output
    assert (v1, str(repo)) not in model_rows(laptop) and (main, str(repo)) in model_rows(laptop)
    assert result["blackfish_rows"] == 1
    assert not [p for p in home_models.iterdir() if p.name.startswith(".bfjobs")]  # nothing hidden left behind


def test_rm_by_commit_repo_and_image(laptop, cli):
    home_models = laptop.home_dir / "models"
    repo = home_models / REPO_FOLDER
    dev = (repo / "refs" / "dev").read_text()
    assert cache_json(cli, "rm", f"{DEMO_REPO_ID}@{dev}")["removed"][0]["commits"] == [dev]
    every = cache_json(cli, "rm", DEMO_REPO_ID)
    [removed] = every["removed"]
    assert removed["whole_repo"] and len(removed["commits"]) == 2 and every["bytes"] > 0
    assert not repo.exists()
    image = laptop.place_image("alpine_3.20.sif", "docker://alpine:3.20", b"z" * 50, base=laptop.home_dir)
    gone = cache_json(cli, "rm", "alpine_3.20.sif")
    assert gone["bytes"] == 50 and not image.exists()
    assert not (laptop.home_dir / ".bfjobs" / "images" / "alpine_3.20.sif.json").exists()  # its record too


def test_dry_run_prints_what_would_go_and_touches_nothing(laptop, cli):
    before = caches(laptop)
    dry = cli("cache", "rm", f"{DEMO_REPO_ID}@v1.0", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert dry.stdout.startswith(f"would remove model {DEMO_REPO_ID}@") and "would be freed" in dry.stdout
    dry_json = cache_json(cli, "rm", f"{DEMO_REPO_ID}@v1.0", "--dry-run")
    assert caches(laptop) == before
    real = cache_json(cli, "rm", f"{DEMO_REPO_ID}@v1.0")
    assert real["bytes"] == dry_json["bytes"] and real["removed"][0]["commits"] == dry_json["removed"][0]["commits"]
    assert dry_json["dry_run"] and not real["dry_run"]


def test_a_target_not_in_the_cache_removes_nothing_of_the_others(laptop, cli):
    before = caches(laptop)
    result = cli("cache", "rm", f"{DEMO_REPO_ID}@v1.0", "other/model")
    assert result.exit_code == 2
    assert "'other/model' is not in the home cache" in result.stderr
    assert caches(laptop) == before


HOSTILE = [
    "../models--x",
    "/etc/passwd",
    "~/x",
    f"{DEMO_REPO_ID}@../../etc",
    f"{DEMO_REPO_ID}@main;rm -rf /",
    "bfjobs-test/*",
    "*.sif",
    "-rf",
    "--shared=x",
    "a\nb",
    "ns/name\x00",
    "x" * 5000,
    "../../images/x.sif",
    "models--bfjobs-test--tiny-model",
    "bfjobs-test/tiny--model",
    "$(touch /tmp/pwned)",
    "bfjobs-test/tiny-model@refs/../../x",
]


@pytest.mark.parametrize("target", HOSTILE)
def test_hostile_targets_are_one_line_exit_2_and_touch_nothing(laptop, cli, target):
    before = caches(laptop)
    result = cli("cache", "rm", "--", target)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bfjobs: error:"), result.stderr
    assert "Traceback" not in result.output
    assert caches(laptop) == before
    assert not Path("/tmp/pwned").exists()


def test_rm_never_follows_a_link_out_of_the_cache(laptop, cli, tmp_path):
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "precious.txt").write_text("keep me")
    (outside / "sub" / "deep.txt").write_text("keep me too")
    snapshot = next((laptop.home_dir / "models" / REPO_FOLDER / "snapshots").iterdir())
    (snapshot / "evil-file").symlink_to(outside / "precious.txt")
    (snapshot / "evil-dir").symlink_to(outside)
    result = cli("cache", "rm", f"{DEMO_REPO_ID}@{snapshot.name}")
    assert result.exit_code == 0, result.output
    assert not snapshot.exists()
    assert (outside / "precious.txt").read_text() == "keep me"
    assert (outside / "sub" / "deep.txt").read_text() == "keep me too"
    # a repo folder that is itself a link is not a repo of this cache
    (laptop.home_dir / "models" / "models--evil--link").symlink_to(outside)
    refused = cli("cache", "rm", "evil/link")
    assert refused.exit_code == 2 and "not in the home cache" in refused.stderr
    assert (outside / "precious.txt").exists()


@pytest.mark.parametrize("folder", ["blobs", "refs", "trees", "snapshots"])
def test_a_linked_folder_inside_a_repo_is_never_followed(laptop, cli, tmp_path, folder):
    """A repo whose blobs/, refs/, trees/ or snapshots/ is a link: rm refuses in one line, prune
    lists it as left, and nothing outside the cache is touched."""
    repo = laptop.home_dir / "models" / REPO_FOLDER
    outside = tmp_path / "outside"
    (repo / folder).rename(outside)
    (repo / folder).symlink_to(outside)
    (outside / "precious").write_text("d" * 40)  # looks like a blob, a ref, a listing...
    before = tree(outside)
    for args in ((f"{DEMO_REPO_ID}@v1.0",), (DEMO_REPO_ID,)):
        refused = cli("cache", "rm", *args)
        assert refused.exit_code == 1, refused.output
        assert f"{repo / folder} is a link" in refused.stderr and refused.stderr.count("\n") == 1
    pruned = cache_json(cli, "prune")
    assert [(x["what"], x["skipped"] is not None) for x in pruned["leftovers"]] == [("repo", True)]
    assert tree(outside) == before and (outside / "precious").read_text() == "d" * 40


def test_a_record_folder_that_is_a_link_is_not_followed(laptop, cli, tmp_path):
    image = laptop.place_image("alpine_3.20.sif", "docker://alpine:3.20", base=laptop.home_dir)
    records = laptop.home_dir / ".bfjobs"
    outside = tmp_path / "records"
    records.rename(outside)
    records.symlink_to(outside)
    assert cli("cache", "rm", image.name).exit_code == 0
    assert not image.exists() and (outside / "images" / "alpine_3.20.sif.json").exists()


def test_targets_naming_the_same_thing_remove_it_once(laptop, cli):
    repo = laptop.home_dir / "models" / REPO_FOLDER
    main = (repo / "refs" / "main").read_text()
    twice = cache_json(cli, "rm", f"{DEMO_REPO_ID}@main", f"{DEMO_REPO_ID}@{main}")
    assert [r["commits"] for r in twice["removed"]] == [[main]]
    whole = cache_json(cli, "rm", f"{DEMO_REPO_ID}@v1.0", DEMO_REPO_ID, f"{DEMO_REPO_ID}@dev")
    assert [r["target"] for r in whole["removed"]] == [DEMO_REPO_ID] and not repo.exists()


def test_a_dry_run_of_several_revisions_says_what_the_real_run_does(laptop, cli):
    """Several revisions of one repo are removed in turn: the dry run plans them in turn too (blobs
    two of them share go with the second; the last snapshot takes the repo folder)."""
    models = laptop.home_dir / "models"
    repo = models / "models--three--shared"
    uses = {"1" * 40: ("b1", "b2"), "2" * 40: ("b1", "b3"), "3" * 40: ("b2",)}
    (repo / "blobs").mkdir(parents=True)
    for name, size in (("b1", 3000), ("b2", 2000), ("b3", 5000)):
        (repo / "blobs" / name).write_bytes(b"x" * size)
    for commit, blobs in uses.items():
        (repo / "snapshots" / commit).mkdir(parents=True)
        for blob in blobs:
            (repo / "snapshots" / commit / f"{blob}.bin").symlink_to(f"../../blobs/{blob}")
    targets = (f"three/shared@{'1' * 40}", f"three/shared@{'2' * 40}")
    dry = cache_json(cli, "rm", *targets, "--dry-run")
    real = cache_json(cli, "rm", *targets)
    assert [r["bytes"] for r in dry["removed"]] == [r["bytes"] for r in real["removed"]] == [0, 8000]
    assert dry["bytes"] == real["bytes"] == 8000
    every = (f"{DEMO_REPO_ID}@v1.0", f"{DEMO_REPO_ID}@main", f"{DEMO_REPO_ID}@dev")
    dry = cache_json(cli, "rm", *every, "--dry-run")
    real = cache_json(cli, "rm", *every)
    assert [(r["bytes"], r["whole_repo"]) for r in dry["removed"]] == [
        (r["bytes"], r["whole_repo"]) for r in real["removed"]]
    assert real["removed"][-1]["whole_repo"] and not (models / REPO_FOLDER).exists()


def test_every_target_is_checked_as_it_will_be_removed_before_the_first_goes(laptop, cli, monkeypatch):
    """Removing every revision in turn makes the last one take the repo folder: that folder's whole
    tree must be removable, checked before anything goes (a folder another user's hf left, here
    simulated: tests run as root)."""
    repo = laptop.home_dir / "models" / REPO_FOLDER
    (repo / ".no_exist").mkdir()
    real = os.access

    def access(path, mode, **kw):
        return Path(path).name != ".no_exist" and real(path, mode, **kw)

    monkeypatch.setattr(os, "access", access)
    before = contents(laptop)
    refused = cli("cache", "rm", f"{DEMO_REPO_ID}@v1.0", f"{DEMO_REPO_ID}@main", f"{DEMO_REPO_ID}@dev")
    monkeypatch.undo()
    assert refused.exit_code == 2 and ".no_exist is not writable by you" in refused.stderr, refused.output
    assert contents(laptop) == before


def test_a_failure_after_some_targets_is_one_line_naming_them(laptop, cli, monkeypatch):
    import errno

    image = laptop.place_image("alpine_3.20.sif", "docker://alpine:3.20", base=laptop.home_dir)
    real = os.open

    def full(path, flags, *args, **kwargs):  # the image's lock file cannot be made: a full quota
        if str(path).endswith(f".bfjobs-lock-{image.name}") and flags & os.O_CREAT:
            raise OSError(errno.EDQUOT, "Disk quota exceeded", str(path))
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", full)
    failed = cli("cache", "rm", f"{DEMO_REPO_ID}@v1.0", image.name)
    monkeypatch.undo()
    assert failed.exit_code == 1, failed.output
    [line] = failed.stderr.strip().splitlines()
    assert "Disk quota exceeded" in line and f"removed before it: {DEMO_REPO_ID}@v1.0" in line, line
    assert image.exists() and not (laptop.home_dir / "models" / REPO_FOLDER / "refs" / "v1.0").exists()


def test_prune_leaves_a_repo_whose_snapshots_cannot_be_read(laptop, cli, monkeypatch):
    repo = laptop.home_dir / "models" / REPO_FOLDER
    (repo / "blobs" / "unused").write_bytes(b"u" * 10)
    real = os.scandir

    def scandir(path="."):
        if str(path) == str(repo / "snapshots"):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    before = contents(laptop)
    monkeypatch.setattr(os, "scandir", scandir)
    pruned = cache_json(cli, "prune")
    monkeypatch.undo()
    assert [(x["what"], "cannot read" in (x["skipped"] or "")) for x in pruned["leftovers"]] == [("repo", True)]
    assert contents(laptop) == before


def test_an_unreadable_snapshot_stops_a_removal_of_shared_blobs(laptop, cli, monkeypatch):
    """If another snapshot of the repo cannot be read, the blobs it uses are unknown: nothing goes
    (as another user's 0700 folder would do; root reads everything, so the refusal is simulated)."""
    repo = laptop.home_dir / "models" / REPO_FOLDER
    dev = repo / "snapshots" / (repo / "refs" / "dev").read_text()
    real = os.scandir

    def scandir(path="."):
        if str(path) == str(dev):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    before = contents(laptop)
    monkeypatch.setattr(os, "scandir", scandir)
    refused = cli("cache", "rm", f"{DEMO_REPO_ID}@v1.0")
    pruned = cache_json(cli, "prune")
    monkeypatch.undo()
    assert refused.exit_code == 2 and "cannot read" in refused.stderr and "nothing removed" in refused.stderr
    assert contents(laptop) == before  # (a lock file came and went: folders' times may differ)
    assert [x["what"] for x in pruned["leftovers"]] == ["repo"] and pruned["leftovers"][0]["skipped"]


def test_rm_without_shared_never_touches_the_shared_cache(laptop, cli):
    fill(laptop.cache_dir / "models", laptop.hub, "main")
    shared = tree(laptop.cache_dir)
    assert cli("cache", "rm", DEMO_REPO_ID).exit_code == 0
    assert tree(laptop.cache_dir) == shared
    assert not (laptop.home_dir / "models" / REPO_FOLDER).exists()
    assert cli("cache", "rm", DEMO_REPO_ID, "--shared").exit_code == 0
    assert not (laptop.cache_dir / "models" / REPO_FOLDER).exists()


# ------------------------------------------------------------------------------ running jobs

HOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from blackfish_jobs.node.publish import publish_lock
    with publish_lock(Path(sys.argv[1]), sys.argv[2], shared=sys.argv[3] == "shared"):
        print("held", flush=True)
        time.sleep(60)
    """
)


class Holder:
    """A process holding a publish lock as a running job does (a download holds its repo's lock
    shared and its commit's exclusively; a pull its image's)."""

    def __init__(self, directory: Path, name: str, shared: bool = False) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(directory), name, "shared" if shared else "exclusive"],
            stdout=subprocess.PIPE, text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "held"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def test_what_a_running_job_writes_is_refused_not_removed(laptop, cli):
    models = laptop.home_dir / "models"
    download = Holder(models, REPO_FOLDER, shared=True)  # a download into any commit of the repo
    try:
        before = caches(laptop)
        for target in (DEMO_REPO_ID, f"{DEMO_REPO_ID}@v1.0"):
            result = cli("cache", "rm", target)
            assert result.exit_code == 1, result.output
            assert "being written by a running job" in result.stderr
        assert cli("cache", "rm", target, "--dry-run").exit_code == 1
        assert caches(laptop) == before
    finally:
        download.stop()
    image = laptop.place_image("alpine_3.20.sif", "docker://alpine:3.20", base=laptop.home_dir)
    pull = Holder(image.parent, image.name)
    try:
        result = cli("cache", "rm", image.name)
        assert result.exit_code == 1 and "being written by a running job" in result.stderr
        assert image.exists()
    finally:
        pull.stop()
    assert cli("cache", "rm", image.name).exit_code == 0  # once the job has ended
    assert cli("cache", "rm", f"{DEMO_REPO_ID}@v1.0").exit_code == 0


def test_a_download_waits_for_a_removal_of_blobs_it_would_link(laptop, tmp_path):
    """The repo lock is the blob lock: while ``cache rm`` holds it exclusively, a download into
    another commit of the same repo cannot start linking the repo's blobs."""
    from blackfish_jobs.node.publish import publish_lock

    models = laptop.home_dir / "models"
    with publish_lock(models, REPO_FOLDER, wait=False) as held:
        assert held
        script = textwrap.dedent(
            """
            import sys
            from pathlib import Path
            from blackfish_jobs.node.publish import publish_lock
            with publish_lock(Path(sys.argv[1]), sys.argv[2], shared=True, wait=False) as got:
                print(got)
            """
        )
        out = subprocess.run([sys.executable, "-c", script, str(models), REPO_FOLDER], capture_output=True, text=True)
        assert out.stdout.strip() == "False"
    out = subprocess.run([sys.executable, "-c", script, str(models), REPO_FOLDER], capture_output=True, text=True)
    assert out.stdout.strip() == "True"
    assert not (models / f".bfjobs-lock-{REPO_FOLDER}").exists()  # the last holder removes it


def test_a_shared_holder_is_seen_by_anyone_and_the_last_one_out_removes_the_file(tmp_path):
    """``held_by_other`` asks F_GETLK on a read-only descriptor: another user, who cannot open the
    file for writing, still sees shared holders (a download into the repo)."""
    from blackfish_jobs.node import publish

    lock = tmp_path / f".bfjobs-lock-{REPO_FOLDER}"
    first, second = Holder(tmp_path, REPO_FOLDER, shared=True), Holder(tmp_path, REPO_FOLDER, shared=True)
    try:
        assert lock.exists() and publish.held_by_other(lock)
        old = time.time() - 3600  # old enough to pass for a killed job's, were it not held
        os.utime(lock, (old, old))
        publish._check_foreign(lock)  # held: wait for it (no error)
        first.stop()
        assert publish.held_by_other(lock)
    finally:
        second.stop()
    assert not publish.held_by_other(lock)
    with pytest.raises(publish.TaskError, match="is held by no job"):
        publish._check_foreign(lock)  # a file left behind, held by nobody
    publish._remove_if_unheld(lock)  # what a holder leaving at the same moment as another does
    assert not lock.exists()


def test_a_download_into_a_repo_waits_while_a_removal_holds_its_blobs(local_site, hub):
    """A real download (the node's code, a local job) takes the repo's lock shared before it looks
    at the repo's blobs: while ``cache rm`` holds it, the download waits; then it completes."""
    site = local_site
    site.write_profiles({"laptop": local_profile(site.home_dir, site.cache_dir, default="true")})
    models = site.home_dir / "models"
    models.mkdir()
    removal = Holder(models, REPO_FOLDER)  # what cache rm holds while it removes blobs
    proc = subprocess.Popen(
        [sys.executable, "-m", "blackfish_jobs", "submit", "download-model", DEMO_REPO_ID, "--revision", "v1.0",
         "--wait", "--json"],
        env=site.env(HF_ENDPOINT=hub.url), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        time.sleep(6)
        assert proc.poll() is None  # still waiting for the lock
        assert not (models / REPO_FOLDER / "snapshots").exists()
    finally:
        removal.stop()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert json.loads(out)["jobs"][0]["state"] == "COMPLETED"
    assert not (models / f".bfjobs-lock-{REPO_FOLDER}").exists()


READER = textwrap.dedent(
    """
    import os, sys, time
    snapshots = sys.argv[1]
    deadline = time.time() + float(sys.argv[2])
    half = seen = 0
    while time.time() < deadline:
        for commit in os.listdir(snapshots) if os.path.isdir(snapshots) else []:
            snapshot = os.path.join(snapshots, commit)
            names = []
            for dirpath, _dirs, files in os.walk(snapshot):
                names += [os.path.join(dirpath, f) for f in files]
            for name in names:
                try:
                    with open(name, "rb") as fh:
                        fh.read(1)
                except OSError:
                    if os.path.isdir(snapshot):  # the snapshot is still there but a file of it is not
                        half += 1
            seen += 1
    print(half, seen, flush=True)
    """
)


def _synthetic_repo(models: Path, files: int) -> tuple[str, str]:
    """A repo of two snapshots sharing half their blobs, each of ``files`` files: a removal that
    takes a while (the demo repo's few files go too fast to race)."""
    repo = models / "models--big--model"
    (repo / "blobs").mkdir(parents=True)
    commits = ("1" * 40, "2" * 40)
    for index, commit in enumerate(commits):
        snap = repo / "snapshots" / commit
        (snap / "sub").mkdir(parents=True)
        for n in range(files):
            blob = f"{'shared' if n % 2 else commit[:6]}-{n:06d}"
            (repo / "blobs" / blob).write_bytes(b"w" * 100)
            folder = snap / "sub" if n % 3 else snap
            link = folder / f"f{n}.bin"
            link.symlink_to(os.path.relpath(repo / "blobs" / blob, folder))
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ("main" if index else "old")).write_text(commit)
    return commits


def test_a_reader_never_sees_a_half_removed_snapshot(laptop, cli):
    models = laptop.home_dir / "models"
    old, new = _synthetic_repo(models, 3000)
    snapshots = models / "models--big--model" / "snapshots"
    readers = [
        subprocess.Popen([sys.executable, "-c", READER, str(snapshots), "4"], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    time.sleep(0.5)
    assert cli("cache", "rm", f"big/model@{old}").exit_code == 0  # half its blobs are the other's
    assert (snapshots / new).is_dir() and not (snapshots / old).exists()
    kept = [p for p in (snapshots / new).rglob("*") if p.is_symlink()]
    assert len(kept) == 3000 and all(p.is_file() for p in kept)  # every link of the other snapshot resolves
    time.sleep(0.3)
    assert cli("cache", "rm", "big/model").exit_code == 0
    for reader in readers:
        half, seen = map(int, reader.communicate(timeout=30)[0].split())
        assert seen > 0
        assert half == 0, f"a reader saw {half} missing file(s) in a snapshot still in place"


def test_a_long_removal_shows_progress_on_a_terminal(laptop):
    _synthetic_repo(laptop.home_dir / "models", 20000)
    argv = [sys.executable, "-m", "blackfish_jobs", "cache", "rm", "big/model"]
    code, shown = with_tty(argv, laptop.env(), timeout=120)
    assert code == 0, shown
    assert "removing: " in shown and " entries, " in shown, shown
    assert "removed model big/model (2 revisions) from the home cache" in shown
    assert not (laptop.home_dir / "models" / "models--big--model").exists()


# ------------------------------------------------------------------------------------- prune


def test_prune_removes_leftovers_no_job_owns_and_keeps_the_rest(laptop, cli):
    home = laptop.home_dir
    models, images = home / "models", home / "images"
    images.mkdir(exist_ok=True)
    repo = models / REPO_FOLDER
    main = (repo / "refs" / "main").read_text()
    killed = models / f".bfjobs-staging-{REPO_FOLDER}@{main}-4242-0123abcd"
    (killed / "x").mkdir(parents=True)
    (killed / "x" / "blob.incomplete").write_bytes(b"a" * 4000)
    running = models / f".bfjobs-staging-{REPO_FOLDER}@{'b' * 40}-4343-0123abcd"
    running.mkdir()
    partial = images / ".bfjobs-partial-4444-89abcdef-alpine_3.20.sif"
    partial.write_bytes(b"p" * 300)
    interrupted = models / f".bfjobs-removing-{REPO_FOLDER}@{'c' * 40}-0123abcd"
    (interrupted / "sub").mkdir(parents=True)
    (repo / "blobs" / "unused-blob").write_bytes(b"u" * 700)
    (repo / "refs" / "gone").write_text("d" * 40)
    stale_lock = models / f".bfjobs-lock-{REPO_FOLDER}@{'e' * 40}"
    stale_lock.write_text("")
    register(laptop, "laptop", repo, "f" * 40)  # a row whose snapshot is gone
    register(laptop, "laptop", repo, main)
    job = Holder(models, f"{REPO_FOLDER}@{'b' * 40}")  # a running download owns this staging folder
    try:
        before = caches(laptop)
        dry = cache_json(cli, "prune", "--dry-run")
        assert caches(laptop) == before
        found = {(x["what"], Path(x["path"]).name): x for x in dry["leftovers"]}
        assert found[("staging", killed.name)]["bytes"] == 4000
        assert found[("staging", running.name)]["skipped"] == "a running job holds its lock"
        assert found[("partial", partial.name)]["bytes"] == 300
        assert ("removing", interrupted.name) in found
        assert found[("blobs", "blobs")]["bytes"] == 700
        assert ("ref", "gone") in found and ("lock", stale_lock.name) in found
        assert dry["blackfish_rows"] == [{"repo_id": DEMO_REPO_ID, "commit": "f" * 40, "model_dir": str(repo)}]
        assert dry["bytes"] == 4000 + 300 + 700

        done = cache_json(cli, "prune")
        assert done["bytes"] == 4000 + 300 + 700
        assert not killed.exists() and not partial.exists() and not interrupted.exists()
        assert not (repo / "blobs" / "unused-blob").exists() and not (repo / "refs" / "gone").exists()
        assert not stale_lock.exists()
        assert running.exists()  # its job is running
        assert ("f" * 40, str(repo)) not in model_rows(laptop) and (main, str(repo)) in model_rows(laptop)
        still = [w for w in hub_scan(models).warnings if "/.bfjobs-" not in str(w)]
        assert not still  # every snapshot still whole (the running job's staging folder aside)
    finally:
        job.stop()


def test_prune_older_than_keeps_what_is_recent(laptop, cli):
    repo = laptop.home_dir / "models" / REPO_FOLDER
    fresh = repo / "blobs" / "fresh-unused"
    fresh.write_bytes(b"f" * 10)
    old = repo / "blobs" / "old-unused"
    old.write_bytes(b"o" * 20)
    week_ago = time.time() - 8 * 86400
    os.utime(old, (week_ago, week_ago))
    result = cache_json(cli, "prune", "--older-than", "7d")
    assert result["bytes"] == 20 and fresh.exists() and not old.exists()
    bad = cli("cache", "prune", "--older-than", "7 days")
    assert bad.exit_code == 2 and "--older-than" in bad.stderr


def test_prune_of_an_empty_repo_and_nothing_to_prune(laptop, cli):
    assert cli("cache", "prune").stdout.strip() == "nothing to prune"
    empty = laptop.home_dir / "models" / "models--gone--model"
    (empty / "blobs").mkdir(parents=True)
    (empty / "blobs" / "b").write_bytes(b"1" * 5)
    (empty / "refs").mkdir()
    (empty / "refs" / "main").write_text("a" * 40)
    result = cache_json(cli, "prune")
    assert [x["what"] for x in result["leftovers"]] == ["empty repo"] and not empty.exists()


# ------------------------------------------------------------------------------------- verify


def test_cache_verify_is_verify(laptop, cli):
    snapshot = next((laptop.home_dir / "models" / REPO_FOLDER / "snapshots").iterdir())
    new = cli("cache", "verify", str(snapshot), "--json")
    old = cli("verify", str(snapshot), "--json")
    assert new.exit_code == old.exit_code == 0
    assert json.loads(new.stdout) == json.loads(old.stdout)


# ------------------------------------------------------------------------------------- jobs prune


def test_jobs_prune_removes_finished_jobs_folders_never_a_live_ones(local_site):
    site = local_site
    done = site.submit_pull("docker://alpine:3.20", "--to", "home", "--wait")
    live = site.submit_pull("docker://alpine:3.21", "--to", "home", FAKE_APPTAINER_SLEEP="60")
    jobs_dir = Path(done["folder"]).parent
    assert {p.name for p in jobs_dir.iterdir()} >= {done["id"], live["id"]}
    try:
        kept = site.bfjobs("jobs", "prune", "--older-than", "1h", "--json")
        assert kept.returncode == 0 and json.loads(kept.stdout)["folders"] == []
        dry = site.bfjobs("jobs", "prune", "--dry-run")
        assert dry.returncode == 0 and f"would remove {done['folder']}" in dry.stdout
        assert Path(done["folder"]).is_dir()
        pruned = site.bfjobs("jobs", "prune", "--json")
        assert pruned.returncode == 0, pruned.stderr
        data = json.loads(pruned.stdout)
        assert [f["path"] for f in data["folders"]] == [done["folder"]] and data["kept_live"] == 1
        assert not Path(done["folder"]).exists() and Path(live["folder"]).is_dir()
        listed = site.bfjobs("list", "--json")
        assert done["id"] in listed.stdout  # the row keeps the result
    finally:
        site.bfjobs("cancel", live["id"])


def test_a_running_download_is_kept_and_a_killed_ones_leftovers_are_pruned(local_site):
    """A real download (a local job, from a slow hub): prune and jobs prune leave what it is
    writing; once it is killed outright (SIGKILL: no clean-up), prune removes its staging folder
    and its lock files."""
    import signal

    from support.hub import HubServer, make_demo_repo
    from support.site import json_job, wait_for

    site = local_site
    site.write_profiles({"laptop": local_profile(site.home_dir, site.cache_dir, default="true")})
    models = site.home_dir / "models"
    with HubServer([make_demo_repo()], delay_per_chunk=0.3) as hub:
        submitted = site.bfjobs("submit", "download-model", DEMO_REPO_ID, "--revision", "v1.0", "--json",
                                HF_ENDPOINT=hub.url)
        assert submitted.returncode == 0, submitted.stderr
        job = json_job(submitted.stdout)
        try:
            [staging] = wait_for(lambda: list(models.glob(".bfjobs-staging-*")), timeout=60)
            pruned = json.loads(site.bfjobs("cache", "prune", "--json").stdout)
            [kept] = [x for x in pruned["leftovers"] if x["what"] == "staging"]
            assert kept["skipped"] == "a running job holds its lock" and staging.is_dir()
            jobs = json.loads(site.bfjobs("jobs", "prune", "--json").stdout)
            assert jobs["folders"] == [] and jobs["kept_live"] == 1 and Path(job["folder"]).is_dir()
        finally:
            os.killpg(job["local_pid"], signal.SIGKILL)  # the job's own session: the fetch child too
    wait_for(lambda: json_job(site.bfjobs("status", job["id"], "--json").stdout)["state"] == "FAILED", timeout=60)
    left = sorted(p.name for p in models.iterdir() if p.name.startswith(".bfjobs-"))
    assert any(n.startswith(".bfjobs-staging-") for n in left) and any(n.startswith(".bfjobs-lock-") for n in left)
    done = json.loads(site.bfjobs("cache", "prune", "--json").stdout)
    assert {x["what"] for x in done["leftovers"] if x["removed"]} >= {"staging", "lock"}, done
    assert not [p.name for p in models.iterdir() if p.name.startswith(".bfjobs-")]
    assert json.loads(site.bfjobs("jobs", "prune", "--json").stdout)["folders"][0]["path"] == job["folder"]
