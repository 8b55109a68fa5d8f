"""Slurm pending reasons that never clear by themselves, and what to tell the user about them.

Slurm accepts a job that asks for more than its partition, QOS or association allows per job
(unless the site enforces those limits at submit), and the job then pends for ever. Which
reasons mean that comes from Slurm itself: ``enum job_state_reason`` in ``slurm/slurm.h`` and
the names ``job_reason_string`` gives them in ``src/common/slurm_protocol_defs.c`` (Slurm 22.05).
A reason is listed here only if no change of load, time, node state or the user's other jobs can
clear it — only an admin changing the cluster (or a new request) can. Everything else keeps a
job waiting as before: ``Resources``, ``Priority``, ``ReqNodeNotAvail`` (reservations,
maintenance), ``PartitionNodeLimit`` (nodes down), ``PartitionDown``/``PartitionInactive``,
``BeginTime``, ``Dependency``, held jobs, licenses, and every group, per-user and per-account
limit (``AssocGrp*``, ``QOSGrp*``, ``QOSMaxJobsPerUserLimit``, ``MaxCpuPerAccount``, …), which
clear as other jobs end. Unknown reasons (a newer Slurm) keep waiting too.

The advice (:func:`explain`) needs at most three answers, once for all such jobs, and only on this
rare path: ``squeue`` for what the jobs ask (:func:`ask_jobs`, the same answer that tells which
were cancelled), ``sinfo`` for the partitions' nodes, and ``sacctmgr`` for the QOS limits.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping, Sequence

from ..states import reason_word
from .slurmcmd import Runner, squeue_lists

#: The request exceeds what the partition's nodes or limits offer (FAIL_BAD_CONSTRAINTS,
#: WAIT_PART_TIME_LIMIT, WAIT_PART_CONFIG, WAIT_PN_MEM_LIMIT).
_PARTITION = frozenset({"BadConstraints", "PartitionTimeLimit", "PartitionConfig", "MaxMemPerLimit"})
#: The account or QOS may not be used (FAIL_ACCOUNT, FAIL_QOS, WAIT_ACCOUNT, WAIT_QOS).
_ACCESS = frozenset({"InvalidAccount", "InvalidQOS", "AccountNotAllowed", "QOSNotAllowed"})
#: Per-job (and per-node) limits of a QOS: WAIT_QOS_MAX_*_PER_JOB/_PER_NODE, WAIT_QOS_MIN_*.
_QOS = frozenset(
    {
        "QOSMaxCpuPerJobLimit", "QOSMaxCpuMinutesPerJobLimit", "QOSMaxNodePerJobLimit",
        "QOSMaxWallDurationPerJobLimit", "QOSMinCpuNotSatisfied", "QOSMaxCpuPerNode",
        "QOSMaxMemoryPerJob", "QOSMaxMemoryPerNode", "QOSMaxMemoryMinutesPerJob", "QOSMinMemory",
        "QOSMaxNodeMinutesPerJob", "QOSMinNode", "QOSMaxUnknownPerJob", "QOSMaxUnknownPerNode",
        "QOSMaxUnknownMinutesPerJob", "QOSMinUnknown", "QOSMaxGRESPerJob", "QOSMaxGRESPerNode",
        "QOSMaxGRESMinutesPerJob", "QOSMinGRES", "QOSMaxLicensePerJob", "QOSMaxLicenseMinutesPerJob",
        "QOSMinLicense", "QOSMaxBBPerJob", "QOSMaxBBPerNode", "QOSMinBB", "QOSMaxEnergyPerJob",
        "QOSMaxEnergyPerNode", "QOSMaxEnergyMinutesPerJob", "QOSMinEnergy", "QOSMaxBillingPerJob",
        "QOSMaxBillingPerNode", "QOSMaxBillingMinutesPerJob", "QOSMinBilling",
    }
)  # fmt: skip
#: Per-job (and per-node) limits of the user's association: WAIT_ASSOC_MAX_*_PER_JOB/_PER_NODE
#: (Slurm also names WAIT_QOS_MAX_BB_MINS_PER_JOB "AssocMaxBBMinutesPerJob").
_ASSOC = frozenset(
    {
        "AssocMaxCpuPerJobLimit", "AssocMaxCpuMinutesPerJobLimit", "AssocMaxNodePerJobLimit",
        "AssocMaxWallDurationPerJobLimit", "AssocMaxCpuPerNode", "AssocMaxMemPerJob", "AssocMaxMemPerNode",
        "AssocMaxMemMinutesPerJob", "AssocMaxNodeMinutesPerJob", "AssocMaxUnknownPerJob",
        "AssocMaxUnknownPerNode", "AssocMaxUnknownMinutesPerJob", "AssocMaxEnergyPerJob",
        "AssocMaxEnergyPerNode", "AssocMaxEnergyMinutesPerJob", "AssocMaxGRESPerJob", "AssocMaxGRESPerNode",
        "AssocMaxGRESMinutesPerJob", "AssocMaxLicensePerJob", "AssocMaxLicenseMinutesPerJob",
        "AssocMaxBBPerJob", "AssocMaxBBPerNode", "AssocMaxBBMinutesPerJob", "AssocMaxBillingPerJob",
        "AssocMaxBillingPerNode", "AssocMaxBillingMinutesPerJob",
    }
)  # fmt: skip
#: WAIT_DEP_INVALID: a dependency that can never be satisfied.
_DEPENDENCY = frozenset({"DependencyNeverSatisfied"})

NEVER_CLEARS = _PARTITION | _ACCESS | _QOS | _ASSOC | _DEPENDENCY


def never_clears(reason: str | None) -> bool:
    """Can a job pending for this reason never start without the cluster being changed?"""
    return reason_word(reason) in NEVER_CLEARS


# ------------------------------------------------------------------------ advice

#: ``squeue`` fields of :func:`ask_jobs`: the job's state, then what it asks for.
JOB_FORMAT = "%i|%T|%P|%q|%a|%c|%m|%l|%f"
_NODE_FORMAT = "%R|%c|%m|%f|%l|%B"
_QOS_FORMAT = "Name,MaxTRESPerJob,MaxTRESPerNode,MaxWall,MinTRESPerJob"
_UNITS = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}


def _ask(runner: Runner, argv: list[str]) -> list[list[str]]:
    """Lines of ``|``-separated fields; nothing when the call fails (advice is best effort)."""
    try:
        out = runner(argv)
    except (OSError, subprocess.SubprocessError):
        return []
    return [[f.strip() for f in line.split("|")] for line in out.splitlines() if line.strip()]


def _mb(text: str) -> float | None:
    """``8G``, ``100M``, ``22899`` (sinfo's MB) → MB; None if not a size."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]?)B?", text.strip().upper())
    if not match:
        return None
    return float(match.group(1)) * _UNITS[match.group(2) or "M"]


def _int(text: str) -> int | None:
    text = text.rstrip("+")
    return int(text) if text.isdigit() else None


def _size(mb: float) -> str:
    return f"{mb / 1024:g}G" if mb >= 1024 and mb % 1024 == 0 else f"{mb:g}M"


class Job:
    """One job as :func:`ask_jobs` found it: its state, and what it asks for."""

    def __init__(self, fields: list[str]) -> None:
        fields = (fields + [""] * 9)[:9]
        _id, self.state, self.partition, self.qos, self.account, cpus, mem, self.time, features = fields
        self.cpus = _int(cpus)
        self.mem = _mb(mem)
        self.features = "" if features in ("", "(null)") else features


def _partition_advice(job: Job, reason: str, nodes: list[list[str]]) -> str:
    part = job.partition or "?"
    mine = [n for n in nodes if len(n) >= 6 and n[0] == part]
    change = "or choose another partition"
    if mine:
        cpus = [min(c, _int(n[5]) or c) for n in mine if (c := _int(n[1])) is not None]
        mems = [m for n in mine if (m := _mb(n[2])) is not None]
        limit = mine[0][4]
        if reason == "PartitionTimeLimit" and limit:
            return f"asks for --time {job.time}; partition {part} allows at most {limit}: lower --time {change}"
        if job.cpus and cpus and job.cpus > max(cpus):
            return (
                f"needs {job.cpus} CPUs per task; the largest node of partition {part} has {max(cpus)}: "
                f"lower --cpus-per-task {change}"
            )
        if job.mem and mems and job.mem > max(mems):
            return (
                f"needs {_size(job.mem)} of memory; the largest node of partition {part} has {_size(max(mems))}: "
                f"lower --mem {change}"
            )
        if job.features and reason == "BadConstraints":
            have = sorted({f for n in mine for f in n[3].split(",") if f and f != "(null)"})
            return (
                f"needs node features {job.features}; partition {part} has {', '.join(have) or 'none'}: "
                f"change --constraint {change}"
            )
    return f"the request exceeds what partition {part} allows: lower --cpus-per-task, --mem or --time {change}"


def _qos_advice(job: Job, qos: dict[str, list[str]]) -> str:
    name = job.qos or "?"
    limits = qos.get(name)
    said = ""
    if limits:
        labels = _QOS_FORMAT.split(",")[1:]
        parts = [f"{label} {value}" for label, value in zip(labels, limits[1:], strict=False) if value]
        said = f" ({'; '.join(parts)})" if parts else ""
    asked = f"the job asks for {job.cpus} CPUs, {_size(job.mem) if job.mem else '?'} memory, time {job.time}"
    change = "lower --cpus-per-task, --mem or --time, or use another --qos"
    return f"over a per-job limit of QOS {name}{said}; {asked}: {change}"


def _advice(job: Job | None, reason: str, nodes: list[list[str]], qos: dict[str, list[str]]) -> str:
    if job is None:
        return "Slurm will never start it as asked: change the request"
    if reason in _PARTITION:
        return _partition_advice(job, reason, nodes)
    if reason in _QOS:
        return _qos_advice(job, qos)
    if reason in ("InvalidAccount", "AccountNotAllowed"):
        change = "use another --account or --partition"
        return f"account {job.account or '?'} may not run in partition {job.partition}: {change}"
    if reason in _ACCESS:
        where = f"partition {job.partition}, account {job.account}"
        return f"QOS {job.qos or '?'} may not be used here ({where}): use another --qos or --partition"
    if reason in _ASSOC:
        return f"over a per-job limit of your Slurm association (account {job.account}): lower the request"
    return "a dependency that can never be satisfied: submit again without it"


def ask_jobs(ids: Sequence[str], runner: Runner) -> dict[str, Job] | None:
    """One ``squeue -t all`` for these jobs' states and requests; None if the controller cannot say."""
    try:
        out = squeue_lists(["squeue", "-h", "-r", "-t", "all", "-o", JOB_FORMAT], ids, runner)
    except (OSError, subprocess.SubprocessError):
        return None
    rows = [[f.strip() for f in line.split("|")] for line in out.splitlines() if line.strip()]
    return {r[0]: Job(r) for r in rows if r and r[0]}


def explain(jobs: Sequence[tuple[str, str]], asked: Mapping[str, Job], runner: Runner) -> dict[str, str]:
    """``{slurm id: what to change}`` for ``(slurm id, Slurm reason)`` pairs, from ``asked``
    (:func:`ask_jobs`' answer); one ``sinfo`` and one ``sacctmgr`` only if some reason needs them."""
    if not jobs:
        return {}
    wanted = {reason_word(r) for _, r in jobs}
    nodes = _ask(runner, ["sinfo", "-h", "-N", "-o", _NODE_FORMAT]) if wanted & _PARTITION else []
    qos: dict[str, list[str]] = {}
    names = sorted({j.qos for i, r in jobs if reason_word(r) in _QOS and (j := asked.get(i)) and j.qos})
    if names:
        argv = ["sacctmgr", "-n", "-P", "show", "qos", "where", f"name={','.join(names)}", f"format={_QOS_FORMAT}"]
        found = _ask(runner, argv)
        qos = {r[0]: r for r in found if r}
    return {i: _advice(asked.get(i), reason_word(r), nodes, qos) for i, r in jobs}
