"""How much faster is onnxruntime's int8 MatMul than float32 here, at ELMo's shapes?

    python bench/gemm_int8.py [--threads 2]

The ceiling for the int8 model's speed-up: one-node models (``MatMul`` with a
constant weight) timed on the shapes of the original-size model (one recurrent
step at batch 1 and 32, the cell projection at batch 32, a hoisted input
projection over 864 steps) in float32 and in two int8 forms: what ``elmo
quantize --mode int8`` makes of it (exact: 7-bit weights, one activation scale
per row, computed in the graph) and onnxruntime's ``quantize_dynamic`` QInt8
(per-tensor activations, one fused ``DynamicQuantizeMatMul``: the former mode,
inexact on AVX2). Where the model bounds the input (the LSTM steps, layer 1's
input projection) the one-node model clips it as the LSTM does, so the exact
int8 uses the fixed scale it uses there. Also prints the CPU's SIMD flags: without AVX-512 VNNI /
AVX-VNNI, int8 products run on AVX2 ``vpmaddubsw``, at most ~2× the float32
FMA rate.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

SHAPES = (  # (what, M, K, N, bounded) of x (M, K) @ W (K, N)
    # bounded: x = Clip(input, -3, 3) as h in the LSTM step, so the exact int8 uses a fixed
    # scale as it does in the model; else per-row scales (layer 0's input projection)
    ("recurrent step, batch 1", 1, 512, 16384, True),
    ("recurrent step, batch 32", 32, 512, 16384, True),
    ("cell projection, batch 32", 32, 4096, 512, True),
    ("input projection, 864 steps (layer 1: fixed scale)", 864, 512, 16384, True),
    ("input projection, 864 steps (layer 0: per row)", 864, 512, 16384, False),
)


def matmul_model(k: int, n: int, path: Path, bounded: bool = False) -> None:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32), "W")
    limits = [numpy_helper.from_array(np.float32(v), name) for name, v in (("lo", -3), ("hi", 3))]
    nodes = [helper.make_node("MatMul", ["h" if bounded else "x", "W"], ["y"])]
    if bounded:
        nodes.insert(0, helper.make_node("Clip", ["x", "lo", "hi"], ["h"]))
    graph = helper.make_graph(
        nodes, "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, n])],
        initializer=[w, *limits])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def seconds_per_run(path: Path, x: np.ndarray, threads: int) -> float:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    session.run(None, {"x": x})
    reps = max(3, int(0.3 / max(_once(session, x), 1e-6)))
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(reps):
            session.run(None, {"x": x})
        best = min(best, (time.perf_counter() - start) / reps)
    return best


def _once(session: ort.InferenceSession, x: np.ndarray) -> float:
    start = time.perf_counter()
    session.run(None, {"x": x})
    return time.perf_counter() - start


def simd_flags() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next(line for line in f if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    return " ".join(f for f in flags if f.startswith(("avx", "fma", "amx")) or "vnni" in f)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    from elmo_runtime.quantize.int8 import quantize_int8
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.disable(logging.WARNING)  # quantize_dynamic's "consider pre-processing"
    print(f"# SIMD flags: {simd_flags()}; onnxruntime {ort.__version__}, {args.threads} threads")
    print("| shape | M×K×N | fp32 GFLOP/s | exact int8 GOP/s (× fp32) "
          "| per-tensor int8 GOP/s (× fp32) |")
    print("|---|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for what, m, k, n, bounded in SHAPES:
            fp32 = Path(tmp) / f"{k}x{n}.{bounded}.onnx"
            exact, former = fp32.with_suffix(".exact.onnx"), fp32.with_suffix(".former.onnx")
            matmul_model(k, n, fp32, bounded)
            model = onnx.load(str(fp32))
            quantize_int8(model)
            onnx.save(model, str(exact))
            quantize_dynamic(fp32, former, weight_type=QuantType.QInt8)
            x = np.random.default_rng(1).standard_normal((m, k)).astype(np.float32)
            t32, t8, tf = (seconds_per_run(p, x, args.threads) for p in (fp32, exact, former))
            flops = 2 * m * k * n
            print(f"| {what} | {m}×{k}×{n} | {flops / t32 / 1e9:.1f} "
                  f"| {flops / t8 / 1e9:.1f} ({t32 / t8:.2f}×) "
                  f"| {flops / tf / 1e9:.1f} ({t32 / tf:.2f}×) |")


if __name__ == "__main__":
    main()
