"""Helpers for the tracking tests: count real Slurm client calls, switch accounting off, find jobs.

The call log comes from a PATH directory whose ``sacct``/``squeue``/``scontrol``/``scancel``/``sbatch``
run the real ``/usr/bin`` command and then append one JSON line (the argv and the exit code), so
the tests count what bfjobs really asked of the real cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

CLIENTS = ("sacct", "squeue", "scontrol", "scancel", "sbatch")

_WRAPPER = """#!/bin/bash
# Logs each call to the real Slurm client, then passes its output and exit code on.
{real} "$@"
rc=$?
python3 -c 'import json, sys; a = sys.argv; print(json.dumps({{"cmd": a[1], "rc": int(a[2]), "argv": a[3:]}}))' \\
    {name} "$rc" "$@" >> {log}
exit $rc
"""

_NO_ACCOUNTING = """#!/bin/bash
# A site without slurmdbd: sacct says so and fails, as Slurm's own sacct does there.
python3 -c 'import json, sys; print(json.dumps({{"cmd": "sacct", "rc": 1, "argv": sys.argv[1:]}}))' "$@" >> {log}
echo "sacct: error: Slurm accounting storage is disabled" >&2
exit 1
"""


@dataclass
class CallLog:
    """A PATH prefix that logs real Slurm client calls to ``path``."""

    bin_dir: Path
    path: Path

    def calls(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def counts(self) -> Counter:
        return Counter(c["cmd"] for c in self.calls())

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    def env(self, *, accounting: bool = True) -> dict[str, str]:
        """Environment for ``Site.bfjobs``: our wrappers first on PATH (sacct failing if asked)."""
        first = self.bin_dir / ("with-acct" if accounting else "no-acct")
        return {"PATH": f"{first}{os.pathsep}{os.environ['PATH']}"}


def make_call_log(root: Path) -> CallLog:
    log = root / "slurm-calls.jsonl"
    bin_dir = root / "slurm-bin"
    for flavour in ("with-acct", "no-acct"):
        d = bin_dir / flavour
        d.mkdir(parents=True)
        for name in CLIENTS:
            text = _WRAPPER.format(real=f"/usr/bin/{name}", name=name, log=log)
            if name == "sacct" and flavour == "no-acct":
                text = _NO_ACCOUNTING.format(log=log)
            (d / name).write_text(text)
            (d / name).chmod(0o755)
    return CallLog(bin_dir, log)


def ids_in(call: dict) -> list[str]:
    """The job ids a logged sacct/squeue (``-j a,b``) or scancel (``a b``) call asked about."""
    argv = call["argv"]
    if call["cmd"] == "scancel":
        return [a for a in argv if a.isdigit()]
    if "-j" in argv:
        return argv[argv.index("-j") + 1].split(",")
    return []


def task_pids(folder: str) -> list[int]:
    """The node-side Python process(es) of a Slurm job (``submitit.core._submit <folder>``)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"submitit.core._submit" in cmdline and folder.encode() in cmdline:
            found.append(int(entry))
    return found


class DownPartition:
    """A partition of its own that is DOWN: jobs submitted to it stay PENDING, without races.

    It touches no other partition, so tests running on the same cluster meanwhile are unaffected.
    """

    def __init__(self) -> None:
        self.name = f"bfpend-{uuid.uuid4().hex[:6]}"
        node = subprocess.run(["hostname", "-s"], capture_output=True, text=True, check=True).stdout.strip()
        subprocess.run(
            ["scontrol", "create", f"PartitionName={self.name}", f"Nodes={node}", "State=DOWN"],
            check=True, capture_output=True, text=True,
        )

    def remove(self) -> None:
        subprocess.run(["scontrol", "delete", f"PartitionName={self.name}"], capture_output=True, text=True)
