"""Issue 24 item 7: the default thread count is the CPUs the process may use (affinity and
the cgroup CPU quota), not the machine's cores."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from elmo_runtime import cpus


def _cgroup(tmp_path: Path, proc: str, files: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (tmp_path / "proc").write_text(proc)
    return root, tmp_path / "proc"


@pytest.mark.parametrize(("proc", "files", "limit"), [
    ("0::/\n", {"cpu.max": "max 100000\n"}, None),
    ("0::/\n", {"cpu.max": "150000 100000\n"}, 1.5),
    ("0::/a/b\n", {"cpu.max": "max 100000", "a/cpu.max": "200000 100000",
                  "a/b/cpu.max": "300000 100000"}, 2.0),  # a parent's limit applies too
    ("0::/../../etc\n", {"cpu.max": "100000 100000"}, 1.0),  # never outside the root
    ("4:cpu,cpuacct:/\n", {"cpu,cpuacct/cpu.cfs_quota_us": "50000",
                           "cpu,cpuacct/cpu.cfs_period_us": "100000"}, 0.5),
    ("4:cpu,cpuacct:/\n", {"cpu,cpuacct/cpu.cfs_quota_us": "-1",
                           "cpu,cpuacct/cpu.cfs_period_us": "100000"}, None),
    ("0::/\n", {"cpu.max": "garbage"}, None),
])
def test_cgroup_cpu_limit(tmp_path: Path, proc: str, files: dict[str, str],
                          limit: float | None) -> None:
    root, proc_file = _cgroup(tmp_path, proc, files)
    assert cpus.cgroup_cpu_limit(root, proc_file) == limit


def test_available_cpus_is_the_affinity_capped_by_the_quota(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cpus, "affinity_cpus", lambda: 8)
    monkeypatch.setattr(cpus, "cgroup_cpu_limit", lambda: 2.5)
    assert cpus.available_cpus() == 3
    monkeypatch.setattr(cpus, "cgroup_cpu_limit", lambda: 0.2)
    assert cpus.available_cpus() == 1
    monkeypatch.setattr(cpus, "cgroup_cpu_limit", lambda: None)
    assert cpus.available_cpus() == 8


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this OS")
def test_under_taskset_one_cpu_is_seen() -> None:
    """`taskset -c 0 elmo embed` saw every core of the machine."""
    code = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            "from elmo_runtime.cpus import available_cpus; print(available_cpus())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60)
    assert done.stdout.strip() == "1"
