"""Peak memory of one long protein (titin: ~35,000 residues) through `elmo embed`'s FASTA path.

    python bench/long_sequence.py --preset small --residues 35000 10
    python bench/long_sequence.py --preset original --residues 35000 --modes pieces

Builds a seeded random model of the preset (its ONNX graph only, no parity run; cached in
the temp folder), then for each residue count and mode runs a fresh worker process that
embeds one FASTA record of that many residues into an hdf5 file with the same job as
`elmo embed in.fasta out.h5 --max-sentence-tokens N` and reports its peak RSS (VmHWM),
its wall time and the sizes that bound it: the model file, the all-layer output
``(L+1, n, 2P)`` float32 the runtime assembles, and the layer sum it writes ``(n, 2P)``.
Mode ``pieces`` is the runtime as it is (a sentence over the batch cap runs in pieces);
``whole`` lifts the cap so the sentence runs in one call (the behaviour before).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TESTS_DIR = Path(__file__).resolve().parents[1] / "tests"
if str(TESTS_DIR) not in sys.path:
    sys.path.append(str(TESTS_DIR))

RESIDUES = "ACDEFGHIKLMNPQRSTVWY"


def build(preset: str) -> Path:
    """A seeded random model of ``preset`` (graph only), cached in the temp folder."""
    path = Path(tempfile.gettempdir()) / f"elmo-bench-long-{preset}.onnx"
    if path.is_file():
        return path
    import onnx
    from elmo_export.graph.builder import build_model
    from elmo_export.presets import load_preset
    from elmo_runtime.format import contract
    from onnx import helper
    from support.bilm_random import random_weights

    options = load_preset(preset)
    proto = build_model(options, random_weights(options, seed=0))
    helper.set_model_props(proto, contract.make_metadata(options, source={"kind": "bench"}))
    tmp = path.with_suffix(".tmp")
    onnx.save(proto, str(tmp))
    os.replace(tmp, path)
    return path


def peak_rss() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    import random

    from elmo_runtime import embedder
    from elmo_runtime.output.job import EmbedJob, run_job
    from elmo_runtime.settings import EmbedderSettings

    n = spec["residues"]
    rng = random.Random(0)
    work = Path(spec["work"])
    fasta = work / f"titin-{n}.fasta"
    seq = "".join(rng.choice(RESIDUES) for _ in range(n))
    fasta.write_text(">long\n" + "\n".join(seq[i:i + 60] for i in range(0, n, 60)) + "\n")
    out = work / f"out-{n}-{spec['mode']}.h5"
    whole = spec["mode"] == "whole"  # the cap lifted: one call for the whole sentence
    settings = EmbedderSettings(model=spec["model"], threads=spec["threads"],
                                max_sentence_tokens=max(n, 1),
                                max_batch_tokens=n + 2 if whole else None)
    job = EmbedJob(inputs=(str(fasta),), output=str(out), embedder=settings)
    start = time.perf_counter()
    run_job(job)
    seconds = time.perf_counter() - start
    info = embedder.Embedder(spec["model"]).info.options
    return {"residues": n, "mode": spec["mode"], "seconds": round(seconds, 1),
            "peak_rss_mib": round(peak_rss() / 2**20, 1),
            "all_layers_mib": round(info.n_output_layers * n * info.output_dim * 4 / 2**20, 1),
            "written_mib": round(n * info.output_dim * 4 / 2**20, 1),
            "h5_mib": round(out.stat().st_size / 2**20, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--residues", type=int, nargs="+", default=[35_000, 10])
    parser.add_argument("--modes", nargs="+", default=["pieces", "whole"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    model = build(args.preset)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"# {args.preset}: {model} ({model.stat().st_size / 2**20:.1f} MiB); "
          f"load average {os.getloadavg()[0]:.1f}; {when}", flush=True)
    with tempfile.TemporaryDirectory() as work:
        for n in args.residues:
            for mode in args.modes:
                spec = {"model": str(model), "residues": n, "mode": mode,
                        "threads": args.threads, "work": work}
                env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
                proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)],
                                      env=env, capture_output=True, text=True)
                if proc.returncode != 0:
                    print(json.dumps({**spec, "failed": proc.stderr.strip()[-500:]}), flush=True)
                    continue
                print(proc.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
