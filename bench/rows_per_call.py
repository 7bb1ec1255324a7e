"""Rows per model call: the runtime's padded-step cap vs whole batches of 32, fp32 and int8.

    python bench/rows_per_call.py FP32.onnx INT8.onnx [--sentences 64] [--rounds 2]

The bench's seeded sentences (``bench/run.py``) are cut by
``batching.plan_batches`` at batch size 32, once with the cap the runtime uses
for the model's LSTM width (``max_tokens_for``: 512 padded steps for the
original size) and once without a cap; both models run both plans in one
process, rounds alternating (reversed every other round), token cache off,
2 threads. Prints tokens/s (best round) and the ratio uncapped / capped.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
TESTS_DIR = Path(__file__).resolve().parents[1] / "tests"
if str(TESTS_DIR) not in sys.path:
    sys.path.append(str(TESTS_DIR))

from run import make_sentences  # noqa: E402  (bench/run.py: one sentence generator)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("fp32")
    ap.add_argument("int8")
    ap.add_argument("--sentences", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    from elmo_runtime.batching import max_tokens_for, plan_batches
    from elmo_runtime.format import chars
    from elmo_runtime.loading.session import check_contract, create_session

    sentences = make_sentences(args.sentences, seed=0)
    tokens = sum(len(s) + 2 for s in sentences)
    sessions = {m: create_session(getattr(args, m), "cpu", args.threads) for m in ("fp32", "int8")}
    cap = max_tokens_for(check_contract(sessions["fp32"], args.fp32).options.lstm_dim)
    plans = {}
    for name, limit in ((f"cap {cap}", cap), ("32 rows", None)):
        plan = plan_batches([len(s) + 2 for s in sentences], 32, limit)
        plans[name] = [chars.pack([sentences[i] for i in b]).feed() for b in plan]
        print(f"{name}: calls of {[len(b) for b in plan]} rows", flush=True)
    for session in sessions.values():  # warm-up: first runs allocate
        session.run(["layers"], plans[f"cap {cap}"][0])
    configs = [(m, p) for m in sessions for p in plans]
    best = dict.fromkeys(configs, float("inf"))
    for r in range(args.rounds):
        for m, p in configs if r % 2 == 0 else configs[::-1]:
            start = time.perf_counter()
            for feed in plans[p]:
                sessions[m].run(["layers"], feed)
            best[m, p] = min(best[m, p], time.perf_counter() - start)
        print(f"round {r + 1}: load average {os.getloadavg()[0]:.1f}", flush=True)
    capped, whole = plans
    for m in sessions:
        print(f"{m}: {capped} {tokens / best[m, capped]:.1f} tok/s, {whole} "
              f"{tokens / best[m, whole]:.1f} tok/s ({best[m, capped] / best[m, whole]:.2f}×)")


if __name__ == "__main__":
    main()
