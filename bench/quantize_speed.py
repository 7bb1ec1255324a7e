"""int8 vs float32, side by side in one run: the model's speed-up and file size.

    python bench/quantize_speed.py [--preset original] [--threads 2] [--rounds 3]

Builds the preset's float32 model (seeded random weights: speed does not
depend on the values), quantizes it with ``elmo quantize --mode int8`` (exact
int8, scales per token) and, with ``--reference``, with onnxruntime's
``quantize_dynamic`` as the project did before (per-tensor activations:
inexact on AVX2 and batch-dependent; a reference row only). Every model runs
in this process through the project's session factory, token cache off
(the graph's own speed): batch 1 (``--b1-sentences`` sentences one at a time)
and batch 32 (``--sentences`` sentences in batches of 32). Rounds alternate
between the models (in reverse order every other round) and each figure is
the best round, so that a noisy neighbour on a shared machine slows all rows
alike. Ratios are against the
float32 row of the same run; the issue's targets: int8 ≥ 4.5× at batch 1,
≥ 2.0× at batch 32, file ≤ 30% of float32.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

# tests/support: the seeded random models of tests and benches (not shipped in the wheel)
TESTS_DIR = Path(__file__).resolve().parents[1] / "tests"
if str(TESTS_DIR) not in sys.path:
    sys.path.append(str(TESTS_DIR))

from run import cpu_model, make_sentences  # noqa: E402  (bench/run.py: one sentence generator)

TARGETS = {"b1": 4.5, "b32": 2.0, "size": 0.30}


def build(preset: str, work: Path, seed: int, reference: bool) -> dict[str, Path]:
    """fp32, int8 (and the former per-tensor int8 with ``reference``) files of ``preset``."""
    import onnx
    from elmo_export.graph.builder import build_model
    from elmo_export.presets import load_preset
    from elmo_runtime.format import contract
    from elmo_runtime.quantize import quantize_model
    from support.bilm_random import random_weights

    options = load_preset(preset)
    paths = {"fp32": work / "fp32.onnx", "int8": work / "int8.onnx"}
    proto = build_model(options, random_weights(options, seed))
    onnx.helper.set_model_props(
        proto, contract.make_metadata(options, {"kind": "random", "seed": seed, "preset": preset})
    )
    onnx.save(proto, str(paths["fp32"]))
    del proto
    quantize_model(paths["fp32"], paths["int8"], mode="int8", check=False)
    if reference:
        import logging

        from onnxruntime.quantization import QuantType, quantize_dynamic

        logging.disable(logging.WARNING)  # quantize_dynamic's "consider pre-processing"

        paths["int8 per-tensor (former)"] = work / "former.onnx"
        quantize_dynamic(paths["fp32"], paths["int8 per-tensor (former)"],
                         weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                         extra_options={"EnableSubgraph": True, "MatMulConstBOnly": True})
    return paths


def measure(paths: dict[str, Path], args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Best seconds per sentence at batch 1 and per batch of 32, rounds alternating."""
    from elmo_runtime.format import chars
    from elmo_runtime.loading.session import create_session

    sentences = make_sentences(max(args.sentences, args.b1_sentences), seed=args.seed)
    b1 = [chars.pack([s]).feed() for s in sentences[: args.b1_sentences]]
    ordered = sorted(sentences[: args.sentences], key=len)  # the runtime buckets by length
    b32 = [chars.pack(ordered[i : i + 32]).feed() for i in range(0, len(ordered), 32)]
    sessions = {name: create_session(path, "cpu", args.threads) for name, path in paths.items()}
    for session in sessions.values():  # warm-up: first runs allocate
        session.run(["layers"], b1[0])
        session.run(["layers"], b32[0])
    inf = float("inf")
    best: dict[str, dict[str, float]] = {n: {"b1": inf, "b32": inf} for n in paths}
    for r in range(args.rounds):
        order = list(sessions.items())
        for name, session in order if r % 2 == 0 else order[::-1]:  # no model always first
            for key, feeds in (("b1", b1), ("b32", b32)):
                start = time.perf_counter()
                for feed in feeds:
                    session.run(["layers"], feed)
                best[name][key] = min(best[name][key], (time.perf_counter() - start) / len(feeds))
        print(f"round {r + 1}/{args.rounds}: " + "; ".join(
            f"{n} b1 {v['b1'] * 1e3:.1f} ms b32 {v['b32'] * 1e3:.0f} ms" for n, v in best.items()),
            file=sys.stderr)
    return best


def table(paths: dict[str, Path], best: dict[str, dict[str, float]]) -> list[str]:
    base, size = best["fp32"], paths["fp32"].stat().st_size
    rows = ["| model | file MiB (of fp32) | batch 1 ms/sentence (× fp32) "
            "| batch 32 ms/batch (× fp32) |", "| --- | --- | --- | --- |"]
    for name, t in best.items():
        mib, share = paths[name].stat().st_size / 2**20, paths[name].stat().st_size / size
        x1, x32 = base["b1"] / t["b1"], base["b32"] / t["b32"]
        marks: Any = ("", "", "")
        if name == "int8":
            marks = tuple(" ✓" if ok else " ✗" for ok in (
                share <= TARGETS["size"], x1 >= TARGETS["b1"], x32 >= TARGETS["b32"]))
        rows.append(f"| {name} | {mib:.1f} ({100 * share:.1f}%){marks[0]} "
                    f"| {t['b1'] * 1e3:.1f} ({x1:.2f}×){marks[1]} "
                    f"| {t['b32'] * 1e3:.0f} ({x32:.2f}×){marks[2]} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="original")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--b1-sentences", type=int, default=8)
    ap.add_argument("--sentences", type=int, default=64, help="sentences at batch 32")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reference", action="store_true",
                    help="also the former per-tensor int8 (onnxruntime quantize_dynamic)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="elmo-qspeed-") as tmp:
        paths = build(args.preset, Path(tmp), args.seed, args.reference)
        best = measure(paths, args)
        print(f"{args.preset} preset, {args.threads} threads, token cache off, best of "
              f"{args.rounds} alternating rounds; {cpu_model()}")
        print(f"targets (issue 12): int8 ≥ {TARGETS['b1']}× at batch 1, ≥ {TARGETS['b32']}× at "
              f"batch 32, file ≤ {100 * TARGETS['size']:.0f}% of fp32")
        print("\n".join(table(paths, best)))


if __name__ == "__main__":
    main()
