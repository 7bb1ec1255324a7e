"""Lines/s of `elmo embed` in one process next to a local Ray with 2 actors, same input.

    python bench/ray_throughput.py                    # bundled model, 4,000 lines
    python bench/ray_throughput.py --model M.onnx --lines 20000 --actors 2

Both sides write Parquet from the same seeded sentences with the same total
number of CPU threads: one process with ``--actors x --threads-per-actor``
intra-op threads, and Ray Data with ``--actors`` actors of
``--threads-per-actor`` threads each (one onnxruntime session per actor).
The Ray time is given twice: end to end (starting and stopping the local
Ray included) and the dataset alone (read, embed, write). Needs the ray
extra: ``pip install -e '.[ray]'``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from elmo_runtime.corpus import read_sentences
from elmo_runtime.embedder import Embedder, default_model_path
from elmo_runtime.output.arrow import PARQUET_OPTIONS
from elmo_runtime.output.ray_engine import HEADROOM_CPUS, embed_dataset, ray_session, read_lines
from elmo_runtime.output.writers import open_writer
from serve import make_sentences  # bench/serve.py: the same seeded sentences


def make_corpus(path: Path, lines: int, seed: int = 0) -> int:
    """bench/serve.py's seeded sentences (3–60 tokens, Zipf-like made-up words), one a
    line; returns the number of tokens."""
    sentences = make_sentences(lines, seed)
    path.write_text("\n".join(" ".join(s) for s in sentences) + "\n")
    return sum(len(s) for s in sentences)


def one_process(src: Path, out: Path, model: Path, threads: int, batch_size: int) -> float:
    """Seconds for `elmo embed SRC OUT.parquet --threads N` (model load included)."""
    start = time.perf_counter()
    emb = Embedder(model, provider="cpu", threads=threads)
    with open(src, "rb") as f, open_writer(out, "parquet") as writer:
        sentences = list(read_sentences(f, str(src)))
        for tokens, vectors in zip(
            sentences, emb.embed_sentences(sentences, batch_size), strict=True
        ):
            writer.write(tokens, vectors)
    return time.perf_counter() - start


def with_ray(
    src: Path, out: Path, model: Path, actors: int, threads: int, batch_size: int
) -> tuple[float, float]:
    """Seconds end to end and for the dataset alone, on a local Ray with the actors + headroom."""
    start = time.perf_counter()
    with ray_session(cpus=actors * threads + HEADROOM_CPUS):
        ready = time.perf_counter()
        ds = embed_dataset(
            read_lines([str(src)]),
            model,
            actors=actors,
            threads=threads,
            batch_size=batch_size,
            provider="cpu",
        )
        ds.write_parquet(str(out), **PARQUET_OPTIONS)
        done = time.perf_counter()
    return time.perf_counter() - start, done - ready


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="elmo-edge .onnx model [default: bundled]")
    parser.add_argument("--lines", type=int, default=4000)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--threads-per-actor", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    model = args.model or default_model_path()
    threads = args.actors * args.threads_per_actor
    with tempfile.TemporaryDirectory(prefix="elmo-bench-") as tmp:
        src = Path(tmp) / "corpus.txt"
        tokens = make_corpus(src, args.lines)
        local = one_process(src, Path(tmp) / "one.parquet", model, threads, args.batch_size)
        ray_total, ray_run = with_ray(
            src, Path(tmp) / "ray", model, args.actors, args.threads_per_actor, args.batch_size
        )
    rows = [
        (f"1 process, {threads} threads", local),
        (f"Ray, {args.actors} actors x {args.threads_per_actor} thread, end to end", ray_total),
        (f"Ray, {args.actors} actors x {args.threads_per_actor} thread, dataset only", ray_run),
    ]
    print(
        f"model {model.name}, {args.lines} lines ({tokens} tokens), batch {args.batch_size}, "
        f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}"
    )
    for name, seconds in rows:
        print(f"{name:<48} {seconds:7.1f} s {args.lines / seconds:8.1f} lines/s")
    print(
        f"ratio Ray / 1 process (lines/s): end to end {local / ray_total:.2f}, "
        f"dataset only {local / ray_run:.2f}"
    )
    if args.json:
        results = {
            "model": model.name,
            "lines": args.lines,
            "tokens": tokens,
            "batch_size": args.batch_size,
            "cpus": os.cpu_count(),
            "lines_per_s": {name: args.lines / seconds for name, seconds in rows},
        }
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
