"""bench/run.py: the FLOP and byte counts it divides by, and a smoke run of the whole table."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO

BENCH = REPO / "bench" / "run.py"


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_run", BENCH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_flops_of_the_original_architecture() -> None:
    """~204 MFLOP per token for published ELMo: 151 in the LSTMs, 53 in the char CNN."""
    presets = pytest.importorskip("elmo_export.presets")
    bench = _bench_module()
    f = bench.flops(presets.load_preset("original"))
    assert f["lstm"] == 4 * (2 * 512 * 16384 * 2 + 2 * 4096 * 512)
    assert round(f["char_cnn"] / 1e6, 1) == 53.3
    assert 203e6 < f["lstm"] + f["char_cnn"] + f["mix"] < 205e6
    # 2 directions x 2 layers x (512 x 16384 + 4096 x 512) float32 weights per step
    assert bench.recurrent_bytes(presets.load_preset("original")) == 4 * 10_485_760 * 4


def test_sentences_are_seeded() -> None:
    bench = _bench_module()
    assert bench.make_sentences(5, seed=1) == bench.make_sentences(5, seed=1)
    assert bench.make_sentences(5, seed=1) != bench.make_sentences(5, seed=2)


@pytest.mark.slow
def test_bench_runs_end_to_end(tmp_path: Path) -> None:
    pytest.importorskip("elmo_export")
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--models", "tiny", "--threads", "1", "--sentences", "8",
         "--b1-sentences", "2", "--rounds", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| ONNX int8 | 32 |" in proc.stdout and "| PyTorch eager fp32 | 1 |" in proc.stdout
    assert "| ONNX fp32, prepared | 32 |" in proc.stdout
    result = json.loads(out.read_text())
    rows = result["models"][0]["rows"]
    assert len(rows) == 18 and all(r["tokens_per_s"] > 0 and r["peak_rss"] > 0 for r in rows)
    assert all(r["cold_start_s"] > 0 for r in rows if r["model"])
    assert {r["prepared"] for r in rows if r["model"]} == {True, False}
    assert result["limits"]["sgemm_gflops"] > 0 and result["limits"]["read_gbs"] > 0
    for derived in (result["models"][0]["derived"]["before"],
                    result["models"][0]["derived"]["after"]):
        assert derived["b32_peak_fraction"] > 0 and derived["b1_bound_fraction"] > 0
    assert set(result["models"][0]["derived"]["prepare_s"]) == {"fp32", "int8", "int4"}


def test_profile_ops_and_rows_per_call_run(tiny_model_path: Path) -> None:
    """bench/profile_ops.py prints a share per op kind; bench/rows_per_call.py both plans."""
    profile = subprocess.run(
        [sys.executable, str(REPO / "bench" / "profile_ops.py"), str(tiny_model_path),
         "--b1", "2", "--b32", "1", "--threads", "1"],
        capture_output=True, text=True, timeout=300,
    )
    assert profile.returncode == 0, profile.stderr[-2000:]
    assert profile.stdout.count("| op | share | calls |") == 2
    shares = [float(line.split("|")[2].strip(" %")) for line in profile.stdout.splitlines()
              if line.startswith("| ") and line.strip().endswith("|") and "%" in line]
    assert shares and all(0 <= s <= 100 for s in shares)
    rows = subprocess.run(
        [sys.executable, str(REPO / "bench" / "rows_per_call.py"), str(tiny_model_path),
         str(tiny_model_path), "--sentences", "40", "--rounds", "1", "--threads", "1"],
        capture_output=True, text=True, timeout=300,
    )
    assert rows.returncode == 0, rows.stderr[-2000:]
    assert "32 rows: calls of [32, 8] rows" in rows.stdout
    assert rows.stdout.count("tok/s") == 4


def test_news_text_cycles_the_fixture_sentences(tmp_path: Path) -> None:
    bench = _bench_module()
    (tmp_path / "lm_embeddings_sentences.json").write_text(json.dumps([["a b", "c"], ["d e f"]]))
    assert bench.news_sentences(5, tmp_path) == [["a", "b"], ["c"], ["d", "e", "f"], ["a", "b"],
                                                 ["c"]]


@pytest.mark.parametrize(("argv", "message"), [
    (["--rows", "fp32,nope"], "--rows: unknown nope"),
    (["--rows", "allennlp,fp32"], "--rows allennlp needs --allennlp VENV"),
])
def test_rows_are_checked_before_anything_runs(argv: list[str], message: str) -> None:
    proc = subprocess.run([sys.executable, str(BENCH), *argv], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and message in proc.stderr
