"""Training tokens/s for a preset, next to a baseline that runs the char CNN at every position.

    python bench/train_speed.py                          # small preset, batch 32 × unroll 20
    python bench/train_speed.py --preset tiny --corpus /path/to/sentences.txt

A training step (forward, backward, Adam step) runs on the same windows two
ways, interleaved: as `elmo train` does it (the char CNN once per distinct
token of the window, both streams sharing it) and with the CNN at each of
the 2 × batch × unroll positions (what a per-position model does). Prints
stream positions per second for each (every position trains both
directions) and the ratio. Without --corpus the sentences are made up
(Zipf-distributed words, prose-like lengths).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from elmo_export.presets import resolve_options
from elmo_export.train.data import Batch, ShuffledOrder, Streams, build_vocab, scan_corpus
from elmo_export.train.lm import LanguageModel, batch_tensors


def make_corpus(path: Path, n: int, seed: int = 0) -> None:
    """``n`` seeded sentences (3–60 tokens) of Zipf-distributed made-up words."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = ["".join(rng.choice(letters, size=rng.integers(1, 12))) for _ in range(30_000)]
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n):
            ids = np.minimum(rng.zipf(1.2, size=rng.integers(3, 61)), len(words)) - 1
            f.write(" ".join(words[i] for i in ids) + "\n")


def per_position(batch: Batch) -> Batch:
    """The same window with one char-id row per position (no sharing)."""
    flat = batch.inputs.reshape(-1)
    inputs = np.arange(1, flat.size + 1, dtype=np.int64).reshape(batch.inputs.shape)
    char_ids = np.concatenate([batch.char_ids[:1], batch.char_ids[flat]])
    return Batch(char_ids, inputs, batch.targets, batch.mask)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="small", help="preset name or options JSON")
    ap.add_argument("--corpus", type=Path, help="one sentence a line [default: made up]")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--unroll", type=int, default=20)
    ap.add_argument("--vocab-size", type=int, default=20_000)
    ap.add_argument("--samples", type=int, default=8192)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per variant")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.corpus or Path(tmp) / "corpus.txt"
        if args.corpus is None:
            make_corpus(path, 20_000)
        counts: Counter[str] = Counter()
        corpus = scan_corpus([path], counts=counts)
        vocab = build_vocab(counts, args.vocab_size)
        options = resolve_options(args.preset)
        streams = Streams(corpus, vocab, ShuffledOrder(len(corpus), 0), args.batch_size,
                          args.unroll, options.max_characters_per_token)
        batches = [streams.next_batch() for _ in range(args.steps + 1)]
        corpus.close()
    torch.manual_seed(0)
    model = LanguageModel(options, vocab, n_samples=args.samples)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    state = model.bilm.zero_state(args.batch_size)

    def step(batch: Batch) -> float:
        t = time.perf_counter()
        loss, _, _ = model(*batch_tensors(batch), *state)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return time.perf_counter() - t

    step(batches[0])  # warm-up
    times: dict[str, list[float]] = {"distinct tokens": [], "every position": []}
    distinct = []
    for batch in batches[1:]:
        distinct.append(len(batch.char_ids) - 1)
        times["distinct tokens"].append(step(batch))
        times["every position"].append(step(per_position(batch)))
    positions = args.batch_size * args.unroll
    speed = {k: positions / float(np.median(v)) for k, v in times.items()}
    result = {
        "preset": args.preset,
        "batch_size": args.batch_size,
        "unroll": args.unroll,
        "vocab": len(vocab),
        "samples": args.samples,
        "threads": args.threads,
        "distinct_tokens_per_window": float(np.mean(distinct)),
        "positions_per_window": 2 * positions,
        "tokens_per_s": {k: round(v, 1) for k, v in speed.items()},
        "speedup": round(speed["distinct tokens"] / speed["every position"], 2),
        "machine": platform.processor() or platform.machine(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
