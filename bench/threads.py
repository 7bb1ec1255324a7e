"""What sharing one Embedder between threads costs, and what the memory lever costs.

    python bench/threads.py                 # thread-safety cost: 1 and 4 threads, lock on/off
    python bench/threads.py --arena         # CPU memory policy: RSS and speed, a child each
    python bench/threads.py --peak          # peak RSS of embed_batch, 100 x 600 tokens

Threads: ``--threads-list 1 4`` threads share one Embedder (bundled model,
default token cache, one onnxruntime intra-op thread per session so the
Python threads are what runs in parallel) and each embeds the same
``--sentences`` sentences in batches of 8. The token cache's lock
(:class:`elmo_runtime.token_cache.TokenCache`) is compared with a no-op lock
(wrong vectors across threads, the pre-fix behaviour) in alternating rounds
in one process; the table prints sentences/s and the ratio lock/no-lock.

Arena (``--arena``): three ways to hold onnxruntime's CPU tensors, a child process per
policy and workload, policies alternating by round: ``malloc`` (no arena: what sessions
use), ``arena`` (onnxruntime's default arena, which keeps its peak) and ``shrink`` (the
arena, handed back after every run: the policy before). Workloads: ``large`` (one
16 x 2,000-token ``embed_batch``, cut by the token budget, then 20 batches of 8 short
sentences), ``small`` (the 20 small batches alone) and ``corpus`` (``embed_sentences``
over bench/serve.py's 1,200 seeded sentences, 2 threads, token cache on, three passes).
Prints RSS after the work and the work's seconds.
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


POLICIES = ("malloc", "arena", "shrink")


def _arena_child(policy: str, workload: str) -> dict:
    import numpy as np
    import onnxruntime as ort
    from elmo_runtime.embedder import Embedder
    from elmo_runtime.loading import session

    if policy != "malloc":  # the sessions' options with onnxruntime's arena back on
        options = session._session_options

        def with_arena(*args, **kwargs):
            opts = options(*args, **kwargs)
            opts.enable_cpu_mem_arena = True
            return opts

        session._session_options = with_arena
    corpus = workload == "corpus"
    emb = Embedder(threads=2 if corpus else 1, token_cache_mb=32 if corpus else 0,
                   mix="top" if corpus else "all")
    if policy == "shrink":
        emb._run_options = ort.RunOptions()
        emb._run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    def rss() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    start_rss = rss()
    start = time.perf_counter()
    if corpus:
        sys.path.insert(0, os.path.dirname(__file__))
        from serve import make_sentences

        text = make_sentences(1200)
        for _ in range(3):
            out = list(emb.embed_sentences(text))
    else:
        rng = random.Random(0)
        if workload == "large":
            emb.embed_batch([[rng.choice(WORDS) for _ in range(2000)] for _ in range(16)])
        for seed in range(20):
            out = emb.embed_batch(sentences(8, seed))
    seconds = time.perf_counter() - start
    assert all(np.isfinite(o).all() for o in out)
    return {"policy": policy, "workload": workload, "rss_start_mib": start_rss,
            "rss_after_mib": rss(), "seconds": seconds,
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def bench_arena(args: argparse.Namespace) -> None:
    print("policy  workload  RSS start  RSS after  peak   seconds")
    for r in range(args.rounds):
        order = POLICIES[r % 3:] + POLICIES[:r % 3]
        for workload in ("large", "small", "corpus"):
            for policy in order:
                out = subprocess.run(
                    [sys.executable, __file__, "--arena-child", policy, workload],
                    capture_output=True, text=True, check=True)
                row = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"{policy:6}  {workload:8}  {row['rss_start_mib']:9.0f}  "
                      f"{row['rss_after_mib']:9.0f}  {row['peak_mib']:5.0f}  "
                      f"{row['seconds']:7.2f}", flush=True)


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
    parser.add_argument("--arena-child", nargs=2, metavar=("POLICY", "WORKLOAD"))
    parser.add_argument("--peak", action="store_true")
    args = parser.parse_args()
    if args.arena_child is not None:
        print(json.dumps(_arena_child(*args.arena_child)))
        return
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    if args.arena:
        bench_arena(args)
    elif args.peak:
        bench_peak(args)
    else:
        bench_threads(args)


if __name__ == "__main__":
    main()
