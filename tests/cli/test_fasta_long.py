"""A titin-length protein (35,000 residues) through `elmo embed in.fasta out.h5`: its peak
memory is the output's own size plus a constant (issue 22.4), because a sentence over the
batch cap runs in pieces (Embedder._forward_long) instead of one call whose LSTM input
projection alone takes steps x 4 x lstm_dim floats. bench/long_sequence.py measures the
published sizes; bench/RESULTS.md, "Long sequences"."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import onnx
import pytest
from elmo_runtime.format import contract
from onnx import helper
from support.models import small_options

RESIDUES = 35_000
WORKER = """
import json, sys
from elmo_runtime.output.job import EmbedJob, run_job
from elmo_runtime.settings import EmbedderSettings
fasta, out, model, n, whole = sys.argv[1:6]
cap = int(n) + 2 if whole == "1" else None  # whole: the sentence in one call, as before
run_job(EmbedJob(inputs=(fasta,), output=out, embedder=EmbedderSettings(
    model=model, threads=1, max_sentence_tokens=int(n), max_batch_tokens=cap)))
with open("/proc/self/status") as f:
    peak = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))
print(json.dumps({"peak": peak}))
"""


def peak_rss(tmp_path: Path, model: Path, residues: int, whole: bool = False) -> int:
    fasta = tmp_path / f"p{residues}.fasta"
    seq = ("MKVLAAGGWC" * (residues // 10 + 1))[:residues]
    fasta.write_text(">titin\n" + "\n".join(seq[i:i + 60] for i in range(0, residues, 60)))
    out = tmp_path / f"p{residues}-{int(whole)}.h5"
    proc = subprocess.run([sys.executable, "-c", WORKER, str(fasta), str(out), str(model),
                           str(residues), "1" if whole else "0"],
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr
    with h5py.File(out) as f:
        assert f["titin"].shape == (residues, 32)
    return json.loads(proc.stdout.strip().splitlines()[-1])["peak"]


@pytest.mark.slow
def test_titin_length_peak_memory_is_the_output_plus_a_constant(tmp_path: Path) -> None:
    """A wide LSTM with a narrow output: the whole-sentence call's input projection
    (35,002 x 4 x 2048 float32 = 1.1 GB a layer) dwarfs the output (3 x 35,000 x 32)."""
    elmo_export = pytest.importorskip("elmo_export.graph.builder")
    from support.bilm_random import random_weights

    options = small_options(dim=2048, projection_dim=16, n_layers=2)
    proto = elmo_export.build_model(options, random_weights(options, seed=1))
    helper.set_model_props(proto, contract.make_metadata(options, source={"kind": "test"}))
    model = tmp_path / "wide.onnx"
    onnx.save(proto, str(model))
    floor = peak_rss(tmp_path, model, 10)
    long = peak_rss(tmp_path, model, RESIDUES)
    output = 3 * RESIDUES * 32 * 4 + RESIDUES * 32 * 4  # all layers + the layer sum written
    assert long - floor < output + 256 * 2**20, (floor, long)  # measured: 186 MiB over
    whole = peak_rss(tmp_path, model, RESIDUES, whole=True)
    assert whole - floor > 1 * 2**30, (floor, whole)  # what the pieces avoid
