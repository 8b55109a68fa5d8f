"""The node package stands apart: what a compute node imports (or unpickles) reaches no client module.

A job's pickle names the task and its request by module path; unpickling it on the node must not
pull in the login node's validation, configuration, database, tracking or Click.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from submitit.core.utils import DelayedSubmission

from blackfish_jobs.node import download, pull
from blackfish_jobs.node.requests import DownloadModel, PullImage

REPO = Path(__file__).resolve().parent.parent
#: The only bfjobs modules the node side may load: its own package and the base layer.
ALLOWED = {"blackfish_jobs", "blackfish_jobs.errors", "blackfish_jobs.constants", "blackfish_jobs.layout"}

_LOADED = "import json, sys; print(json.dumps(sorted(m for m in sys.modules if m.startswith('blackfish_jobs'))))"


def loaded_after(code: str) -> set[str]:
    """The ``blackfish_jobs`` modules a fresh interpreter holds after running ``code``."""
    proc = subprocess.run(
        [sys.executable, "-c", f"{code}\n{_LOADED}"], capture_output=True, text=True, check=True, cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    return set(json.loads(proc.stdout.splitlines()[-1]))


def client_side(modules: set[str]) -> set[str]:
    return {m for m in modules if m not in ALLOWED and not m.startswith("blackfish_jobs.node")}


def test_node_package_imports_nothing_client_side():
    modules = loaded_after(
        "import blackfish_jobs.node.download, blackfish_jobs.node.pull, blackfish_jobs.node.records, "
        "blackfish_jobs.node.progress, blackfish_jobs.node.hashing, blackfish_jobs.node.requests"
    )
    assert {"blackfish_jobs.node.download", "blackfish_jobs.node.pull"} <= modules
    assert client_side(modules) == set()


def test_a_job_pickle_unpickles_with_the_node_package_alone(tmp_path):
    """What submitit writes at submit is loaded on the node with node modules only, and round-trips."""
    requests = {
        "pull": (pull.pull_image, PullImage("docker://alpine:3.20", tmp_path, "alpine_3.20.sif", "apptainer")),
        "download": (
            download.download_model,
            DownloadModel("org/name", "main", tmp_path / "models", None, ("*.json",), None, 4, commit="a" * 40),
        ),
    }
    for name, (task, request) in requests.items():
        path = tmp_path / f"{name}.pkl"
        DelayedSubmission(task, request).dump(path)
        modules = loaded_after(
            "from pathlib import PosixPath\nfrom submitit.core.utils import DelayedSubmission\n"
            "from blackfish_jobs.node.requests import DownloadModel, PullImage\n"
            f"job = DelayedSubmission.load({str(path)!r})\n"
            f"assert job.function.__module__ == {task.__module__!r} and job.args == ({request!r},)"
        )
        assert task.__module__ in modules
        assert client_side(modules) == set()


def test_a_job_pickled_by_bfjobs_0_1_still_unpickles(tmp_path):
    """A job queued before an upgrade named ``blackfish_jobs.tasks.pull_image`` and
    ``blackfish_jobs.specs.PullImage``; the upgraded install on the node still loads it."""
    import pickle

    request = PullImage("docker://alpine:3.20", tmp_path, "alpine_3.20.sif", "apptainer")
    old = pickle.dumps(DelayedSubmission(pull.pull_image, request), protocol=2)
    old = old.replace(b"blackfish_jobs.node.pull\npull_image", b"blackfish_jobs.tasks\npull_image")
    old = old.replace(b"blackfish_jobs.node.requests\nPullImage", b"blackfish_jobs.specs\nPullImage")
    assert b"blackfish_jobs.tasks\n" in old and b"blackfish_jobs.specs\n" in old
    path = tmp_path / "old.pkl"
    path.write_bytes(old)
    job = DelayedSubmission.load(path)
    assert job.function is pull.pull_image and job.args == (request,)
