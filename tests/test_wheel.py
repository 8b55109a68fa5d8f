"""The wheel carries the sbatch templates and works on its own, outside the source tree."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_ships_templates_and_renders(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(REPO)],
        check=True, capture_output=True, text=True,
    )
    [wheel] = dist.glob("blackfish_jobs-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for template in ("base.sh.j2", "pull-image.sh.j2"):
        assert f"blackfish_jobs/templates/sbatch/{template}" in names
    assert "blackfish_jobs/store/migrations/versions/0001_bfjobs_jobs.py" in names
    assert "blackfish_jobs/py.typed" in names  # Python callers get the facade's types

    # A fresh venv (dependencies from this interpreter's site-packages, the package from the wheel).
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True,
                   capture_output=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BFJOBS_", "PYTHON"))}
    env["BLACKFISH_HOME_DIR"] = str(tmp_path / "home")
    where = subprocess.run(
        [str(py), "-c", "import blackfish_jobs.render as r; print(r.__file__); print(r.packaged_templates_dir())"],
        cwd=outside, env=env, capture_output=True, text=True, check=True,
    ).stdout.split()
    assert all(p.startswith(str(venv)) for p in where), where
    rendered = subprocess.run(
        [str(venv / "bin" / "bfjobs"), "render", "pull-image", "docker://alpine:3.20"],
        cwd=outside, env=env, capture_output=True, text=True,
    )
    assert rendered.returncode == 0, rendered.stderr
    assert rendered.stdout.startswith("#!/bin/bash\n#SBATCH --job-name=bfjobs-pull-image-alpine_3.20.sif\n")
    assert "submitit.core._submit" in rendered.stdout
