"""The elmo-edge speed bench: one table, every ratio against a baseline from the same run.

    python bench/run.py                                  # original + small, 2 threads
    python bench/run.py --models small --json out.json   # quicker
    python bench/run.py --skip-torch                     # no PyTorch rows
    python bench/run.py --models original --text news --allennlp .venv-allennlp \
        --rows allennlp,torch,fp32,int8 --skip-cold      # the AllenNLP comparison (issue 25)

For each architecture (``original``: the published ELMo size; ``small``; both
from ``elmo_export`` presets with seeded random weights: speed does not depend
on the values) the bench exports an fp32 model and quantizes it (int8, and
int4 weight-only), then measures, each configuration in a fresh child process
(so peak RSS is that configuration's own and thread pools never meet):

* AllenNLP 2.10.1's ``_ElmoBiLm`` (``--allennlp VENV``: its own venv, made by
  ``bench/allennlp_venv.sh``; the same seeded weights written as a bilm-tf
  options.json + hdf5, the same sentences and batches, states reset per
  batch, no token cache; the sum of its first sentence's layers is checked
  against ONNX fp32's),
* PyTorch eager (the project's ``BiLM``), ONNX fp32, int8, int4, each loaded
  as it is ("before") and from its prepared copy (``elmo_runtime.loading.prepared``:
  pre-packed weights memory-mapped; the copies are made first, in the bench's
  own cache, and the time that takes is printed); the ONNX rows without the
  token cache (pure model speed) and prepared fp32/int8 once more with it (the
  runtime default);
* batch 1 (``--b1-sentences`` sentences one at a time: tokens/s, p50/p99
  latency per sentence) and batch 32 (``--sentences`` sentences,
  length-bucketed by the runtime's own planner);
* peak RSS (``VmHWM`` of the child), model file size, and cold start of
  ``elmo embed`` (process start to the written vectors of one line; median
  of 3), plain and with the prepared copy in place;
* ``--rounds`` alternating rounds of everything: speed and cold start are the
  best round's, peak RSS the worst's (timings on a shared machine are noisy);
* the machine's own limits, measured first with NumPy in a child with the
  same thread count: sgemm peak (float32 matmul, 4096²) and a streaming-read
  bandwidth (float32 matrix-vector products over 512 MiB, as one BLAS call and
  split over one Python thread per core; the faster counts).

Derived figures, before and prepared: fp32 batch-32 GFLOP/s over the sgemm peak, where FLOPs are
counted from the options for what the graph executes (the LSTMs at every step,
boundaries included; the char CNN once per distinct token of a batch, as the
graph does it), and the same with the char CNN counted at every step
("per step", the usual way); fp32 batch-1 speed over the bandwidth bound (the
time to read the recurrent weights once per step and the others once per
sentence). Sentences (``--text zipf``, the default) are seeded, English-like in
length (mean ~23 tokens) with a Zipf-distributed vocabulary of 5,000 made-up
words; ``--text news`` cycles the 30 news sentences of the bilm-tf fixture
(``--fixtures DIR``; mean ~25 tokens). ``--rows`` picks rows by key (see
:data:`ROW_KEYS`); ``--skip-cold`` leaves out the cold starts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

# tests/support: the seeded random models of tests and benches (not shipped in the wheel)
TESTS_DIR = Path(__file__).resolve().parents[1] / "tests"
if str(TESTS_DIR) not in sys.path:
    sys.path.append(str(TESTS_DIR))

BATCH = 32
QUANT_MODES = ("int8", "int4")
# (row name, model file key, token cache MiB, prepared): "before" rows load the .onnx as it
# is, "prepared" rows its prepared copy (elmo_runtime.loading.prepared: pre-packed weights mapped)
ONNX_ROWS = (
    ("ONNX fp32", "fp32", 0.0, False),
    ("ONNX fp32, prepared", "fp32", 0.0, True),
    ("ONNX int8", "int8", 0.0, False),
    ("ONNX int8, prepared", "int8", 0.0, True),
    ("ONNX int4 (weight-only)", "int4", 0.0, False),
    ("ONNX int4, prepared", "int4", 0.0, True),
    ("ONNX fp32 + token cache, prepared", "fp32", 32.0, True),
    ("ONNX int8 + token cache, prepared", "int8", 32.0, True),
)
ALLENNLP_ROW, TORCH_ROW = "AllenNLP 2.10.1 fp32", "PyTorch eager fp32"
# --rows keys: the row names they select
ROW_KEYS = {"allennlp": ALLENNLP_ROW, "torch": TORCH_ROW, "fp32": "ONNX fp32",
            "fp32-prepared": "ONNX fp32, prepared", "int8": "ONNX int8",
            "int8-prepared": "ONNX int8, prepared", "int4": "ONNX int4 (weight-only)",
            "int4-prepared": "ONNX int4, prepared",
            "fp32-cache": "ONNX fp32 + token cache, prepared",
            "int8-cache": "ONNX int8 + token cache, prepared"}


# ---------------------------------------------------------------------------- inputs


def make_sentences(n: int, seed: int = 0) -> list[list[str]]:
    """Seeded sentences with lengths like English prose (mean ~23 tokens, 3–80)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = ["".join(rng.choice(letters, size=k)) for k in rng.integers(1, 13, size=5000)]
    lengths = np.clip(rng.gamma(4.0, 6.0, size=n).astype(int), 3, 80)
    ranks = np.minimum(rng.zipf(1.2, size=int(lengths.sum())), len(vocab)) - 1
    words, sentences, at = [vocab[r] for r in ranks], [], 0
    for k in lengths:
        sentences.append(words[at : at + k])
        at += k
    return sentences


def news_sentences(n: int, fixtures: Path) -> list[list[str]]:
    """The bilm-tf fixture's 30 news sentences, cycled to ``n``."""
    lists = json.loads((fixtures / "lm_embeddings_sentences.json").read_text(encoding="utf-8"))
    pool = [s.split() for group in lists for s in group]
    return [pool[i % len(pool)] for i in range(n)]


def bench_sentences(spec: dict[str, Any]) -> list[list[str]]:
    """The spec's sentences: ``text`` "news" (the fixture's) or "zipf" (seeded, made up)."""
    if spec.get("text") == "news":
        return news_sentences(spec["sentences"], Path(spec["fixtures"]))
    return make_sentences(spec["sentences"], spec["seed"])


# ---------------------------------------------------------------------------- FLOPs and bytes


def flops(options: Any) -> dict[str, float]:
    """Multiply-add FLOPs (2 per MAC) per step of each part, from the options."""
    o = options
    e, c = o.char_embed_dim, o.max_characters_per_token
    width = sum(n for _, n in o.filters)
    conv = sum(2 * (c - w + 1) * w * e * n for w, n in o.filters)
    highway = o.n_highway * 2 * width * 2 * width
    char = conv + highway + 2 * width * o.projection_dim
    d, p = o.lstm_dim, o.projection_dim
    lstm = 2 * o.n_layers * (2 * p * 4 * d + 2 * p * 4 * d + 2 * d * p)
    mix = 2 * o.n_output_layers * o.output_dim
    return {"char_cnn": float(char), "lstm": float(lstm), "mix": float(mix)}


def recurrent_bytes(options: Any, bytes_per_weight: float = 4.0) -> float:
    """Weight bytes read at every step: the recurrent and cell-projection matrices."""
    d, p = options.lstm_dim, options.projection_dim
    return 2 * options.n_layers * (p * 4 * d + d * p) * bytes_per_weight


# ---------------------------------------------------------------------------- child processes


def prepared_env(cache: Path | None, prepared: bool | None) -> dict[str, str]:
    """Environment of a child: prepared copies in the bench's own cache, forced on or off."""
    env = dict(os.environ)
    if cache is not None:
        env["ELMO_EDGE_CACHE"] = str(cache)
    if prepared is not None:
        env["ELMO_EDGE_PREPARED"] = "always" if prepared else "0"
    return env


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run this file as a worker on ``spec``; its JSON result."""
    env = {**prepared_env(spec.get("cache_dir") and Path(spec["cache_dir"]),
                          spec.get("prepared")),
           "OMP_NUM_THREADS": str(spec["threads"]),
           "OPENBLAS_NUM_THREADS": str(spec["threads"]), "MKL_NUM_THREADS": str(spec["threads"])}
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"bench worker failed on {spec}:\n{proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def peak_rss_bytes() -> int:
    """This process's peak resident set (VmHWM: ru_maxrss would count the forking parent's)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def worker_limits(spec: dict[str, Any]) -> dict[str, Any]:
    """sgemm GFLOP/s and streaming-read GB/s of NumPy with the spec's threads."""
    import numpy as np

    rng = np.random.default_rng(0)
    n = 4096
    a, b = rng.random((n, n), np.float32), rng.random((n, n), np.float32)
    sgemm = 2 * n**3 / _best_time(np.matmul, a, b, runs=5) / 1e9
    del a, b
    m = rng.random((16384, 8192), np.float32)  # 512 MiB, far beyond the caches
    v = rng.random(8192, np.float32)
    parts = np.array_split(m, spec["threads"])

    def split_gemv() -> None:  # one Python thread per part: BLAS may run a gemv on one core
        workers = [threading.Thread(target=np.matmul, args=(part, v)) for part in parts]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    seconds = min(_best_time(np.matmul, m, v, runs=7), _best_time(split_gemv, runs=7))
    return {"sgemm_gflops": sgemm, "read_gbs": m.nbytes / seconds / 1e9}


def _best_time(fn: Any, *args: Any, runs: int) -> float:
    fn(*args)  # warm-up
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - start)
    return best


def worker_imports(spec: dict[str, Any]) -> dict[str, Any]:
    """Peak RSS of a process that has only imported the runtime (the floor under every row)."""
    import elmo_runtime.embedder  # noqa: F401  (numpy, onnxruntime and the runtime itself)

    return {"peak_rss": peak_rss_bytes()}


def worker_onnx(spec: dict[str, Any]) -> dict[str, Any]:
    from elmo_runtime import Embedder

    sentences = bench_sentences(spec)
    emb = Embedder(spec["model"], provider="cpu", threads=spec["threads"],
                   token_cache_mb=spec["cache_mb"])
    encoded = [0]
    plan = emb.token_cache.plan

    def counting_plan(batch: Any) -> Any:
        result = plan(batch)
        encoded[0] += len(result.token_chars)
        return result

    emb.token_cache.plan = counting_plan  # type: ignore[method-assign]
    first = next(emb.embed_sentences(sentences[:2], batch_size=spec["batch"]))  # warm-up
    if spec["cache_mb"]:
        emb.token_cache.clear()  # the timed pass starts cold
    encoded[0] = 0

    def run_all() -> None:
        for _ in emb.embed_sentences(sentences, batch_size=spec["batch"]):
            pass

    seconds, times = _timed(sentences, spec["batch"], emb.embed_batch, run_all)
    return {**_result(sentences, seconds, times, encoded=encoded[0]),
            "checksum": float(first.astype("float64").sum())}


def _timed(sentences: list[list[str]], batch: int, run_one: Any, run_all: Any,
           ) -> tuple[float, list[float]]:
    """Seconds in all, and per sentence at batch 1 (each sentence its own run)."""
    if batch == 1:
        times = []
        for s in sentences:
            start = time.perf_counter()
            run_one([s])
            times.append(time.perf_counter() - start)
        return sum(times), times
    start = time.perf_counter()
    run_all()
    return time.perf_counter() - start, []


def worker_torch(spec: dict[str, Any]) -> dict[str, Any]:
    import torch
    from elmo_export.presets import load_preset
    from elmo_export.pytorch.modules import BiLM
    from elmo_runtime.batching import plan_batches
    from elmo_runtime.format.chars import pack
    from support.bilm_random import random_weights

    torch.set_num_threads(spec["threads"])
    options = load_preset(spec["preset"])
    model = BiLM.from_elmo_weights(options, random_weights(options, seed=spec["seed"])).eval()
    sentences = bench_sentences(spec)

    @torch.inference_mode()
    def run(batch: list[list[str]]) -> None:
        packed = pack(batch, options.max_characters_per_token)  # the graph's inputs, as ONNX
        layers = model(torch.from_numpy(packed.token_chars).long(),
                       torch.from_numpy(packed.token_index).long()).layers.numpy()
        _ = [layers[j, :, 1 : 1 + len(s)].copy() for j, s in enumerate(batch)]

    def run_all() -> None:
        for idx in plan_batches([len(s) + 2 for s in sentences], spec["batch"]):
            run([sentences[i] for i in idx])

    run(sentences[:2])  # warm-up
    seconds, times = _timed(sentences, spec["batch"], run, run_all)
    return _result(sentences, seconds, times, encoded=None)


def run_allennlp(spec: dict[str, Any]) -> dict[str, Any]:
    """AllenNLP's row: ``bench/allennlp_worker.py`` in the AllenNLP venv, the same batches."""
    from elmo_runtime.batching import plan_batches

    sentences = bench_sentences(spec)
    if spec["batch"] == 1:
        batches = [[i] for i in range(len(sentences))]
    else:
        batches = plan_batches([len(s) + 2 for s in sentences], spec["batch"])
    job = {"options": spec["options"], "weights": spec["weights"], "threads": spec["threads"],
           "sentences": sentences, "batches": [list(map(int, b)) for b in batches]}
    env = {**os.environ, **{k: str(spec["threads"]) for k in
                            ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}}
    env.pop("PYTHONPATH", None)  # the venv's own packages only
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(job, f)  # sentences can exceed a command line's limit
    try:
        proc = subprocess.run([spec["python"], str(Path(__file__).with_name(
            "allennlp_worker.py")), f.name], env=env, capture_output=True, text=True)
    finally:
        os.unlink(f.name)
    if proc.returncode != 0:
        sys.exit(f"AllenNLP worker failed:\n{proc.stderr.strip()[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    times = out["times"] if spec["batch"] == 1 else []
    result = _result(sentences, out["seconds"], times, encoded=None)
    # the worker's VmHWM is not ours: AllenNLP's peak RSS is not measured
    return {**result, "peak_rss": 0, "checksum": out["checksum"]}


def _result(sentences: list[list[str]], seconds: float, times: list[float],
            encoded: int | None) -> dict[str, Any]:
    tokens = sum(len(s) for s in sentences)
    out: dict[str, Any] = {"sentences": len(sentences), "tokens": tokens,
                           "steps": tokens + 2 * len(sentences), "seconds": seconds,
                           "tokens_per_s": tokens / seconds, "encoded_tokens": encoded,
                           "peak_rss": peak_rss_bytes()}
    if times:
        ms = sorted(t * 1e3 for t in times)
        out["p50_ms"] = statistics.median(ms)
        out["p99_ms"] = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
    return out


def cold_start(model: Path | None, env: dict[str, str] | None = None, runs: int = 3) -> float:
    """Median seconds from starting ``elmo embed`` to its written vectors of one line."""
    times = []
    with tempfile.TemporaryDirectory(prefix="elmo-cold-") as tmp:
        for i in range(runs):
            out = Path(tmp) / f"o{i}.npz"
            cmd = [sys.executable, "-m", "elmo_runtime.cli", "embed", "-", str(out)]
            if model is not None:
                cmd += ["--model", str(model)]
            start = time.perf_counter()
            proc = subprocess.run(cmd, input=b"The cat sat on the mat .\n", capture_output=True,
                                  env=env)
            times.append(time.perf_counter() - start)
            if proc.returncode != 0 or not out.is_file():
                sys.exit(f"cold start run failed: {proc.stderr.decode(errors='replace')[-500:]}")
    return statistics.median(times)


# ---------------------------------------------------------------------------- models


def build_models(preset: str, work: Path, seed: int,
                 modes: tuple[str, ...] = QUANT_MODES) -> dict[str, Path]:
    """fp32 (random seeded weights) and the ``modes`` (int8, int4) variants of ``preset``."""
    import onnx
    from elmo_export.graph.builder import build_model
    from elmo_export.presets import load_preset
    from elmo_runtime.format import contract
    from elmo_runtime.quantize import quantize_model
    from support.bilm_random import random_weights

    options = load_preset(preset)
    paths = {"fp32": work / f"{preset}.fp32.onnx"}
    proto = build_model(options, random_weights(options, seed))
    meta = contract.make_metadata(options, {"kind": "random", "seed": seed, "preset": preset})
    onnx.helper.set_model_props(proto, meta)
    onnx.save(proto, str(paths["fp32"]))
    del proto
    for mode in modes:
        paths[mode] = work / f"{preset}.{mode}.onnx"
        quantize_model(paths["fp32"], paths[mode], mode=mode, check=False)
    return paths


# ---------------------------------------------------------------------------- the table


def bench_preset(preset: str, args: argparse.Namespace, limits: dict[str, float],
                 work: Path) -> dict[str, Any]:
    from elmo_export.presets import load_preset

    options = load_preset(preset)
    rows = set(args.rows)
    modes = tuple(m for m in QUANT_MODES if any(f"ONNX {m}" in r for r in rows))
    log(f"{preset}: building the fp32{''.join(', ' + m for m in modes)} models …")
    paths = build_models(preset, work, args.seed, modes)
    cache = work / "cache"
    prepare_s = {k: prepare_copy(p, cache) for k, p in paths.items()
                 if any(r.startswith(f"ONNX {k}") and "prepared" in r for r in rows)}
    common = {"threads": args.threads, "seed": args.seed, "cache_dir": str(cache),
              "text": args.text, "fixtures": str(args.fixtures)}
    sizes = {k: p.stat().st_size for k, p in paths.items()}
    colds: dict[tuple[str, bool], float] = {}
    for _ in range(0 if args.skip_cold else args.rounds):  # alternating rounds, best of them
        for (k, p), ready in ((kp, ready) for ready in (False, True) for kp in paths.items()):
            t = cold_start(p, prepared_env(cache, ready))
            colds[k, ready] = min(t, colds.get((k, ready), t))
    specs: list[tuple[str, dict[str, Any], str | None]] = []
    if ALLENNLP_ROW in rows:
        specs.append((ALLENNLP_ROW, {"engine": "allennlp", **write_bilm_tf(options, work,
                                                                           args.seed),
                                     "python": str(args.allennlp / "bin" / "python")}, None))
    if TORCH_ROW in rows:
        specs.append((TORCH_ROW, {"engine": "torch", "preset": preset}, None))
    for name, key, cache_mb, ready in ONNX_ROWS:
        if name in rows:
            specs.append((name, {"engine": "onnx", "model": str(paths[key]),
                                 "cache_mb": cache_mb, "prepared": ready}, key))
    best: dict[tuple[str, int], dict[str, Any]] = {}
    for rnd in range(args.rounds):
        for name, spec, key in specs:
            for batch, n in ((1, args.b1_sentences), (BATCH, args.sentences)):
                log(f"{preset}: round {rnd + 1}, {name}, batch {batch} …")
                job = {**spec, **common, "batch": batch, "sentences": n}
                result = run_allennlp(job) if spec["engine"] == "allennlp" else child(job)
                log(f"{preset}: round {rnd + 1}, {name}, batch {batch}: "
                    f"{result['tokens_per_s']:.1f} tok/s, load average {os.getloadavg()[0]:.1f}")
                result.update(name=name, batch=batch, model=key, prepared=spec.get("prepared"),
                              file_bytes=sizes.get(key) if key else None,
                              cold_start_s=colds.get((key, spec.get("prepared"))) if key else None)
                old = best.get((name, batch))
                if old is not None:  # speed: the best round; memory: the worst
                    result["peak_rss"] = max(result["peak_rss"], old["peak_rss"])
                    if old["tokens_per_s"] > result["tokens_per_s"]:
                        result = {**old, "peak_rss": result["peak_rss"]}
                best[name, batch] = result
    table = list(best.values())
    base = {r["batch"]: r for r in table if r["name"] == "ONNX fp32"}
    torch = {r["batch"]: r for r in table if r["name"] == TORCH_ROW}
    allen = {r["batch"]: r for r in table if r["name"] == ALLENNLP_ROW}
    for r in table:
        if r["batch"] in base:
            r["x_fp32"] = r["tokens_per_s"] / base[r["batch"]]["tokens_per_s"]
        if r["batch"] in torch:
            r["x_torch"] = r["tokens_per_s"] / torch[r["batch"]]["tokens_per_s"]
        if r["batch"] in allen:
            r["x_allennlp"] = r["tokens_per_s"] / allen[r["batch"]]["tokens_per_s"]
        if r["model"]:
            r["rss_over_file"] = r["peak_rss"] / sizes[r["model"]]
    after = {r["batch"]: r for r in table if r["name"] == "ONNX fp32, prepared"}
    derived = {"before": derive(options, base, sizes["fp32"], limits) if base else None,
               "after": derive(options, after, sizes["fp32"], limits) if after else None,
               "prepare_s": prepare_s}
    if allen and base:  # the same weights: AllenNLP's vectors must be ONNX fp32's
        a, b = allen[1]["checksum"], base[1]["checksum"]
        derived["allennlp_checksum_rel_diff"] = abs(a - b) / max(abs(b), 1e-30)
    return {"preset": preset, "n_parameters": options.n_parameters(), "rows": table,
            "derived": derived, "file_bytes": sizes}


def write_bilm_tf(options: Any, work: Path, seed: int) -> dict[str, str]:
    """The bench's seeded weights as bilm-tf files (options.json + hdf5) for AllenNLP."""
    from elmo_export.bilm_tf.weights import write_weights
    from support.bilm_random import random_weights

    opts, weights = work / "allennlp.options.json", work / "allennlp.weights.hdf5"
    opts.write_text(options.to_json(), encoding="utf-8")
    write_weights(weights, random_weights(options, seed), options)
    return {"options": str(opts), "weights": str(weights)}


def prepare_copy(model: Path, cache: Path) -> float:
    """Seconds to make the prepared copy of ``model`` in ``cache`` (what a first load adds)."""
    from elmo_runtime.loading.prepared import cache as prepared

    start = time.perf_counter()
    prepared.prepare(model, cache)
    return time.perf_counter() - start


def derive(options: Any, fp32: dict[int, dict[str, Any]], weights: int,
           limits: dict[str, float]) -> dict[str, Any]:
    """GFLOP/s at batch 32 (vs the sgemm peak) and batch-1 time vs the bandwidth bound."""
    f = flops(options)
    b32, b1 = fp32[BATCH], fp32[1]
    executed = (f["lstm"] + f["mix"]) * b32["steps"] + f["char_cnn"] * b32["encoded_tokens"]
    per_step = (f["lstm"] + f["mix"] + f["char_cnn"]) * b32["steps"]
    recur = recurrent_bytes(options)
    bound_s = (recur * b1["steps"] + (weights - recur) * b1["sentences"]) / (
        limits["read_gbs"] * 1e9)
    d = {
        "flops_per_step": f,
        "b32_gflops_executed": executed / b32["seconds"] / 1e9,
        "b32_gflops_per_step": per_step / b32["seconds"] / 1e9,
        "b1_bandwidth_bound_s": bound_s,
        "b1_seconds": b1["seconds"],
    }
    d["b32_peak_fraction"] = d["b32_gflops_executed"] / limits["sgemm_gflops"]
    d["b1_bound_fraction"] = bound_s / b1["seconds"]
    return d


def print_preset(result: dict[str, Any], limits: dict[str, float]) -> None:
    mib = 2**20

    def fmt(r: dict[str, Any], key: str, spec: str = ".2f") -> str:
        return format(r[key], spec) if r.get(key) else "–"

    print(f"\n## {result['preset']} ({result['n_parameters'] / 1e6:.1f}M parameters)\n")
    print("| configuration | batch | tok/s | × AllenNLP | × ONNX fp32 | × PyTorch | p50 ms "
          "| p99 ms | peak RSS MiB | RSS / file | file MiB | cold start s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in result["rows"]:
        lat = (f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f}" if "p50_ms" in r else "– | –")
        file = f"{r['file_bytes'] / mib:.1f}" if r["file_bytes"] else "–"
        rss = f"{r['peak_rss'] / mib:.0f}" if r["peak_rss"] else "–"
        print(f"| {r['name']} | {r['batch']} | {r['tokens_per_s']:.1f} | {fmt(r, 'x_allennlp')} "
              f"| {fmt(r, 'x_fp32')} | {fmt(r, 'x_torch')} | {lat} | {rss} "
              f"| {fmt(r, 'rss_over_file')} | {file} | {fmt(r, 'cold_start_s')} |")
    for label, d in (("before", result["derived"]["before"]),
                     ("prepared", result["derived"]["after"])):
        if d is None:
            continue
        print(f"\nfp32 ({label}) batch {BATCH}: {d['b32_gflops_executed']:.1f} GFLOP/s executed = "
              f"{d['b32_peak_fraction']:.0%} of the {limits['sgemm_gflops']:.1f} GFLOP/s sgemm "
              f"peak ({d['b32_gflops_per_step']:.1f} GFLOP/s counting the char CNN at every step)")
        print(f"fp32 ({label}) batch 1: {d['b1_bound_fraction']:.0%} of the bandwidth bound "
              f"({d['b1_bandwidth_bound_s']:.2f} s to read the weights at "
              f"{limits['read_gbs']:.1f} GB/s vs {d['b1_seconds']:.2f} s measured)")
    if "allennlp_checksum_rel_diff" in result["derived"]:
        print(f"AllenNLP vs ONNX fp32, sum of the first sentence's layers: relative difference "
              f"{result['derived']['allennlp_checksum_rel_diff']:.1e} (the same weights)")
    if result["derived"]["prepare_s"]:
        made = ", ".join(f"{k} {v:.1f} s" for k, v in result["derived"]["prepare_s"].items())
        print(f"making the prepared copies (once per model and machine): {made}")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="original,small", help="presets, comma-separated")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sentences", type=int, default=256, help="sentences at batch 32")
    ap.add_argument("--b1-sentences", type=int, default=32, help="sentences at batch 1")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=2,
                    help="alternating rounds; speed is the best round's, peak RSS the worst's")
    ap.add_argument("--skip-torch", action="store_true", help="no PyTorch eager rows")
    ap.add_argument("--allennlp", type=Path, metavar="VENV",
                    help="add AllenNLP's row, run by this venv (bench/allennlp_venv.sh)")
    ap.add_argument("--rows", default=",".join(k for k in ROW_KEYS if k != "allennlp"),
                    help=f"rows by key, comma-separated: {', '.join(ROW_KEYS)}")
    ap.add_argument("--text", choices=("zipf", "news"), default="zipf",
                    help="made-up seeded sentences, or the bilm-tf fixture's news sentences")
    ap.add_argument("--fixtures", type=Path, default=Path(__file__).resolve().parents[2]
                    / "shared" / "fixtures" / "bilm-tf",
                    help="the bilm-tf fixture folder (--text news)")
    ap.add_argument("--skip-cold", action="store_true", help="no cold-start measurements")
    ap.add_argument("--json", type=Path, help="also write every figure here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    keys = args.rows.split(",")
    if args.allennlp and "allennlp" not in keys:
        keys.insert(0, "allennlp")
    if args.skip_torch and "torch" in keys:
        keys.remove("torch")
    if unknown := [k for k in keys if k not in ROW_KEYS]:
        ap.error(f"--rows: unknown {', '.join(unknown)} (known: {', '.join(ROW_KEYS)})")
    if "allennlp" in keys and not args.allennlp:
        ap.error("--rows allennlp needs --allennlp VENV (bench/allennlp_venv.sh makes one)")
    if "fp32" not in keys:
        keys.append("fp32")  # every ratio's baseline
    args.rows = [ROW_KEYS[k] for k in keys]
    if args.worker:
        spec = json.loads(args.worker)
        run = {"limits": worker_limits, "onnx": worker_onnx, "torch": worker_torch,
               "imports": worker_imports}
        print(json.dumps(run[spec["engine"]](spec)))
        return

    import onnxruntime as ort

    started = time.strftime("%Y-%m-%d %H:%M")
    if args.text == "news" and not (args.fixtures / "lm_embeddings_sentences.json").is_file():
        sys.exit(f"{args.fixtures}: no lm_embeddings_sentences.json (--fixtures DIR)")
    machine = (f"{cpu_model()}, {os.cpu_count()} cores, onnxruntime {ort.__version__}, "
               f"{args.threads} threads, load average {os.getloadavg()[0]:.1f} at the start")
    log("measuring the machine's sgemm peak and read bandwidth …")
    limits = child({"engine": "limits", "threads": args.threads})
    limits["imports_rss"] = child({"engine": "imports", "threads": args.threads})["peak_rss"]
    results = []
    with tempfile.TemporaryDirectory(prefix="elmo-bench-") as tmp:
        log("cold start of `elmo embed` on the bundled model …")
        bundled_cold = min((cold_start(None, prepared_env(Path(tmp) / "cache", None))
                            for _ in range(0 if args.skip_cold else args.rounds)), default=None)
        for preset in args.models.split(","):
            results.append(bench_preset(preset, args, limits, Path(tmp)))
    print(f"# elmo-edge bench, {started}\n# {machine}")
    print(f"# `python bench/run.py {' '.join(sys.argv[1:])}`")
    print(f"# NumPy sgemm peak {limits['sgemm_gflops']:.1f} GFLOP/s, streaming read "
          f"{limits['read_gbs']:.1f} GB/s; cold start of `elmo embed` on the bundled model "
          f"{'–' if bundled_cold is None else f'{bundled_cold:.2f}'} s; "
          f"peak RSS of a process that only imported the runtime "
          f"{limits['imports_rss'] / 2**20:.0f} MiB")
    for result in results:
        print_preset(result, limits)
    print(f"\n# load average at the end {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps({
            "date": started, "machine": machine, "argv": sys.argv[1:], "limits": limits,
            "bundled_cold_start_s": bundled_cold, "models": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
