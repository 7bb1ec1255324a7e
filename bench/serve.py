"""Throughput and latency of `elmo serve` at 1, 8 and 32 clients next to the library.

    python bench/serve.py                              # bundled model, 1,200 sentences
    python bench/serve.py --model M.onnx --sentences 4000 --per-request 1 --threads 2

The baseline is the library's own batch throughput measured in the same run:
``Embedder.embed_sentences`` over the same seeded sentences in this process,
with the same intra-op threads as the service (measured before and after the
service runs; the mean is the baseline). The service is a real `elmo serve`
process on loopback; each client is a thread with one keep-alive connection
that posts ``--per-request`` sentences at a time (base64 vectors by default,
``--encoding float`` for JSON numbers) until the sentences are used up, every
client getting an equal share. Latency is per request, client side. From
the service's /metrics: sentences per model run, tokens / padded steps (how
much of the model's work was real tokens rather than padding and the
``<S>``/``</S>`` boundaries) and the share of the time the model was busy. Clients and service share
the machine's cores, as they do on an edge box.

Then the fair queue: ``--large-clients`` clients post large requests (64 of the
sentences each) in a loop while one client posts a one-word request after another
(``--small-requests`` of them); the one-word requests' latency (p50, p99) is printed
with the large requests' throughput.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time

import numpy as np
from elmo_runtime.batching import DEFAULT_BATCH_SIZE, bucketed
from elmo_runtime.embedder import Embedder

READY = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")
CLIENTS = (1, 8, 32)


def make_sentences(count: int, seed: int = 0) -> list[list[str]]:
    """Seeded sentences of 3–60 tokens (mean ~20) drawn Zipf-like from 5,000 made-up words."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = ["".join(rng.choice(letters, size=rng.integers(1, 11))) for _ in range(5000)]
    ranks = np.minimum(rng.zipf(1.3, size=count * 60), 5000) - 1
    lengths = np.clip(rng.normal(20, 9, size=count).astype(int), 3, 60)
    out, start = [], 0
    for n in lengths:
        out.append([words[i] for i in ranks[start : start + n]])
        start += n
    return out


def library_seconds(emb: Embedder, sentences: list[list[str]]) -> float:
    start = time.perf_counter()
    for _ in emb.embed_sentences(sentences):
        pass
    return time.perf_counter() - start


def library_efficiency(emb: Embedder, sentences: list[list[str]]) -> float:
    """Tokens / padded steps of the library's own length bucketing on these sentences."""
    padded = sum(
        len(batch) * (max(len(s) for _, s in batch) + 2)
        for batch in bucketed(
            sentences, lambda s: len(s) + 2, DEFAULT_BATCH_SIZE, emb.max_batch_tokens
        )
    )
    return sum(len(s) for s in sentences) / padded


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen, int]:
    cmd = [sys.executable, "-m", "elmo_runtime.cli", "serve", "--port", "0", "--mix", args.mix]
    cmd += ["--threads", str(args.threads), "--max-concurrent-requests", "1024"]
    if args.model:
        cmd += ["--model", args.model]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    lines = []
    while True:
        line = proc.stderr.readline()
        if not line:
            raise SystemExit(f"elmo serve did not start: {''.join(lines)}")
        lines.append(line)
        if match := READY.search(line):
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
            return proc, int(match.group(1))


SERVICE_COUNTERS = (
    "elmo_batch_size_count",  # model runs
    "elmo_batch_size_sum",  # sentences
    "elmo_tokens_embedded_total",
    "elmo_padded_steps_total",
    "elmo_batch_duration_seconds_sum",  # seconds the model was busy
)


def service_counters(port: int) -> np.ndarray:
    """The service's own counters so far (SERVICE_COUNTERS), from its /metrics."""
    conn = http.client.HTTPConnection("127.0.0.1", port)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    values = dict(re.findall(r"^(elmo_\w+) (\S+)$", text, re.M))
    return np.array([float(values[name]) for name in SERVICE_COUNTERS])


def run_clients(
    port: int, sentences: list[list[str]], clients: int, per_request: int, encoding: str
) -> tuple[float, list[float]]:
    """Wall seconds for all clients to embed their shares, and every request's latency."""
    shares = [sentences[k::clients] for k in range(clients)]
    latencies: list[list[float]] = [[] for _ in range(clients)]
    failures: list[str] = []
    barrier = threading.Barrier(clients + 1)

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        share = shares[k]
        barrier.wait()
        for i in range(0, len(share), per_request):
            body = json.dumps({"inputs": share[i : i + per_request], "encoding_format": encoding})
            start = time.perf_counter()
            conn.request("POST", "/embed", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            data = response.read()
            latencies[k].append(time.perf_counter() - start)
            if response.status != 200:
                failures.append(f"{response.status} {data[:200]!r}")
                return
            json.loads(data)  # what a client has to do with the answer
        conn.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    if failures:
        raise SystemExit(f"requests failed: {failures[0]}")
    return seconds, [x for per in latencies for x in per]


def small_while_large(
    port: int, sentences: list[list[str]], large_clients: int, small_requests: int, encoding: str
) -> tuple[list[float], float]:
    """Latencies of ``small_requests`` one-word requests posted one after another while
    ``large_clients`` clients keep posting 64 sentences a request; and the large requests'
    tokens/s meanwhile."""
    stop = threading.Event()
    large_tokens = [0] * large_clients
    failures: list[str] = []

    def large(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        i = k * 64
        while not stop.is_set():
            batch = [sentences[(i + j) % len(sentences)] for j in range(64)]
            i += 64 * large_clients
            body = json.dumps({"inputs": batch, "encoding_format": encoding})
            conn.request("POST", "/embed", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                failures.append(str(response.status))
                return
            if not stop.is_set():
                large_tokens[k] += sum(len(s) for s in batch)
        conn.close()

    threads = [threading.Thread(target=large, args=(k,)) for k in range(large_clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(2.0)  # the large requests fill the queue first
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    latencies = []
    body = json.dumps({"inputs": [["word"]], "encoding_format": encoding})
    for _ in range(small_requests):
        start = time.perf_counter()
        conn.request("POST", "/embed", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        latencies.append(time.perf_counter() - start)
        time.sleep(0.05)
    conn.close()
    stop.set()
    seconds = time.perf_counter() - started
    for t in threads:
        t.join()
    if failures:
        raise SystemExit(f"large requests failed: {failures[0]}")
    return latencies, sum(large_tokens) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="elmo-edge .onnx model [default: bundled]")
    parser.add_argument("--sentences", type=int, default=1200)
    parser.add_argument("--per-request", type=int, default=4, help="sentences per request")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads, both sides")
    parser.add_argument("--mix", default="top", help="all, top or average (service and library)")
    parser.add_argument("--encoding", choices=["base64", "float"], default="base64")
    parser.add_argument("--large-clients", type=int, default=4)
    parser.add_argument("--small-requests", type=int, default=40)
    args = parser.parse_args()

    sentences = make_sentences(args.sentences)
    tokens = sum(len(s) for s in sentences)
    emb = Embedder(args.model, provider="cpu", threads=args.threads, mix=args.mix)
    library_seconds(emb, sentences[:64])  # warm up
    lib_before = library_seconds(emb, sentences)

    proc, port = start_server(args)
    rows = []
    try:
        run_clients(port, sentences[:64], 4, args.per_request, args.encoding)  # warm up
        for clients in CLIENTS:
            before = service_counters(port)
            seconds, latencies = run_clients(
                port, sentences, clients, args.per_request, args.encoding
            )
            runs, sent, toks, padded, busy = service_counters(port) - before
            rows.append((clients, seconds, latencies, sent / runs, toks / padded, busy / seconds))
        small, large_rate = small_while_large(
            port, sentences, args.large_clients, args.small_requests, args.encoding
        )
    finally:
        proc.terminate()
        proc.wait(60)
    lib_after = library_seconds(emb, sentences)
    library = tokens / ((lib_before + lib_after) / 2)

    load = os.getloadavg()
    print(
        f"bench/serve.py: {platform.node()}, {os.cpu_count()} CPUs, load {load[0]:.2f}, "
        f"model {emb.model_path.name}, mix {args.mix}, {args.encoding} vectors, "
        f"{len(sentences):,} sentences ({tokens:,} tokens), {args.per_request} sentences a "
        f"request, {args.threads} intra-op threads"
    )
    print(
        f"library embed_sentences (batch 64): {library:,.0f} tokens/s "
        f"(before {tokens / lib_before:,.0f}, after {tokens / lib_after:,.0f}), "
        f"tokens / padded steps {library_efficiency(emb, sentences):.0%}"
    )
    print()
    print(
        "| clients | tokens/s | vs library | vs 1 client | p50 ms | p99 ms "
        "| sentences a run | tokens / padded steps | model busy |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    single = tokens / rows[0][1]
    for clients, seconds, latencies, per_run, efficiency, busy in rows:
        rate = tokens / seconds
        p50, p99 = np.percentile(np.array(latencies) * 1000, [50, 99])
        print(
            f"| {clients} | {rate:,.0f} | {rate / library:.2f}x | {rate / single:.2f}x | "
            f"{p50:.0f} | {p99:.0f} | {per_run:.1f} | {efficiency:.0%} | {busy:.0%} |"
        )
    p50, p99 = np.percentile(np.array(small) * 1000, [50, 99])
    print()
    print(
        f"one-word requests while {args.large_clients} clients post 64 sentences a request: "
        f"p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {max(small) * 1000:.0f} ms "
        f"({len(small)} requests); large requests meanwhile {large_rate:,.0f} tokens/s"
    )


if __name__ == "__main__":
    main()
