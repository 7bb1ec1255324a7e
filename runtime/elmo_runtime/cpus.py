"""How many CPUs this process may use: the default number of onnxruntime threads.

onnxruntime's own default is one thread per core of the machine, whatever
the process is allowed: under ``taskset -c 0`` or a container limited to one
CPU it starts as many threads as the host has cores, and they compete for
what the process has (2.2x the CPU time of one thread for the same work,
measured on 2 cores). :func:`available_cpus` is the smallest of

* the CPUs the process may run on (``os.sched_getaffinity``: taskset, cpuset);
* the cgroup CPU quota, rounded up (cgroup v2 ``cpu.max``, v1
  ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``; ``docker --cpus``, Kubernetes
  limits), the smallest along the process's cgroup and its parents.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def affinity_cpus() -> int:
    """CPUs the process may run on (the machine's count where affinity is unknown)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # macOS, Windows
        return os.cpu_count() or 1


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _v2_quota(text: str | None) -> float | None:
    """CPUs a cgroup v2 ``cpu.max`` ("QUOTA PERIOD" or "max PERIOD") allows; None: no limit."""
    if not text:
        return None
    fields = text.split()
    if len(fields) != 2 or fields[0] == "max":
        return None
    try:
        quota, period = int(fields[0]), int(fields[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _v1_quota(directory: Path) -> float | None:
    quota, period = _read(directory / "cpu.cfs_quota_us"), _read(directory / "cpu.cfs_period_us")
    try:
        q, p = int(quota or ""), int(period or "")
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def _ancestors(root: Path, relative: str) -> list[Path]:
    """``root/relative`` and each parent up to ``root`` (never outside it)."""
    parts = [p for p in relative.split("/") if p and p not in (".", "..")]
    return [root.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """The CPU quota of the process's cgroup in CPUs (e.g. 1.5), or None when none is set."""
    text = _read(proc_cgroup)
    if text is None:
        return None
    limits: list[float] = []
    for line in text.splitlines():
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        _, controllers, relative = fields
        if controllers == "":  # cgroup v2 (unified)
            for directory in _ancestors(root, relative):
                quota = _v2_quota(_read(directory / "cpu.max"))
                if quota is not None:
                    limits.append(quota)
        elif "cpu" in controllers.split(","):  # cgroup v1
            for mount in (root / controllers, root / "cpu", root / "cpu,cpuacct"):
                for directory in _ancestors(mount, relative):
                    quota = _v1_quota(directory)
                    if quota is not None:
                        limits.append(quota)
    return min(limits) if limits else None


def available_cpus() -> int:
    """CPUs this process may use: its affinity, capped by its cgroup quota (rounded up)."""
    cpus = affinity_cpus()
    quota = cgroup_cpu_limit()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return cpus
