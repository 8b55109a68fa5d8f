"""Run bfjobs' node task for one model download in a fresh process and print its result as JSON.

This is exactly what a Slurm job executes (``blackfish_jobs.node.download.download_model`` with a
``node.requests.DownloadModel``), minus Slurm and submitit, so it can be timed against ``hf download``
started the same way: a new interpreter, the same hub, an empty destination.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from blackfish_jobs.node.download import download_model
from blackfish_jobs.node.requests import DownloadModel


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("repo_id")
    parser.add_argument("--models-dir", required=True, type=Path)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--max-workers", type=int, default=8)
    args = parser.parse_args(argv)
    request = DownloadModel(
        repo_id=args.repo_id,
        revision=None,
        models_dir=args.models_dir,
        endpoint=args.endpoint,
        allow_patterns=None,
        ignore_patterns=None,
        max_workers=args.max_workers,
    )
    print(json.dumps(download_model(request)))


if __name__ == "__main__":
    main()
