"""bench/cross_cpu.py: its comparison (tolerance 0, canary expectations) and a native run.

The emulated runs themselves are CI's (``.ci/cross_cpu.sh``: root, qemu, network).
"""

from __future__ import annotations

import importlib.util
import json
import platform
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "cross_cpu.py"


def _module():
    spec = importlib.util.spec_from_file_location("bench_cross_cpu", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cross = _module()


def _write(path: Path, label: str, canary: int, arrays: dict[str, np.ndarray]) -> Path:
    facts = {"label": label, "canary": canary, "kernel": cross.kernel_kind(canary),
             "onnxruntime": "1.32.0", "models": {"fp32": "a", "int8": "b"}}
    np.savez(path, facts=np.array(json.dumps(facts)), **arrays)
    return path


def _arrays(shift: float = 0.0, alone: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {}
    for side in ("fp32", "int8"):
        for i in range(3):
            out[f"{side}/batch/{i}"] = rng.standard_normal((3, i + 1, 4)).astype(np.float32)
            if alone:
                out[f"{side}/alone/{i}"] = out[f"{side}/batch/{i}"].copy()
    out["int8/batch/2"] = out["int8/batch/2"] + np.float32(shift)
    return out


def test_identical_runs_pass_and_canaries_are_checked(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.npz", "native", cross.CANARY_SATURATED, _arrays(alone=True))
    b = _write(tmp_path / "b.npz", "haswell", cross.CANARY_SATURATED, _arrays())
    c = _write(tmp_path / "c.npz", "arm", cross.CANARY_EXACT, _arrays())
    assert cross.compare([a, b, c], saturated=["haswell"], exact=["arm"]) == []
    problems = cross.compare([a, b, c], saturated=["arm"], exact=["haswell"])
    assert len(problems) == 2 and all("expected" in p for p in problems)


def test_one_ulp_anywhere_fails(tmp_path: Path) -> None:
    base = _arrays()
    moved = _arrays()
    moved["int8/batch/2"] = np.nextafter(base["int8/batch/2"], np.float32(np.inf))
    a = _write(tmp_path / "a.npz", "native", cross.CANARY_EXACT, base)
    b = _write(tmp_path / "b.npz", "arm", cross.CANARY_EXACT, moved)
    (problem,) = cross.compare([a, b], saturated=[], exact=[])
    assert problem.startswith("arm: int8/batch/2 differs from native by up to")


def test_a_sentence_alone_must_equal_it_in_the_batch(tmp_path: Path) -> None:
    arrays = _arrays(alone=True)
    arrays["fp32/alone/1"] = arrays["fp32/alone/1"] * np.float32(1.0000001)
    a = _write(tmp_path / "a.npz", "native", cross.CANARY_EXACT, arrays)
    (problem,) = cross.compare([a], saturated=[], exact=[])
    assert "fp32/alone/1 differs from the same sentence in the batch" in problem


def test_canary_values() -> None:
    assert cross.CANARY_EXACT == 2_072_640 and cross.CANARY_SATURATED == 1_048_544
    assert cross.kernel_kind(7) == "unknown 7"


@pytest.mark.slow
def test_native_run_of_the_bundled_models(tmp_path: Path) -> None:
    """The canary names this CPU's kernel; a run compares equal to itself, alone = batched."""
    out = tmp_path / "native.npz"
    cross.run(out, {"int8": cross_model("default-int8")}, "native", alone=True)
    facts, arrays = cross.load(out)
    assert len(arrays) == 2 * len(cross.SENTENCES)
    if platform.machine().lower() in ("aarch64", "arm64"):
        assert facts["kernel"] == "exact"
    elif not {"AVX512VNNI"} & set(facts["cpu_features"]) and not _cpuinfo_has(
            "avx_vnni", "amx_int8"):
        assert facts["kernel"] == "saturated"  # AVX2 u8×s8 on vpmaddubsw
    assert cross.compare([out, out], saturated=[], exact=[]) == []


def cross_model(name: str) -> Path:
    from elmo_runtime import models

    return models.get(name).path


def _cpuinfo_has(*flags: str) -> bool:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return True  # unknown: make no claim
    return any(f" {flag}" in text for flag in flags)
