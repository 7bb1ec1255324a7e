"""Speed and size of the quantized models against float32, measured in one run.

    python bench/quantize_speed.py                 # original-size architecture, random weights
    python bench/quantize_speed.py --model m.onnx  # a float32 elmo-edge model of your own
    python bench/quantize_speed.py --conv          # also int8 with the char-CNN Convs quantized

Without --model the original ELMo architecture (models/presets/original.json)
is built with seeded random weights (needs the export extra). Each variant is
written by ``quantize_model`` (its check runs and is printed; random weights
quantize worse than trained ones). Tokens/s counts real tokens (not <S>/</S>)
of sentences of --tokens words, at batch 1 and 32, one session per model with
--threads intra-op threads; the models take turns for --rounds rounds and the
median round counts, so load from other processes hits every model alike.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from elmo_runtime import chars, contract
from elmo_runtime.quantize import SAMPLE_SENTENCES, load_float_model, quantize_model
from elmo_runtime.session import DISABLED_OPTIMIZERS

REPO = Path(__file__).resolve().parents[1]
BATCHES = (1, 32)


def build_original(path: Path, seed: int) -> None:
    """The original-size biLM with seeded random weights, as an elmo-edge model."""
    import onnx
    from elmo_export.onnx_graph import build_model
    from elmo_export.weights import random_weights
    from elmo_runtime.options import load_options

    options = load_options(REPO / "models" / "presets" / "original.json")
    proto = build_model(options, random_weights(options, seed))
    meta = contract.make_metadata(options, {"kind": "random", "seed": seed, "preset": "original"})
    onnx.helper.set_model_props(proto, meta)
    onnx.save(proto, str(path))


def int8_with_conv(src: Path, dst: Path) -> None:
    """int8 with the Convs quantized too (ConvInteger), to measure whether that pays."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model, _ = load_float_model(src)
    logging.disable(logging.WARNING)  # "consider pre-processing": not for this graph
    try:
        quantize_dynamic(
            model, dst, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Conv"],
            extra_options={"EnableSubgraph": True, "MatMulConstBOnly": True},
        )
    finally:
        logging.disable(logging.NOTSET)


def session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(
        str(path), options, providers=["CPUExecutionProvider"],
        disabled_optimizers=DISABLED_OPTIMIZERS,
    )


def batch_ids(batch: int, tokens: int, max_chars: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    words = [w for s in SAMPLE_SENTENCES for w in s.split()]
    sentences = [[str(w) for w in rng.choice(words, size=tokens)] for _ in range(batch)]
    return chars.batch_to_ids(sentences, max_chars)[0]


def tokens_per_second(sess: ort.InferenceSession, ids: np.ndarray, tokens: int, seconds: float):
    feed = {contract.INPUT_CHAR_IDS: ids}
    runs, start = 0, time.perf_counter()
    while True:
        sess.run([contract.OUTPUT_LAYERS], feed)
        runs += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return runs * ids.shape[0] * tokens / elapsed


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="float32 elmo-edge model (default: original "
                        "architecture, random weights)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=25, help="words per sentence")
    parser.add_argument("--seconds", type=float, default=3.0, help="per model, batch and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--block-size", type=int, default=32, help="int4 block size")
    parser.add_argument("--conv", action="store_true", help="also int8 with Conv quantized")
    args = parser.parse_args()

    print(f"# {cpu_model()}, {os.cpu_count()} cores, onnxruntime {ort.__version__}, "
          f"{args.threads} intra-op threads; load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="elmo-bench-") as tmp:
        work = Path(tmp)
        src = args.model
        if src is None:
            src = work / "original.fp32.onnx"
            t0 = time.perf_counter()
            build_original(src, args.seed)
            print(f"# built the original-size model (random, seed {args.seed}) "
                  f"in {time.perf_counter() - t0:.0f} s")
        _, info = load_float_model(src)
        paths = {"fp32": src}
        for mode, extra in (("int8", {}), ("int4", {"block_size": args.block_size})):
            paths[mode] = work / f"model.{mode}.onnx"
            t0 = time.perf_counter()
            report = quantize_model(src, paths[mode], mode=mode, force=True, **extra)
            cos = ", ".join(f"{c.mean:.4f}/{c.min:.4f}" for c in report.check.layers)
            print(f"# {mode}: quantized in {time.perf_counter() - t0:.0f} s; cosine to fp32 "
                  f"per layer (mean/min): {cos}")
        if args.conv:
            paths["int8+conv"] = work / "model.int8conv.onnx"
            int8_with_conv(src, paths["int8+conv"])

        sessions = {name: session(path, args.threads) for name, path in paths.items()}
        speed: dict[tuple[str, int], float] = {}
        for batch in BATCHES:
            ids = batch_ids(batch, args.tokens, info.max_chars, args.seed)
            for sess in sessions.values():  # warm-up
                sess.run([contract.OUTPUT_LAYERS], {contract.INPUT_CHAR_IDS: ids})
            rounds: dict[str, list[float]] = {name: [] for name in sessions}
            for _ in range(args.rounds):
                for name, sess in sessions.items():
                    rounds[name].append(tokens_per_second(sess, ids, args.tokens, args.seconds))
            for name, values in rounds.items():
                speed[name, batch] = statistics.median(values)

        base_size = paths["fp32"].stat().st_size
        print(f"\n{'model':<10} {'MiB':>7} {'size':>6}" + "".join(
            f" {'b' + str(b) + ' tok/s':>11} {'× fp32':>7}" for b in BATCHES))
        for name, path in paths.items():
            size = path.stat().st_size
            row = f"{name:<10} {size / 2**20:7.1f} {size / base_size:6.1%}"
            for b in BATCHES:
                row += f" {speed[name, b]:11.1f} {speed[name, b] / speed['fp32', b]:7.2f}"
            print(row)
    print(f"# load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
