"""Where a model's time goes: onnxruntime's profiler, time per op kind, batch 1 and 32.

    python bench/profile_ops.py MODEL.onnx [--b1 3] [--b32 1] [--threads 2]

Runs MODEL through the project's session factory with
``SessionOptions.enable_profiling``: ``--b1`` sentences one at a time, then
``--b32`` batches of 32 (sorted by length, uncapped), each after one warm-up
run, token cache off; the bench's seeded sentences (``bench/run.py``). Prints
each op kind's share of the kernel time. A ``Scan`` node's time includes its
body's nodes, which the profiler also records one by one, so the shares are of
the kernel time outside the Scans plus inside them, and the Scans' total is
printed apart.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
TESTS_DIR = Path(__file__).resolve().parents[1] / "tests"
if str(TESTS_DIR) not in sys.path:
    sys.path.append(str(TESTS_DIR))

from run import make_sentences  # noqa: E402  (bench/run.py: one sentence generator)


def profile(model: str, feeds: list[dict[str, Any]], threads: int) -> tuple[Counter, Counter]:
    """(microseconds, calls) per op kind over ``feeds`` after one warm-up run."""
    from elmo_runtime.loading import session as factory

    plain = factory._session_options
    prefix = os.path.join(tempfile.mkdtemp(), "profile")

    def profiled(*args: Any) -> Any:
        options = plain(*args)
        options.enable_profiling = True
        options.profile_file_prefix = prefix
        return options

    factory._session_options = profiled
    try:
        session = factory.create_session(model, "cpu", threads)
    finally:
        factory._session_options = plain
    for feed in [feeds[0], *feeds]:
        session.run(["layers"], feed)
    path = Path(session.end_profiling())
    events = json.loads(path.read_text())
    path.unlink()
    runs = sorted(e["ts"] for e in events if e.get("name") == "model_run")
    after_warm_up = runs[1]
    micros: Counter[str] = Counter()
    calls: Counter[str] = Counter()
    for e in events:
        if (e.get("cat") == "Node" and e["name"].endswith("_kernel_time")
                and e["ts"] >= after_warm_up):
            micros[e["args"]["op_name"]] += e["dur"]
            calls[e["args"]["op_name"]] += 1
    return micros, calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--b1", type=int, default=3, help="sentences run one at a time")
    ap.add_argument("--b32", type=int, default=1, help="batches of 32 sentences")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args()
    from elmo_runtime.format import chars

    sentences = make_sentences(max(args.b1, 32 * args.b32), seed=0)
    ordered = sorted(sentences[: 32 * args.b32], key=len)
    cases = {
        "batch 1": [chars.pack([s]).feed() for s in sentences[: args.b1]],
        "batch 32": [chars.pack(ordered[i : i + 32]).feed() for i in range(0, len(ordered), 32)],
    }
    print(f"{Path(args.model).name}, {args.threads} threads, load average "
          f"{os.getloadavg()[0]:.1f}")
    for label, feeds in cases.items():
        if not feeds:
            continue
        micros, calls = profile(args.model, feeds, args.threads)
        scans = micros.pop("Scan", 0)
        calls.pop("Scan", None)
        total = sum(micros.values())
        print(f"\n{label}: {len(feeds)} runs; kernels outside and inside the Scans "
              f"{total / 1e3:.0f} ms; the Scan nodes {scans / 1e3:.0f} ms\n")
        print("| op | share | calls |\n| --- | ---: | ---: |")
        for op, us in micros.most_common(args.top):
            print(f"| {op} | {100 * us / total:.1f}% | {calls[op]} |")


if __name__ == "__main__":
    main()
