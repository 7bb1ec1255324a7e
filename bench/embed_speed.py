"""Tokens/s of the ONNX runtime next to the project's own PyTorch model, in one run.

    python bench/embed_speed.py                      # original-size architecture
    python bench/embed_speed.py --preset small --sentences 200

Both sides embed the same sentences in the same batches (length-bucketed by
the runtime's own planner) with the same number of threads; the PyTorch side
is the eager BiLM from elmo_export (char ids computed by the same NumPy code),
the ONNX side is the full ``Embedder`` path (char ids, onnxruntime, boundary
stripping). Weights are random (seeded): speed does not depend on them.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from elmo_export.modules import BiLM
from elmo_export.onnx_export import export_onnx
from elmo_export.presets import load_preset
from elmo_export.weights import random_weights
from elmo_runtime import Embedder
from elmo_runtime.batching import plan_batches
from elmo_runtime.chars import batch_to_ids


def make_sentences(n: int, seed: int = 0) -> list[list[str]]:
    """Seeded sentences with lengths like English prose (mean ~23 tokens, 3–80).

    Tokens are drawn Zipf-like from 5,000 made-up words of 1–12 letters;
    speed does not depend on which words they are.
    """
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = ["".join(rng.choice(letters, size=k)) for k in rng.integers(1, 13, size=5000)]
    lengths = np.clip(rng.gamma(4.0, 6.0, size=n).astype(int), 3, 80)
    ranks = np.minimum(rng.zipf(1.2, size=int(lengths.sum())), len(vocab)) - 1
    words, sentences, at = [vocab[r] for r in ranks], [], 0
    for k in lengths:
        sentences.append(words[at : at + k])
        at += k
    return sentences


def time_onnx(emb: Embedder, sentences: list[list[str]], batch_size: int) -> float:
    start = time.perf_counter()
    for _ in emb.embed_sentences(sentences, batch_size=batch_size):
        pass
    return time.perf_counter() - start


@torch.inference_mode()
def time_torch(model: BiLM, sentences: list[list[str]], batch_size: int) -> float:
    start = time.perf_counter()
    for idx in plan_batches([len(s) for s in sentences], batch_size):
        batch = [sentences[i] for i in idx]
        ids, _ = batch_to_ids(batch, model.options.max_characters_per_token)
        layers = model(torch.from_numpy(ids).long()).layers.numpy()
        _ = [layers[j, :, 1 : 1 + len(s)].copy() for j, s in enumerate(batch)]
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="original", help="options preset (default: original)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--sentences",
        type=int,
        default=64,
        help="sentences per measurement (batch 1 uses a quarter of them)",
    )
    ap.add_argument("--batch-sizes", default="1,32")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    options = load_preset(args.preset)
    model = BiLM.from_elmo_weights(options, random_weights(options, seed=0)).eval()
    sentences = make_sentences(args.sentences)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.onnx"
        export_onnx(model, path, {"kind": "random", "seed": 0}, check=False)
        emb = Embedder(path, provider="cpu", threads=args.threads)
        for batch_size in (int(b) for b in args.batch_sizes.split(",")):
            subset = sentences if batch_size > 1 else sentences[: max(1, len(sentences) // 4)]
            tokens = sum(len(s) for s in subset)
            time_onnx(emb, subset[: min(len(subset), batch_size)], batch_size)  # warm up
            t_onnx = time_onnx(emb, subset, batch_size)
            t_torch = time_torch(model, subset, batch_size)
            rows.append(
                {
                    "batch_size": batch_size,
                    "sentences": len(subset),
                    "tokens": tokens,
                    "onnx_tokens_per_s": tokens / t_onnx,
                    "torch_tokens_per_s": tokens / t_torch,
                    "speedup": t_torch / t_onnx,
                }
            )
    print(
        f"preset {args.preset} ({options.n_parameters() / 1e6:.1f}M params), "
        f"{args.threads} threads, torch {torch.__version__}, {platform.processor() or 'cpu'}"
    )
    print(
        f"{'batch':>5} {'sentences':>9} {'tokens':>7} {'ONNX tok/s':>11} "
        f"{'PyTorch tok/s':>14} {'ONNX/PyTorch':>13}"
    )
    for r in rows:
        print(
            f"{r['batch_size']:>5} {r['sentences']:>9} {r['tokens']:>7} "
            f"{r['onnx_tokens_per_s']:>11.1f} {r['torch_tokens_per_s']:>14.1f} "
            f"{r['speedup']:>12.2f}x"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"preset": args.preset, "threads": args.threads, "rows": rows}, indent=2)
        )


if __name__ == "__main__":
    main()
