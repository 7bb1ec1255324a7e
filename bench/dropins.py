"""Each drop-in next to the tool it replaces: throughput and peak memory, same text, same threads.

    bash .ci/oracles.sh                      # .venv-a09 (AllenNLP 0.9), .venv-se (simple_elmo)
    python bench/dropins.py --threads 2 [--json bench/results/dropins.json]

The model: SeqVec's options (the original ELMo's shapes: 4096/512, 2 highway, 93.6M
parameters) with seeded random weights, written once as an NLPL-style folder (speed does not
depend on the weights). Every measurement is its own process (peak RSS = that process's
VmHWM, the model load included); the drop-in's first use converts the model into a fresh
cache first (timed and measured too, in its own process).

* simple_elmo: ``load(DIR, max_batch_size=32)``, then its default call
  ``get_elmo_vectors(texts)`` (warm-up on, layers="average") on the 30 bilm-tf fixture
  sentences, timed over two calls (each simple_elmo call opens a session and re-assigns
  every weight; the drop-in's call does not).
* AllenNLP 0.9: ``embed_batch`` of 20 random proteins (50–400 residues) as one batch, after
  one untimed call on the same batch (the SeqVec workload); timed over two calls.

Prints one table (tok/s, × the replaced tool, peak RSS MiB) and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SEQVEC = REPO / "tests" / "support" / "seqvec_options.json"
CHILD = r"""
import json, os, resource, sys, time, warnings
warnings.simplefilter("ignore")
task, impl, model, data, threads = sys.argv[1:6]
threads = int(threads)
with open(data, encoding="utf-8") as f:
    items = json.load(f)

def peak():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

t0 = time.perf_counter()
if task == "convert":
    from elmo_runtime.compat.converted import model_for
    model_for(model)
    load = time.perf_counter() - t0
    times = []
elif task == "simple_elmo":
    if impl == "oracle":
        import logging
        from simple_elmo import ElmoModel
        m = ElmoModel(); logging.disable(logging.INFO)
        m.load(model, max_batch_size=32)
    else:
        from elmo_runtime.compat.simple_elmo import ElmoModel
        m = ElmoModel(); m.load(model, max_batch_size=32, threads=threads)
    load = time.perf_counter() - t0
    times = []
    for _ in range(2):
        t = time.perf_counter(); m.get_elmo_vectors(items); times.append(time.perf_counter() - t)
else:
    if impl == "oracle":
        import torch
        torch.set_num_threads(threads)
        from allennlp.commands.elmo import ElmoEmbedder
        e = ElmoEmbedder(os.path.join(model, "options.json"), os.path.join(model, "model.hdf5"))
    else:
        from elmo_runtime.compat.allennlp import ElmoEmbedder
        e = ElmoEmbedder(os.path.join(model, "options.json"), os.path.join(model, "model.hdf5"),
                         threads=threads)
    load = time.perf_counter() - t0
    batch = [list(p) for p in items]
    e.embed_batch(batch)
    times = []
    for _ in range(2):
        t = time.perf_counter(); e.embed_batch(batch); times.append(time.perf_counter() - t)
children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # the converter
print(json.dumps({"load_s": load, "times_s": times, "peak_rss": max(peak(), children)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--work", type=Path, help="folder for the model (kept for the next "
                        "run) and a fresh conversion cache (default: a temporary folder)")
    parser.add_argument("--options", type=Path, default=SEQVEC,
                        help="options.json of the model (default: SeqVec's, the original shapes)")
    args = parser.parse_args()
    venvs = {"simple_elmo": REPO / ".venv-se" / "bin" / "python",
             "allennlp": REPO / ".venv-a09" / "bin" / "python"}
    for python in venvs.values():
        if not python.is_file():
            sys.exit(f"{python} not found: bash .ci/oracles.sh builds the oracle venvs")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        model, texts, proteins = prepare(work, args.options)
        cache = Path(tempfile.mkdtemp(prefix="cache-", dir=work))
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads),
               "TF_NUM_INTRAOP_THREADS": str(args.threads), "TF_NUM_INTEROP_THREADS": "1",
               "TF_USE_LEGACY_KERAS": "0", "TF_CPP_MIN_LOG_LEVEL": "3",
               "ELMO_EDGE_CACHE": str(cache),
               "PYTHONPATH": os.pathsep.join([str(REPO / "runtime"), str(REPO / "export")])}
        rows = [("first-use conversion (drop-in)", "convert", "elmo-edge", sys.executable,
                 texts, 0)]
        for task, data, count in (("simple_elmo", texts, count_tokens(texts)),
                                  ("allennlp", proteins, sum(map(len, json.loads(
                                      proteins.read_text()))))):
            rows.append((f"{task}: the tool", task, "oracle", str(venvs[task]), data, count))
            rows.append((f"{task}: the drop-in", task, "elmo-edge", sys.executable, data,
                         count))
        results = []
        for label, task, impl, python, data, tokens in rows:
            out = subprocess.run([python, "-c", CHILD, task, impl, str(model), str(data),
                                  str(args.threads)], env=env, capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"{label} failed:\n{out.stderr[-2000:]}")
            r = json.loads(out.stdout.strip().splitlines()[-1])
            r.update(label=label, task=task, impl=impl, tokens=tokens)
            if r["times_s"]:
                r["tok_s"] = tokens / (sum(r["times_s"]) / len(r["times_s"]))
            results.append(r)
            print(f"{label}: {json.dumps(r)}", file=sys.stderr, flush=True)  # as it comes
    report(results, args)


def prepare(work: Path, options_path: Path) -> tuple[Path, Path, Path]:
    """The NLPL-style model folder, the texts and the proteins (JSON files) in ``work``."""
    import numpy as np
    sys.path.insert(0, str(REPO / "tests"))
    sys.path[:0] = [str(REPO / "runtime"), str(REPO / "export")]
    from elmo_export.bilm_tf.weights import write_weights
    from elmo_runtime.format.options import parse_options
    from support.bilm_random import random_weights

    options = json.loads(options_path.read_text())
    model = work / f"model-{options_path.stem}"
    model.mkdir(parents=True, exist_ok=True)
    if not (model / "model.hdf5").is_file():
        (model / "options.json").write_text(json.dumps(options))
        parsed = parse_options(options)
        write_weights(model / "model.hdf5", random_weights(parsed, seed=0), parsed)
    fixtures = Path(os.environ.get("ELMO_FIXTURES", REPO.parent / "shared" / "fixtures" /
                                   "bilm-tf"))
    sentences = json.loads((fixtures / "lm_embeddings_sentences.json").read_text())
    texts = work / "texts.json"
    texts.write_text(json.dumps([s.split() for batch in sentences for s in batch]))
    rng = np.random.default_rng(0)
    residues = np.array(list("ACDEFGHIKLMNPQRSTVWY"))
    proteins = work / "proteins.json"
    proteins.write_text(json.dumps(["".join(rng.choice(residues, size=int(n)))
                                    for n in rng.integers(50, 401, size=20)]))
    return model, texts, proteins


def count_tokens(path: Path) -> int:
    return sum(len(t) for t in json.loads(path.read_text()))


def report(results: list[dict], args: argparse.Namespace) -> None:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f
                    if line.startswith("model name")), platform.processor())
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {cpu}, {os.cpu_count()} "
          f"CPUs, {args.threads} threads, load average {os.getloadavg()[0]:.1f}")
    print("| run | tokens | load s | call s | tok/s | × the tool | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    base = {}
    for r in results:
        calls = " / ".join(f"{t:.2f}" for t in r["times_s"]) or "–"
        ratio = "–"
        if r.get("tok_s") and r["impl"] == "oracle":
            base[r["task"]] = r["tok_s"]
            ratio = "1.00"
        elif r.get("tok_s") and r["task"] in base:
            ratio = f"{r['tok_s'] / base[r['task']]:.2f}"
        tok_s = f"{r['tok_s']:.0f}" if r.get("tok_s") else "–"
        print(f"| {r['label']} | {r['tokens'] or '–'} | {r['load_s']:.1f} | {calls} | {tok_s} "
              f"| {ratio} | {r['peak_rss'] / 2**20:.0f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
