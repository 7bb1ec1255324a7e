"""Browser (onnxruntime-web, WASM) vs Python onnxruntime: per-sentence latency and tokens/s.

    npm ci --prefix web && pip install playwright   # once; Chromium from apt (/usr/bin/chromium)
    python bench/web.py                             # bundled fp32 + int8, 1 and 2 threads
    python bench/web.py --models fp32 --threads 1 --sentences 40 --json bench/results/web.json

The same seeded sentences (lengths like English prose, mean ~23 tokens) run one at a time
(batch 1) through ``web/elmo.mjs`` in headless Chromium, served by ``elmo web``'s server with
cross-origin isolation so WASM threads work, and through ``elmo_runtime.Embedder`` with the
same model and intra-op threads (token cache off: the browser has none). Each side embeds a
few sentences first (not timed); the two sides alternate for ``--rounds`` rounds and
each keeps its fastest round. Prints p50/p90 latency, tokens/s, and browser/native
throughput measured in this run; the target is a ratio of at least 0.5.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from run import make_sentences  # noqa: E402  (bench/run.py: one sentence generator)

MODELS = {"fp32": "default.onnx", "int8": "default.int8.onnx"}
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
WARMUP = 3
BLANK = "<!doctype html><meta charset='utf-8'><link rel='icon' href='data:,'><title>bench</title>"

SETUP_JS = """async ({model, threads, warmup}) => {
  const m = await import('./elmo.mjs');
  window.emb = await m.Embedder.create(model, {threads});
  for (const s of warmup) await window.emb.embedBatch([s]);
  return {loadMs: window.emb.loadMs, threads: window.emb.ort.env.wasm.numThreads,
          isolated: crossOriginIsolated};
}"""
RUN_JS = """async (sentences) => {
  const times = [];
  for (const s of sentences) {
    const t0 = performance.now();
    await window.emb.embedBatch([s]);
    times.push(performance.now() - t0);
  }
  return times;
}"""


class Native:
    """Python onnxruntime through elmo_runtime.Embedder, batch 1, token cache off."""

    def __init__(self, model: Path, threads: int, warmup: list[list[str]]):
        from elmo_runtime import Embedder

        self.emb = Embedder(model, provider="cpu", threads=threads, token_cache_mb=0)
        for s in warmup:
            self.emb.embed_batch([s])

    def run(self, sentences: list[list[str]]) -> list[float]:
        """Milliseconds per sentence."""
        times = []
        for s in sentences:
            t0 = time.perf_counter()
            self.emb.embed_batch([s])
            times.append((time.perf_counter() - t0) * 1000)
        return times


class Browser:
    """web/elmo.mjs in a fresh page (its own WASM instance and thread pool), batch 1."""

    def __init__(self, browser: Any, base_url: str, model: str, threads: int,
                 warmup: list[list[str]]):
        self.context = browser.new_context()
        self.page = self.context.new_page()
        self.page.goto(base_url + "blank.html")
        self.info = self.page.evaluate(SETUP_JS, {"model": model, "threads": threads,
                                                  "warmup": warmup})

    def run(self, sentences: list[list[str]]) -> list[float]:
        """Milliseconds per sentence (performance.now() in the page)."""
        return self.page.evaluate(RUN_JS, sentences)

    def close(self) -> None:
        self.context.close()


def summary(times: list[float], tokens: int) -> dict[str, float]:
    return {"p50_ms": statistics.median(times),
            "p90_ms": float(np.percentile(times, 90)),
            "tokens_per_s": tokens / (sum(times) / 1000)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="fp32,int8", help="fp32, int8 or both (bundled)")
    parser.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    parser.add_argument("--sentences", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; best kept")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args(argv)

    from elmo_runtime import webserve
    from playwright.sync_api import sync_playwright

    web = webserve.check_web_dir(REPO / "web")
    model_dir = REPO / "runtime" / "elmo_runtime" / "models"
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    threads = [int(t) for t in args.threads.split(",")]
    sentences = make_sentences(args.sentences, args.seed)
    tokens = sum(map(len, sentences))
    blank = Path(os.environ.get("TMPDIR", "/tmp")) / f"elmo-bench-{os.getpid()}.html"
    blank.write_text(BLANK, encoding="utf-8")
    files = {f"{n}.onnx": model_dir / MODELS[n] for n in names} | {"blank.html": blank}
    print(f"{len(sentences)} sentences, {tokens} tokens, batch 1; load average "
          f"{os.getloadavg()[0]:.2f} at start; {os.cpu_count()} CPUs")
    rows = []
    with webserve.serving(web, files) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        for name in names:
            for t in threads:
                warm = sentences[:WARMUP]
                native = Native(files[f"{name}.onnx"], t, warm)
                page = Browser(browser, url, f"{name}.onnx", t, warm)
                info = page.info
                if not info["isolated"] or info["threads"] != t:
                    print(f"warning: the page ran {info['threads']} threads (isolated: "
                          f"{info['isolated']}), asked for {t}", file=sys.stderr)
                # Alternate the two sides and keep each side's fastest round: other work on
                # the machine then costs both sides alike.
                rounds: dict[str, list[list[float]]] = {"python": [], "browser": []}
                for _ in range(args.rounds):
                    rounds["python"].append(native.run(sentences))
                    rounds["browser"].append(page.run(sentences))
                page.close()
                best = {side: summary(min(r, key=sum), tokens) for side, r in rounds.items()}
                rows.append({"model": name, "threads": t, **best,
                             "browser_load_ms": info["loadMs"],
                             "ratio": best["browser"]["tokens_per_s"]
                             / best["python"]["tokens_per_s"]})
        version = browser.version
        browser.close()
    blank.unlink()
    header = (f"{'model':6} {'thr':>3} | {'python p50':>10} {'p90':>7} {'tok/s':>7} | "
              f"{'browser p50':>11} {'p90':>7} {'tok/s':>7} | {'browser/python':>14}")
    print(header)
    print("-" * len(header))
    for r in rows:
        p, b = r["python"], r["browser"]
        print(f"{r['model']:6} {r['threads']:>3} | {p['p50_ms']:>8.1f}ms {p['p90_ms']:>5.1f}ms "
              f"{p['tokens_per_s']:>7.0f} | {b['p50_ms']:>9.1f}ms {b['p90_ms']:>5.1f}ms "
              f"{b['tokens_per_s']:>7.0f} | {r['ratio']:>14.2f}")
    print(f"Chromium {version}; load average {os.getloadavg()[0]:.2f} at end; "
          "target: browser/python >= 0.50")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"chromium": version, "sentences": len(sentences),
                                         "tokens": tokens, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
