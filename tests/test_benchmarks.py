"""The benchmark suite keeps working: ``benchmarks/run.py --quick`` end to end.

Benchmarks are not timed tests: this checks that every comparison ran and reported the agreed
shape, and the one count that is a correctness property (``bfjobs status`` over 1,000 live jobs
makes exactly one ``sacct`` call). It never asserts on a duration, a ratio or a met target.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RUN = REPO / "benchmarks" / "run.py"

pytestmark = pytest.mark.slurm  # the status comparison submits 1,000 held jobs to the real cluster

ROWS = {"floor", "help", "list", "list-all", "status", "cache-lookup", "cache-ls", "submit-cached", "download",
        "download-w1", "download-e2e", "pulls-from-file"}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "report.json"
    proc = subprocess.run(
        [sys.executable, str(RUN), "--quick", "--json", "--no-cluster-start", "--output", str(out)],
        capture_output=True, text=True, timeout=300, cwd=out.parent,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == data
    return data


def test_every_comparison_reports_medians_and_ratios(report: dict) -> None:
    assert report["mode"] == "quick"
    rows = {r["name"]: r for r in report["results"]}
    assert set(rows) >= ROWS, sorted(ROWS - set(rows))
    rounds = report["sizes"]["rounds"]
    for name, row in rows.items():
        assert row["status"] == "measured", (name, row["note"])
        assert row["met"] in (True, False, None)
        for side in ("candidate", "baseline"):
            if row[side] is None:
                continue
            assert row[side]["label"]
            assert row[side]["median_s"] > 0
            assert all(s > 0 for s in row[side]["samples_s"])
        if row["baseline"] is not None:
            assert row["ratio"] > 0
            assert len(row["candidate"]["samples_s"]) == len(row["baseline"]["samples_s"])
    assert len(rows["help"]["candidate"]["samples_s"]) == rounds


def test_status_makes_exactly_one_sacct_call(report: dict) -> None:
    status = next(r for r in report["results"] if r["name"] == "status")
    assert status["extra"]["sacct_calls"] == [1, 1]
    argv = status["extra"]["sacct_argv"]
    assert "-j" in argv and status["extra"]["sacct_job_list_chars"] > 1000 * 3


def test_cache_ls_stats_each_blob_once(report: dict) -> None:
    """``bfjobs cache ls`` reads sizes with one ``stat`` per blob (counted with strace), and no more."""
    row = next(r for r in report["results"] if r["name"] == "cache-ls")
    assert "max_stats_per_blob_bfjobs" in row["extra"], "no strace: scripts/test-site.sh installs it"
    assert row["extra"]["blob_stats_bfjobs"] == row["extra"]["blobs"] > 0
    assert row["extra"]["max_stats_per_blob_bfjobs"] == 1


def test_from_file_row_submits_with_one_sbatch_call(report: dict) -> None:
    row = next(r for r in report["results"] if r["name"] == "pulls-from-file")
    assert row["status"] == "measured" and row["candidate"]["median_s"] > 0
    assert all(calls == {"sbatch": 1} for calls in row["extra"]["slurm_calls_per_submission"]), row["extra"]


def test_saved_report_prints_as_a_table(report: dict, tmp_path: Path) -> None:
    saved = tmp_path / "report.json"
    saved.write_text(json.dumps(report))
    proc = subprocess.run([sys.executable, str(RUN), "--show", str(saved)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:3] == ["benchmark", "baseline", "(median)"]
    names = {r["name"] for r in report["results"]}
    assert {line.split()[0] for line in lines[2 : 2 + len(names)]} == names
