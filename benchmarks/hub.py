"""A local Hugging Face hub with one large, sharded repo, for the download benchmark.

Runs ``tests/support/hub.py``'s server in its own process (so serving does not share a GIL with
the clients being timed) and prints its URL on the first line of stdout. The repo looks like a
real checkpoint: several ``*.safetensors`` LFS shards (served through the CDN redirect, like the
Hub) and a few small JSON files, so ``max_workers`` has files to download in parallel.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # for the support package

from support.hub import HubRepo, HubServer, MiB

REPO_ID = "bfjobs-bench/sharded-model"


def build_repo(shards: int, shard_mib: float) -> HubRepo:
    """A repo with ``shards`` LFS shards of ``shard_mib`` MiB each plus small config files."""
    repo = HubRepo(REPO_ID, pipeline_tag="text-generation", library_name="transformers")
    size = int(shard_mib * MiB)
    files: dict[str, bytes | str] = {
        ".gitattributes": "*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
        "README.md": "---\npipeline_tag: text-generation\n---\n# sharded benchmark model\n",
        "config.json": json.dumps({"model_type": "bench", "shards": shards}) + "\n",
        "tokenizer.json": json.dumps({"version": "1.0", "vocab": {str(i): i for i in range(2000)}}) + "\n",
    }
    for i in range(shards):
        # os.urandom: incompressible and ~10x faster to produce than random.randbytes
        files[f"model-{i + 1:05d}-of-{shards:05d}.safetensors"] = os.urandom(size)
    repo.commit(files, message="weights")
    return repo


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--shard-mib", type=float, default=96.0)
    args = parser.parse_args(argv)
    repo = build_repo(args.shards, args.shard_mib)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    # 1 MiB writes: the stdlib server's per-chunk Python overhead should not be what is measured
    with HubServer([repo], chunk_size=MiB) as server:
        total = sum(f.size for f in repo.get_commit("main").files.values())  # type: ignore[union-attr]
        print(json.dumps({"url": server.url, "repo_id": REPO_ID, "bytes": total}), flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()


if __name__ == "__main__":
    main()
