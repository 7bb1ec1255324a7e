"""ELMoForManyLangs at full size: `elmo convert` of their 4096/512 config, then embedding speed
next to the bilm-tf original-size model, measured in the same run.

    python bench/efml_speed.py                  # 128 sentences, batch 32, 2 threads
    python bench/efml_speed.py --sentences 64 --threads 1

Both models get random seeded weights (speed does not depend on them) and the
same token strings. The EFML model is written in their format (config.json
naming ``cnn_50_100_512_4096_sample.json``, found as their shipped config;
``--chars`` code points in char.dic, ``--words`` entries in word.dic) and
converted with the parity check on. Prints the conversion time and, per model,
tokens per second (token cache off: every token through the char CNN) and the
ratio to the bilm-tf model.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# tests/support: the seeded random models of tests and benches (not shipped in the wheel)
TESTS_DIR = Path(__file__).resolve().parents[1] / "tests"
if str(TESTS_DIR) not in sys.path:
    sys.path.append(str(TESTS_DIR))

ALPHABETS = ((0x61, 0x7B), (0x41, 0x5B), (0xE0, 0x100), (0x430, 0x450), (0x4E00, 0x5A00))


def code_points(n: int) -> str:
    """``n`` distinct letters: Latin, accented, Cyrillic, then CJK."""
    pool = [chr(c) for lo, hi in ALPHABETS for c in range(lo, hi)]
    return "".join(pool[:n])


def make_words(rng: np.random.Generator, letters: str, n: int) -> list[str]:
    """``n`` distinct random words of 2-10 letters."""
    words: dict[str, None] = {}
    while len(words) < n:
        size = int(rng.integers(2, 11))
        words["".join(letters[i] for i in rng.integers(len(letters), size=size))] = None
    return list(words)


def sentences(rng: np.random.Generator, words: list[str], letters: str, n: int
              ) -> list[list[str]]:
    """``n`` sentences of 3-60 tokens (mean ~23): 80% vocabulary words, 20% unseen strings."""
    out = []
    for _ in range(n):
        length = int(np.clip(rng.gamma(3.0, 7.7), 3, 60))
        sent = []
        for _ in range(length):
            if rng.random() < 0.8:
                sent.append(words[int(rng.integers(len(words)))])
            else:
                size = int(rng.integers(1, 14))
                sent.append("".join(letters[i] for i in rng.integers(len(letters), size=size)))
        out.append(sent)
    return out


def bilm_tf_model(work: Path, seed: int) -> Path:
    """The bilm-tf original size, random weights, no parity check (as bench/run.py does)."""
    import onnx
    from elmo_export.graph.builder import build_model
    from elmo_export.presets import load_preset
    from elmo_runtime.format import contract
    from support.bilm_random import random_weights

    options = load_preset("original")
    proto = build_model(options, random_weights(options, seed))
    onnx.helper.set_model_props(
        proto, contract.make_metadata(options, {"kind": "random", "preset": "original"}))
    path = work / "bilm-tf-original.onnx"
    onnx.save(proto, str(path))
    return path


def efml_model_dir(work: Path, n_chars: int, words: list[str], seed: int) -> Path:
    """Their format, their shipped config (found by name), random weights."""
    from elmo_export.efml import model as efml
    from support import efml_random

    config = efml.SHIPPED_CONFIGS["cnn_50_100_512_4096_sample.json"]
    chars, word_vocab = efml_random.default_vocabs(words, code_points(n_chars))
    te, enc = efml_random.random_state_dicts(config, len(chars), len(word_vocab), seed)
    return efml_random.write_model_dir(
        work / "efml", config, chars, word_vocab, te, enc, config_name="",
        config_path="/home/hit-scir/elmo/configs/cnn_50_100_512_4096_sample.json")


def tokens_per_second(models: dict[str, Path], batch: list[list[str]], batch_size: int,
                      threads: int, repeats: int) -> dict[str, float]:
    """Median tokens/s of each model over ``repeats`` passes, the models interleaved
    (A B A B …) so that a change in the machine's load hits both alike."""
    from elmo_runtime import Embedder

    embedders = {name: Embedder(path, provider="cpu", threads=threads, token_cache_mb=0)
                 for name, path in models.items()}
    for emb in embedders.values():  # warm-up
        list(emb.embed_sentences(batch[:batch_size], batch_size=batch_size))
    n_tokens = sum(len(s) for s in batch)
    rates: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, emb in embedders.items():
            start = time.perf_counter()
            for _ in emb.embed_sentences(batch, batch_size=batch_size):
                pass
            rates[name].append(n_tokens / (time.perf_counter() - start))
    return {name: float(np.median(r)) for name, r in rates.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sentences", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3, help="passes per model (median)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chars", type=int, default=3000, help="char.dic code points")
    ap.add_argument("--words", type=int, default=50_000, help="word.dic entries")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from elmo_export.efml.convert import convert_efml

    rng = np.random.default_rng(args.seed)
    letters = code_points(args.chars)
    words = make_words(rng, letters, args.words)
    batch = sentences(rng, words, letters, args.sentences)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        directory = efml_model_dir(work, args.chars, words, args.seed)
        size_in = sum(f.stat().st_size for f in directory.iterdir()) / 2**20
        start = time.perf_counter()
        report = convert_efml(directory, work / "efml.onnx")
        took = time.perf_counter() - start
        print(f"elmo convert (their {directory.name}/, {size_in:.0f} MiB, "
              f"{args.chars} chars, {args.words} words): {took:.1f} s, "
              f"max |ONNX - float64 reference| = {report.max_abs_diff:.2g}")
        models = {"bilm-tf original (93.6M)": bilm_tf_model(work, args.seed),
                  "ELMoForManyLangs 4096/512": work / "efml.onnx"}
        n_tokens = sum(len(s) for s in batch)
        print(f"{args.sentences} sentences, {n_tokens} tokens, batch {args.batch_size}, "
              f"{args.threads} threads, token cache off, median of {args.repeats} "
              "interleaved passes")
        rates = tokens_per_second(models, batch, args.batch_size, args.threads, args.repeats)
        print("| model | file MiB | tok/s | × bilm-tf |")
        print("|---|---:|---:|---:|")
        base = rates["bilm-tf original (93.6M)"]
        for name, path in models.items():
            print(f"| {name} | {path.stat().st_size / 2**20:.1f} | {rates[name]:.1f} | "
                  f"{rates[name] / base:.2f} |")


if __name__ == "__main__":
    main()
