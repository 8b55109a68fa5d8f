"""The layers hold: import-linter's contracts in pyproject.toml (see docs/architecture.md)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _lint_imports() -> list[str]:
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    if not Path(exe).exists():
        pytest.fail("lint-imports is not installed: pip install -e '.[test]'")
    return [exe, "--no-cache"]


def test_the_layers_contract_is_kept():
    proc = subprocess.run(_lint_imports(), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " broken" in proc.stdout and "0 broken" in proc.stdout


def test_a_node_module_reaching_into_the_client_breaks_it(tmp_path: Path):
    """The contract is not vacuous: a copy of the package whose node side imports config fails it."""
    copy = tmp_path / "blackfish_jobs"
    shutil.copytree(REPO / "blackfish_jobs", copy, ignore=shutil.ignore_patterns("__pycache__"))
    with (copy / "node" / "records.py").open("a") as fh:
        fh.write("\nfrom blackfish_jobs import config as _config  # noqa: E402\n")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(_lint_imports(), cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert "blackfish_jobs.node.records -> blackfish_jobs.config" in proc.stdout
