"""What sharing one Embedder between threads costs, and what the memory lever costs.

    python bench/threads.py                 # thread-safety cost: 1 and 4 threads, lock on/off
    python bench/threads.py --arena         # arena shrinkage: RSS, on/off, a child each
    python bench/threads.py --shrink-cost   # arena shrinkage: speed, on/off, one process
    python bench/threads.py --peak          # peak RSS of embed_batch, 100 x 600 tokens

Threads: ``--threads-list 1 4`` threads share one Embedder (bundled model,
default token cache, one onnxruntime intra-op thread per session so the
Python threads are what runs in parallel) and each embeds the same
``--sentences`` sentences in batches of 8. The token cache's lock
(:class:`elmo_runtime.token_cache.TokenCache`) is compared with a no-op lock
(wrong vectors across threads, the pre-fix behaviour) in alternating rounds
in one process; the table prints sentences/s and the ratio lock/no-lock.

Arena (``--arena``): one large batch (16 x 2,000 tokens) then 20 small
ones, in a child process each, with and without the arena shrinkage run
option; prints RSS after the small batches and the time of the small batches.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

_TEXT = ("the a bank river money interest rate sat on they raised its of in to and was "
         "fire water tree house dog cat run ran walk light dark old new big small red "
         "blue green city road car train ship sea sky sun moon star night day time")
WORDS = _TEXT.split()


def sentences(n: int, seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    return [[rng.choice(WORDS) + rng.choice(("", "s", "ed", "ing")) for _ in
             range(rng.randint(5, 25))] for _ in range(n)]


def thread_round(emb, n_threads: int, work: list[list[list[str]]]) -> float:
    """Seconds for ``n_threads`` threads to embed their share of ``work``."""
    def run(items: list[list[str]]) -> None:
        for i in range(0, len(items), 8):
            emb.embed_batch(items[i:i + 8])

    start = time.perf_counter()
    with ThreadPoolExecutor(n_threads) as pool:
        list(pool.map(run, work[:n_threads]))
    return time.perf_counter() - start


def bench_threads(args: argparse.Namespace) -> None:
    from elmo_runtime.embedder import Embedder

    rows = []
    for n in args.threads_list:
        times = {"lock": [], "no-lock": []}
        for r in range(args.rounds):
            for mode in (("lock", "no-lock") if r % 2 == 0 else ("no-lock", "lock")):
                emb = Embedder(threads=1)
                if mode == "no-lock":
                    emb.token_cache._lock = contextlib.nullcontext()
                work = [sentences(args.sentences, seed) for seed in range(n)]
                times[mode].append(thread_round(emb, n, work))
        total = n * args.sentences
        best = {m: min(t) for m, t in times.items()}
        rows.append((n, total / best["lock"], total / best["no-lock"],
                     best["lock"] / best["no-lock"]))
    print(f"threads  sentences/s (lock)  sentences/s (no lock)  time lock/no-lock "
          f"(best of {args.rounds}, {args.sentences} sentences a thread)")
    for n, a, b, ratio in rows:
        print(f"{n:7d}  {a:19.1f}  {b:21.1f}  {ratio:17.3f}")


def _arena_child(shrink: bool) -> dict:
    import numpy as np
    from elmo_runtime.embedder import Embedder

    emb = Embedder(threads=1, token_cache_mb=0)
    if not shrink:
        emb._run_options = None  # onnxruntime's default: the arena keeps its peak
    rng = random.Random(0)
    large = [[rng.choice(WORDS) for _ in range(2000)] for _ in range(16)]
    small = [sentences(8, seed) for seed in range(20)]

    def rss() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    start_rss = rss()
    if os.environ.get("ARENA_LARGE", "1") == "1":
        emb.embed_batch(large)
    after_large = rss()
    start = time.perf_counter()
    for batch in small:
        out = emb.embed_batch(batch)
    small_s = time.perf_counter() - start
    assert all(np.isfinite(o).all() for o in out)
    return {"shrink": shrink, "rss_start_mib": start_rss, "rss_after_large_mib": after_large,
            "rss_after_small_mib": rss(), "small_seconds": small_s,
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def bench_arena(args: argparse.Namespace) -> None:
    results = []
    for r in range(args.rounds):
        for shrink in ((True, False) if r % 2 == 0 else (False, True)):
            for large in ("1", "0"):
                env = {**os.environ, "ARENA_LARGE": large}
                out = subprocess.run([sys.executable, __file__, "--arena-child", str(int(shrink))],
                                     capture_output=True, text=True, check=True, env=env)
                row = json.loads(out.stdout.strip().splitlines()[-1])
                row["large"] = large == "1"
                results.append(row)
    print("shrink  large job  RSS start  after large  after 20 small  small batches s")
    for row in results:
        print(f"{row['shrink']!s:6}  {row['large']!s:9}  {row['rss_start_mib']:9.0f}  "
              f"{row['rss_after_large_mib']:11.0f}  {row['rss_after_small_mib']:14.0f}  "
              f"{row['small_seconds']:15.3f}")


def bench_shrink_cost(args: argparse.Namespace) -> None:
    """Small and large batches with and without the shrink run option, alternating."""
    from elmo_runtime.embedder import Embedder, shrink_options

    rng = random.Random(0)

    def batch(n: int, lo: int, hi: int) -> list[list[str]]:
        return [[rng.choice(WORDS) for _ in range(rng.randint(lo, hi))] for _ in range(n)]

    emb = Embedder(threads=1, token_cache_mb=0)
    small = [batch(8, 5, 25) for _ in range(30)]
    big = [batch(32, 150, 200) for _ in range(3)]
    options = shrink_options(emb.providers)
    for b in small[:3]:
        emb.embed_batch(b)
    times: dict[tuple[str, bool], list[float]] = {}
    for r in range(2 * args.rounds):
        for on in ((True, False) if r % 2 == 0 else (False, True)):
            emb._run_options = options if on else None
            for kind, batches in (("small", small), ("big", big)):
                start = time.perf_counter()
                for b in batches:
                    emb.embed_batch(b)
                times.setdefault((kind, on), []).append(time.perf_counter() - start)
    for kind in ("small", "big"):
        a, b = min(times[(kind, True)]), min(times[(kind, False)])
        print(f"{kind}: shrink {a:.3f} s, no shrink {b:.3f} s, ratio {a / b:.3f} "
              f"(best of {2 * args.rounds})")


def bench_peak(args: argparse.Namespace) -> None:
    """Peak RSS of one embed_batch of 100 sentences x 600 tokens."""
    from elmo_runtime.embedder import Embedder

    rng = random.Random(0)
    items = [[rng.choice(WORDS) for _ in range(600)] for _ in range(100)]
    emb = Embedder(token_cache_mb=0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    out = emb.embed_batch(items)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"peak RSS {peak / 1024:.0f} MiB ({before / 1024:.0f} MiB before the call), "
          f"{seconds:.1f} s, checksum {sum(float(o.sum()) for o in out):.6g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads-list", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--sentences", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--arena", action="store_true")
    parser.add_argument("--arena-child", type=int, choices=(0, 1))
    parser.add_argument("--shrink-cost", action="store_true")
    parser.add_argument("--peak", action="store_true")
    args = parser.parse_args()
    if args.arena_child is not None:
        print(json.dumps(_arena_child(bool(args.arena_child))))
        return
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    if args.arena:
        bench_arena(args)
    elif args.shrink_cost:
        bench_shrink_cost(args)
    elif args.peak:
        bench_peak(args)
    else:
        bench_threads(args)


if __name__ == "__main__":
    main()
