"""WordNet supersense accuracy of ELMo layers: layer 0, top, average and a learned mix.

    python bench/supersense.py                                # the bundled model
    python bench/supersense.py --model M.onnx --json out.json --mix-out mix.json

Items (``bench/supersense_items.py``): every noun and verb example sentence of
WordNet 3.0 with its target span, labelled with the synset's lexicographer
class (41 classes). Train items are the examples the bundled model trained
on; test items are the held-out ones. A target's vector is the mean of its
span's vectors. For each configuration a softmax classifier (and, for
"learned", the scalar mix) is fitted with ``elmo_runtime.mix_fit`` on the
float32 model's train items (L2 strength ``--l2``; given several, the best
on a by-sentence dev part of the train items, per configuration). The
*same* mix and classifier then score the test items as embedded by the
float32, int8 and int4 (weight-only) models: the quantized rows show what a
quantized deployment of a float32-trained classifier loses. "poly" is the
test items whose lemma has two or more supersenses among all items, where a
context-free vector cannot tell the senses apart. Each model embeds each
sentence once (``--cache-dir`` keeps the vectors across runs). The learned
mix is written with ``save_mix``: ``elmo embed --mix FILE`` reads it. Its
weights apply to the raw layers, whose scales differ (printed as RMS).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from elmo_runtime import Embedder
from elmo_runtime.embedder import default_model_path
from elmo_runtime.mix import ScalarMix, save_mix
from elmo_runtime.mix_fit import DEFAULT_L2, DEFAULT_STEPS, MixClassifier, fit_mix
from elmo_runtime.quantize import quantize_model
from supersense_items import (
    DEFAULT_WORDNET_DIR,
    SUPERSENSES,
    Item,
    extract_items,
    polysemous_lemmas,
)

DEV_PERCENT = 10
OFF = -1e4  # a softmax weight that rounds to exactly 0 next to 0
RESULTS = Path(__file__).resolve().parent / "results"


def in_dev(tokens: Sequence[str]) -> bool:
    """Whether a train sentence is in the dev part (used to choose the L2 strength)."""
    digest = hashlib.sha1(" ".join(tokens).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 100 < DEV_PERCENT


def l2_values(text: str) -> list[float]:
    """``--l2``: one or more comma-separated non-negative numbers."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 1e-3,1e-2, found {text!r}") \
            from None
    if any(not v >= 0 for v in values):
        raise argparse.ArgumentTypeError(f"L2 strengths must be >= 0, found {text!r}")
    return values


def span_vectors(model: Path, items: Sequence[Item], threads: int,
                 cache_dir: Path | None) -> np.ndarray:
    """``(N, L+1, D)``: each item's span mean per layer; each sentence embedded once."""
    sentences = sorted({item.tokens for item in items})
    digest = hashlib.sha256(model.read_bytes())
    for item in items:  # the cache holds one row per item, in this order
        digest.update(f"{item.start} {item.end} {' '.join(item.tokens)}\n".encode())
    cache = cache_dir / f"supersense-{digest.hexdigest()[:20]}.npy" if cache_dir else None
    if cache is not None and cache.is_file():
        return np.load(cache, allow_pickle=False)
    by_sentence: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        by_sentence[item.tokens].append(i)
    embedder = Embedder(model, provider="cpu", threads=threads)
    out: np.ndarray | None = None
    for tokens, layers in zip(sentences, embedder.embed_sentences(sentences), strict=True):
        if out is None:
            out = np.empty((len(items), layers.shape[0], layers.shape[2]), np.float32)
        for i in by_sentence[tokens]:
            out[i] = layers[:, items[i].start : items[i].end].mean(axis=1)
    assert out is not None
    if cache is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        np.save(cache, out, allow_pickle=False)
    return out


def fit_config(x: np.ndarray, y: np.ndarray, dev: np.ndarray, mix: ScalarMix | None,
               grid: Sequence[float], steps: int) -> tuple[MixClassifier, float]:
    """The fit on all of ``x`` with the L2 strength of ``grid`` that scores best on ``dev``."""
    l2 = grid[0]
    if len(grid) > 1:
        scores = []
        for value in grid:
            fit = fit_mix(x[~dev], y[~dev], len(SUPERSENSES), mix, l2=value, steps=steps)
            scores.append((fit.predict(x[dev]) == y[dev]).mean())
        l2 = grid[int(np.argmax(scores))]
    return fit_mix(x, y, len(SUPERSENSES), mix, l2=l2, steps=steps), l2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="float32 .onnx (default: the bundled model)")
    ap.add_argument("--int8", type=Path, help="its int8 variant (default: MODEL.int8.onnx "
                    "beside it if present, else quantized now)")
    ap.add_argument("--wordnet", type=Path, default=DEFAULT_WORDNET_DIR)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="optimizer steps per fit")
    ap.add_argument("--l2", type=l2_values, default=str(DEFAULT_L2),
                    help="L2 strength; several (comma-separated): the best on a dev part of "
                    "the train sentences, per configuration")
    ap.add_argument("--cache-dir", type=Path, help="keep span vectors here across runs")
    ap.add_argument("--json", type=Path, default=RESULTS / "supersense.json")
    ap.add_argument("--mix-out", type=Path, default=RESULTS / "supersense.mix.json",
                    help="where the learned mix goes (elmo embed --mix FILE)")
    args = ap.parse_args()
    start = time.perf_counter()

    model = args.model or default_model_path()
    extraction = extract_items(args.wordnet)
    items = extraction.items
    train = [it for it in items if not it.heldout]
    test = [it for it in items if it.heldout]
    poly_lemmas = polysemous_lemmas(items)
    poly = np.array([it.lemma.casefold() in poly_lemmas for it in test])
    label_of = {name: i for i, name in enumerate(SUPERSENSES)}
    y_train = np.array([label_of[it.supersense] for it in train])
    y_test = np.array([label_of[it.supersense] for it in test])
    dev = np.array([in_dev(it.tokens) for it in train])
    print(f"WordNet: {extraction.n_examples} noun/verb examples, {extraction.n_dropped} dropped "
          f"(target not found), {len(train)} train / {len(test)} test items, "
          f"{int(poly.sum())} test items polysemous", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        int8 = args.int8 or model.with_name(model.stem + ".int8.onnx")
        if not int8.is_file():
            int8 = quantize_model(model, Path(tmp) / "int8.onnx", "int8").output
        int4 = quantize_model(model, Path(tmp) / "int4.onnx", "int4").output
        t = time.perf_counter()
        x_train_test = span_vectors(model, train + test, args.threads, args.cache_dir)
        x_train, x_test = x_train_test[: len(train)], x_train_test[len(train) :]
        test_x = {"fp32": x_test}
        for name, path in (("int8", int8), ("int4", int4)):
            test_x[name] = span_vectors(path, test, args.threads, args.cache_dir)
        embed_s = time.perf_counter() - t
    print(f"embedded in {embed_s:.0f} s; fitting", flush=True)

    n_layers = x_train.shape[1]
    layer_rms = np.sqrt((x_train.astype(np.float64) ** 2).mean(axis=(0, 2))).tolist()
    one_hot = [[0.0 if j == k else OFF for j in range(n_layers)] for k in range(n_layers)]
    configs: dict[str, ScalarMix | None] = {
        "layer 0": ScalarMix(one_hot[0]),
        "top": ScalarMix(one_hot[-1]),
        "average": ScalarMix([0.0] * n_layers),
        "learned mix": None,
    }
    rows = []
    for config, mix in configs.items():
        fit, l2 = fit_config(x_train, y_train, dev, mix, args.l2, args.steps)
        if mix is None:
            args.mix_out.parent.mkdir(parents=True, exist_ok=True)
            save_mix(args.mix_out, fit.mix)
        weights = fit.mix.normalized_weights().round(4).tolist()
        for variant, x in test_x.items():
            correct = fit.predict(x) == y_test
            rows.append({"config": config, "model": variant, "accuracy": correct.mean(),
                         "accuracy_poly": correct[poly].mean(), "weights": weights,
                         "gamma": fit.mix.gamma, "l2": l2})

    print(f"\nsupersense accuracy, {len(test)} test items ({int(poly.sum())} polysemous), "
          f"{len(SUPERSENSES)} classes; model {model.name}")
    print(f"{'configuration':<13} {'model':<5} {'all':>6} {'poly':>6}  softmax(w) / gamma")
    for r in rows:
        weights = " ".join(f"{w:.3f}" for w in r["weights"])
        print(f"{r['config']:<13} {r['model']:<5} {100 * r['accuracy']:>6.1f} "
              f"{100 * r['accuracy_poly']:>6.1f}  {weights} / {r['gamma']:.3g}")
    print("layer RMS (span vectors, train): "
          + ", ".join(f"{j}: {v:.3g}" for j, v in enumerate(layer_rms)))
    total_s = time.perf_counter() - start
    print(f"\nlearned mix written to {args.mix_out}; {total_s:.0f} s in all "
          f"({embed_s:.0f} s embedding), {args.threads} threads")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "model": model.name, "model_sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
        "wordnet": str(args.wordnet), "examples": extraction.n_examples,
        "dropped": extraction.n_dropped, "train_items": len(train), "test_items": len(test),
        "poly_test_items": int(poly.sum()), "threads": args.threads, "steps": args.steps,
        "seconds": total_s, "embed_seconds": embed_s,
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        "mix_file": args.mix_out.name, "layer_rms": layer_rms, "rows": rows,
    }, indent=2) + "\n")


if __name__ == "__main__":
    main()
