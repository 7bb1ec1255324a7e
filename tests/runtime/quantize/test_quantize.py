"""`elmo quantize`: int8 / fp16 / int4 models that load, run, record how they were made,
and are refused when they drift from their float32 source."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from elmo_runtime.cli import ElmoGroup
from elmo_runtime.cli.quantize import quantize_command
from elmo_runtime.errors import ElmoError, InputError, ModelError
from elmo_runtime.format import chars, contract
from elmo_runtime.loading.session import DISABLED_OPTIMIZERS
from elmo_runtime.quantize import (
    MODES,
    SAMPLE_SENTENCES,
    THRESHOLDS,
    QuantizeError,
    QuantizeWarning,
    load_sentences,
    quantize_model,
)
from support import REPO
from support.notorch import BLOCK_TORCH
from support.requires import missing, requires

CUDA = "CUDAExecutionProvider"
# int4 needs onnx-ir (the quantize extra): without it the int4 cases skip, saying so
INT4 = requires("onnx_ir")
MODE_PARAMS = [pytest.param(m, marks=INT4) if m == "int4" else m for m in MODES]
AVAILABLE_MODES = tuple(m for m in MODES if m != "int4" or not missing("onnx_ir"))


def _meta(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def _quant(path: Path) -> dict:
    return json.loads(_meta(path)[contract.KEY_QUANT])


def _subgraphs(graph: onnx.GraphProto) -> list[onnx.GraphProto]:
    return [a.g for n in graph.node for a in n.attribute if a.type == onnx.AttributeProto.GRAPH]


def _session(path: Path, provider: str = "CPUExecutionProvider") -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(
        str(path),
        options,
        providers=[provider],
        disabled_optimizers=DISABLED_OPTIMIZERS,
    )


def _sentences(lengths: list[int], seed: int = 0) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    words = [s for line in SAMPLE_SENTENCES for s in line.split()]
    return [[str(w) for w in rng.choice(words, size=n)] for n in lengths]


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture(scope="module")
def quantized(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The bilm-tf fixture model in every mode this installation can make
    (:data:`AVAILABLE_MODES`), each written with the default check."""
    out = tmp_path_factory.mktemp("quantized")
    paths = {}
    for mode in AVAILABLE_MODES:
        paths[mode] = out / f"tiny.{mode}.onnx"
        report = quantize_model(tiny_model_path, paths[mode], mode=mode)
        assert report.check is not None and report.check.passed, report.check
    return paths


# ---------------------------------------------------------------------------- every mode


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_mode_runs_at_every_batch_size_and_length(quantized, tiny_model_path, mode):
    """Batch 1, 3, 17 with lengths 1..60 mixed in a batch: right shapes, close to float32."""
    options = contract.parse_metadata(_meta(tiny_model_path), "tiny").options
    n_layers, d, p = options.n_layers, options.lstm_dim, options.projection_dim
    reference, session = _session(tiny_model_path), _session(quantized[mode])
    rng = np.random.default_rng(1)
    cases = [[1], [60], [1, 60, 17], [1, 60, *rng.integers(1, 61, size=15).tolist()]]
    for lengths in cases:
        ids, steps = chars.batch_to_ids(_sentences(lengths), options.max_characters_per_token)
        b, t = ids.shape[:2]
        feed = contract.char_ids_feed(ids)
        got = session.run(list(contract.OUTPUTS), feed)
        want = reference.run([contract.OUTPUT_LAYERS], feed)[0]
        layers, mask, state_c, state_h, token_vectors = got
        assert token_vectors.shape == (len(feed[contract.INPUT_TOKEN_CHARS]), p)
        assert layers.shape == (b, n_layers + 1, t, 2 * p) and layers.dtype == np.float32
        assert mask.shape == (b, t) and (mask.sum(1) == steps).all()
        assert state_c.shape == (2, n_layers, b, d) and state_c.dtype == np.float32
        assert state_h.shape == (2, n_layers, b, p) and state_h.dtype == np.float32
        for row, n in enumerate(steps):
            assert np.isfinite(layers[row]).all()
            assert not layers[row, :, n:].any(), "padded steps must stay zero"
            cos = _cosine(layers[row, :, 1 : n - 1], want[row, :, 1 : n - 1])
            assert cos.min() > 0.95, (mode, lengths, float(cos.min()))


@pytest.mark.parametrize("mode", MODE_PARAMS)
def test_metadata_records_mode_and_keeps_the_rest(quantized, tiny_model_path, mode):
    src, dst = _meta(tiny_model_path), _meta(quantized[mode])
    assert dst.keys() == src.keys()
    assert all(dst[k] == v for k, v in src.items() if k != contract.KEY_QUANT)
    q = _quant(quantized[mode])
    assert q["mode"] == mode
    assert q["source"]["file"] == tiny_model_path.name
    assert q["source"]["size"] == tiny_model_path.stat().st_size
    assert len(q["source"]["sha256"]) == 64
    assert q["tool"].startswith("elmo-edge ")
    assert q["check"]["passed"] and q["check"]["threshold_mean_cosine"] == THRESHOLDS[mode]
    assert [c["layer"] for c in q["check"]["cosine"]] == [0, 1, 2]
    info = contract.parse_metadata(dst, "q")  # the runtime still reads it
    assert info.quantization["mode"] == mode


def test_the_check_measures_the_fixture_model_per_layer(tiny_model_path, tmp_path):
    report = quantize_model(tiny_model_path, tmp_path / "q.onnx", mode="int8")
    check = report.check
    assert check is not None and check.sentences == len(SAMPLE_SENTENCES)
    assert check.tokens == sum(len(s.split()) for s in SAMPLE_SENTENCES)
    assert len(check.layers) == 3
    for layer in check.layers:
        assert THRESHOLDS["int8"] <= layer.mean <= 1.0 + 1e-9
        assert layer.min <= layer.mean
    assert report.size_after < 0.4 * report.size_before


# ---------------------------------------------------------------------------- per mode


def test_int8_quantizes_the_matmuls_inside_the_scan_bodies(quantized):
    graph = onnx.load(str(quantized["int8"])).graph
    bodies = _subgraphs(graph)
    assert len(bodies) == 4
    for body in bodies:
        ops = [n.op_type for n in body.node]
        assert ops.count("MatMulInteger") == 2 and "MatMul" not in ops, ops
    top = [n.op_type for n in graph.node]
    assert "MatMul" not in top and "Conv" in top  # the char CNN stays float (measured slower)
    assert _quant(quantized["int8"])["quantized_nodes"] == {"MatMulInteger": 15}


def test_int8_per_channel(tiny_model_path, tmp_path):
    report = quantize_model(tiny_model_path, tmp_path / "pc.onnx", per_channel=True)
    assert report.check is not None and report.check.passed
    assert _quant(tmp_path / "pc.onnx")["per_channel"] is True


@INT4
def test_int4_is_block_wise_in_the_bodies_too(tiny_model_path, quantized, tmp_path):
    graph = onnx.load(str(quantized["int4"])).graph
    for body in _subgraphs(graph):
        ops = [n.op_type for n in body.node]
        assert ops.count("MatMulNBits") == 2 and "MatMul" not in ops
    q = _quant(quantized["int4"])
    assert q["block_size"] == 32 and q["quantized_nodes"] == {"MatMulNBits": 15}
    quantize_model(tiny_model_path, tmp_path / "b16.onnx", mode="int4", block_size=16)
    assert _quant(tmp_path / "b16.onnx")["block_size"] == 16


def test_fp16_keeps_float32_io_and_halves_every_weight(quantized, tiny_model_path):
    graph = onnx.load(str(quantized["fp16"])).graph
    f32, f16, i32 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.INT32
    io = {v.name: v.type.tensor_type.elem_type for v in (*graph.input, *graph.output)}
    assert io == {
        contract.INPUT_TOKEN_CHARS: i32,
        contract.INPUT_CACHED_VECTORS: f32,
        contract.INPUT_TOKEN_INDEX: i32,
        contract.INPUT_STATE_C: f32,
        contract.INPUT_STATE_H: f32,
        contract.OUTPUT_LAYERS: f32,
        contract.OUTPUT_MASK: i32,
        contract.OUTPUT_STATE_C: f32,
        contract.OUTPUT_STATE_H: f32,
        contract.OUTPUT_TOKEN_VECTORS: f32,
    }
    # float32 initializers: only the defaults of the optional float inputs
    float_inits = {t.name for t in graph.initializer if t.data_type == f32}
    assert float_inits == {contract.INPUT_CACHED_VECTORS, contract.INPUT_STATE_C,
                           contract.INPUT_STATE_H}
    for body in _subgraphs(graph):
        assert body.initializer and all(t.data_type == f16 for t in body.initializer)
        assert all(v.type.tensor_type.elem_type == f16 for v in body.output)
    assert quantized["fp16"].stat().st_size < 0.6 * tiny_model_path.stat().st_size


def test_fp16_accepts_float32_states(quantized, tiny_model_path):
    """Fed states stay float32 for the caller; results match the float32 model's."""
    options = contract.parse_metadata(_meta(tiny_model_path), "tiny").options
    ids, _ = chars.batch_to_ids(_sentences([3, 9]), options.max_characters_per_token)
    rng = np.random.default_rng(0)
    feed = {
        **contract.char_ids_feed(ids),
        contract.INPUT_STATE_C: rng.uniform(-1, 1, (2, 2, 2, options.lstm_dim)).astype(np.float32),
        contract.INPUT_STATE_H: rng.uniform(-1, 1, (2, 2, 2, options.projection_dim)).astype(
            np.float32
        ),
    }
    want = _session(tiny_model_path).run(None, feed)
    got = _session(quantized["fp16"]).run(None, feed)
    for w, g in zip(want, got, strict=True):
        assert g.dtype == w.dtype
        np.testing.assert_allclose(g, w, atol=2e-2)


@pytest.mark.gpu
def test_fp16_on_cuda(quantized, tiny_model_path):
    if CUDA not in ort.get_available_providers():
        pytest.skip(f"no {CUDA} in this onnxruntime ({', '.join(ort.get_available_providers())})")
    session = _session(quantized["fp16"], CUDA)
    assert session.get_providers()[0] == CUDA
    options = contract.parse_metadata(_meta(tiny_model_path), "tiny").options
    ids, steps = chars.batch_to_ids(_sentences([1, 60, 17]), options.max_characters_per_token)
    feed = contract.char_ids_feed(ids)
    got = session.run([contract.OUTPUT_LAYERS], feed)[0]
    want = _session(tiny_model_path).run([contract.OUTPUT_LAYERS], feed)[0]
    assert got.dtype == np.float32
    for row, n in enumerate(steps):
        cos = _cosine(got[row, :, 1 : n - 1], want[row, :, 1 : n - 1])
        assert cos.mean() >= THRESHOLDS["fp16"]


def test_every_mode_runs_through_the_embedder_without_torch(quantized):
    """The runtime's own session (CPU) loads each mode (int4 with onnx-ir); a crash here fails,
    not kills, pytest."""
    code = BLOCK_TORCH + textwrap.dedent(
        """
        import sys
        from elmo_runtime import Embedder
        for path in sys.argv[1:]:
            out = Embedder(path, provider="cpu").embed_batch([["a"], ["The", "cat", "sat", "."]])
            assert [v.shape[:2] for v in out] == [(3, 1), (3, 4)], [v.shape for v in out]
        assert "torch" not in sys.modules
        print("ok")
        """
    )
    paths = [str(quantized[m]) for m in AVAILABLE_MODES]
    proc = subprocess.run(
        [sys.executable, "-c", code, *paths], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0 and "ok" in proc.stdout, (proc.returncode, proc.stderr[-2000:])


def test_quantizing_needs_no_torch(tiny_model_path, tmp_path):
    code = BLOCK_TORCH + textwrap.dedent(
        """
        import sys
        from elmo_runtime.quantize import quantize_model
        for mode in sys.argv[3:]:
            quantize_model(sys.argv[1], sys.argv[2] + "." + mode, mode=mode, check=False)
        assert "torch" not in sys.modules
        print("ok")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tiny_model_path), str(tmp_path / "q"), *AVAILABLE_MODES],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]


@INT4
def test_int4_leaves_the_callers_logging_alone(tiny_model_path, tmp_path):
    """onnxruntime's 4-bit quantizer calls logging.basicConfig on import; we shield it."""
    code = textwrap.dedent(
        """
        import logging, sys
        from elmo_runtime.quantize import quantize_model
        quantize_model(sys.argv[1], sys.argv[2], mode="int4", check=False)
        root = logging.getLogger()
        assert not root.handlers and root.level == logging.WARNING, (root.handlers, root.level)
        print("ok")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tiny_model_path), str(tmp_path / "q4.onnx")],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]
    assert "INFO" not in proc.stderr


# ---------------------------------------------------------------------------- the check


def test_check_refuses_a_degraded_model_and_writes_nothing(tiny_model_path, tmp_path):
    dst = tmp_path / "q.onnx"
    with pytest.raises(QuantizeError, match=r"drifts too far.*layer 0 mean cosine .* < 1\.01"):
        quantize_model(tiny_model_path, dst, threshold=1.01)
    assert _files(tmp_path) == []


def test_force_writes_a_degraded_model_with_a_warning(tiny_model_path, tmp_path):
    dst = tmp_path / "q.onnx"
    with pytest.warns(QuantizeWarning, match="WRITTEN ANYWAY"):
        report = quantize_model(tiny_model_path, dst, threshold=1.01, force=True)
    assert report.forced and report.check is not None and not report.check.passed
    check = _quant(dst)["check"]
    assert check["passed"] is False and check["forced"] is True


def test_no_check_records_that_it_was_skipped(tiny_model_path, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = quantize_model(tiny_model_path, tmp_path / "q.onnx", check=False)
    assert report.check is None
    assert _quant(tmp_path / "q.onnx")["check"] == {"skipped": True}


def test_check_on_given_sentences(tiny_model_path, tmp_path):
    sentences = [["Hello", "world", "."], [], ["One"]]
    report = quantize_model(tiny_model_path, tmp_path / "q.onnx", sentences=sentences)
    assert report.check is not None
    assert (report.check.sentences, report.check.tokens) == (2, 4)
    with pytest.raises(InputError, match="no tokens"):
        quantize_model(tiny_model_path, tmp_path / "r.onnx", sentences=[[], []])


def test_load_sentences(tmp_path):
    good = tmp_path / "s.txt"
    good.write_bytes("\ufeffThe cat  sat .\n\n  \nnaïve 日本語\r\n".encode())
    assert load_sentences(good) == [["The", "cat", "sat", "."], ["naïve", "日本語"]]
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\nbro\xffken\n")
    with pytest.raises(InputError, match=r"bad\.txt:2: invalid UTF-8 \(byte 0xff at column 4\)$"):
        load_sentences(bad)
    blank = tmp_path / "blank.txt"
    blank.write_text("\n \n", encoding="utf-8")
    with pytest.raises(InputError, match="no sentences"):
        load_sentences(blank)
    with pytest.raises(InputError, match="no such sentences file"):
        load_sentences(tmp_path / "missing.txt")


# ---------------------------------------------------------------------------- bad input


def test_refuses_an_already_quantized_model(quantized, tmp_path):
    with pytest.raises(QuantizeError, match=r"tiny\.int8\.onnx: already quantized \(mode int8\)"):
        quantize_model(quantized["int8"], tmp_path / "again.onnx", mode="int4")


def test_refuses_a_non_elmo_onnx_model(not_elmo_model_path, tmp_path):
    with pytest.raises(ModelError, match=r"identity\.onnx: not an elmo-edge model"):
        quantize_model(not_elmo_model_path, tmp_path / "q.onnx")


@pytest.mark.parametrize("content", [b"", b"hello, I am text\n", bytes(range(256))])
def test_refuses_a_non_onnx_file(tmp_path, content):
    src = tmp_path / "model.onnx"
    src.write_bytes(content)
    with pytest.raises(ModelError, match=r"model\.onnx: not (an|a readable) ONNX model"):
        quantize_model(src, tmp_path / "q.onnx")


def test_refuses_a_missing_model(tmp_path):
    with pytest.raises(ModelError, match=r"nope\.onnx: no such model file"):
        quantize_model(tmp_path / "nope.onnx", tmp_path / "q.onnx")


def test_refuses_bad_destinations(tiny_model_path, tmp_path):
    with pytest.raises(ElmoError, match=r"directory .*missing does not exist"):
        quantize_model(tiny_model_path, tmp_path / "missing" / "q.onnx")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ElmoError, match="is not a directory"):
        quantize_model(tiny_model_path, blocker / "q.onnx")
    with pytest.raises(ElmoError, match="is a directory"):
        quantize_model(tiny_model_path, tmp_path)
    with pytest.raises(ElmoError, match="is the source model"):
        quantize_model(tiny_model_path, tiny_model_path)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "int3"}, "unknown quantization mode 'int3'"),
        ({"mode": "fp16", "per_channel": True}, "per-channel scales apply to int8 only"),
        ({"mode": "int8", "block_size": 64}, "block size applies to int4 only"),
        ({"mode": "int4", "block_size": 48}, "power of two ≥ 16, found 48"),
        ({"mode": "int4", "block_size": 8}, "power of two ≥ 16, found 8"),
    ],
)
def test_refuses_settings_that_do_not_apply(tiny_model_path, tmp_path, kwargs, message):
    with pytest.raises(QuantizeError, match=message):
        quantize_model(tiny_model_path, tmp_path / "q.onnx", **kwargs)
    assert _files(tmp_path) == []


# ---------------------------------------------------------------------------- CLI


@pytest.fixture
def elmo() -> ElmoGroup:
    group = ElmoGroup("elmo")
    group.add_command(quantize_command)
    return group


def test_cli_prints_sizes_and_the_cosine_table(elmo, tiny_model_path, tmp_path):
    out = tmp_path / "q.onnx"
    result = CliRunner().invoke(elmo, ["quantize", str(tiny_model_path), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "int8: " in result.output and "% of the source" in result.output
    lines = result.output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split() == ["layer", "mean", "min"])
    rows = [line.split() for line in lines[header + 1 : header + 4]]
    assert [r[0] for r in rows] == ["0", "1", "2"]
    assert all(0.99 <= float(r[1]) <= 1.0 for r in rows)
    assert "mean ≥ 0.99 on every layer — passed" in result.output
    assert _quant(out)["mode"] == "int8"


@INT4
def test_cli_modes_and_options(elmo, tiny_model_path, tmp_path):
    sentences = tmp_path / "s.txt"
    sentences.write_text("The cat sat .\nA bank .\n", encoding="utf-8")
    runner = CliRunner()
    args = ["quantize", str(tiny_model_path), "-o", str(tmp_path / "q4.onnx"), "--mode", "int4",
            "--block-size", "16", "--check", str(sentences)]
    result = runner.invoke(elmo, args)
    assert result.exit_code == 0, result.output
    assert "7 tokens in 2 sentences" in result.output
    assert _quant(tmp_path / "q4.onnx")["block_size"] == 16
    args = ["quantize", str(tiny_model_path), "-o", str(tmp_path / "q8.onnx"), "--per-channel",
            "--no-check"]
    result = runner.invoke(elmo, args)
    assert result.exit_code == 0, result.output
    assert "check: skipped" in result.output


def test_cli_errors_are_one_line(elmo, tiny_model_path, quantized, tmp_path):
    runner = CliRunner()
    result = runner.invoke(elmo, ["quantize", str(quantized["fp16"]), "-o", str(tmp_path / "x")])
    assert result.exit_code == 1
    error = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and "already quantized (mode fp16)" in error[0]
    args = ["quantize", str(tiny_model_path), "-o", str(tmp_path / "x"), "--check",
            str(tmp_path / "s.txt"), "--no-check"]
    result = runner.invoke(elmo, args)
    assert result.exit_code == 2 and "exclude each other" in result.output


def test_cli_force_warns_loudly(elmo, tiny_model_path, tmp_path, monkeypatch):
    monkeypatch.setitem(THRESHOLDS, "int8", 1.01)
    out = tmp_path / "q.onnx"
    result = CliRunner().invoke(elmo, ["quantize", str(tiny_model_path), "-o", str(out)])
    assert result.exit_code == 1 and "drifts too far" in result.output and not out.exists()
    result = CliRunner().invoke(elmo, ["quantize", str(tiny_model_path), "-o", str(out), "--force"])
    assert result.exit_code == 0, result.output
    assert "Warning: WRITTEN ANYWAY (--force)" in result.output
    assert "FAILED (written because of --force)" in result.output


def test_quantizers_are_quiet(tiny_model_path, tmp_path, caplog):
    with caplog.at_level(logging.DEBUG):
        quantize_model(tiny_model_path, tmp_path / "q.onnx", check=False)
    assert not [r for r in caplog.records if r.name.startswith("onnxruntime") or r.name == "root"]


# ---------------------------------------------------------------------------- issue 12: exact,
# batch-independent quantized models

BUNDLED = REPO / "runtime" / "elmo_runtime" / "models"
RECIPES_DIR = REPO / "recipes"  # wordnet_corpus.py: held-out split
PAIR_LIMIT = 2**15 - 1  # vpmaddubsw adds two u8×s8 products into a saturating int16


def _alone_vs_batched(path: Path, batch_sizes=(1, 7, 60), seed: int = 3) -> dict[int, float]:
    """max |layers of a sentence alone − the same sentence at row 5 (or last) of a batch|."""
    session = _session(path)
    max_chars = contract.parse_metadata(_meta(path), "m").max_chars
    rng = np.random.default_rng(seed)
    target = _sentences([11], seed)[0]
    alone = session.run([contract.OUTPUT_LAYERS], chars.pack([target], max_chars).feed())[0][0]
    worst = {}
    for size in batch_sizes:
        batch = _sentences(rng.integers(1, 40, size=size).tolist(), seed + size)
        row = min(5, size - 1)
        batch[row] = target
        got = session.run([contract.OUTPUT_LAYERS], chars.pack(batch, max_chars).feed())[0][row]
        assert not got[:, alone.shape[1]:].any()
        worst[size] = float(np.abs(got[:, : alone.shape[1]] - alone).max())
    return worst


@pytest.mark.parametrize("mode", ["int8", pytest.param("int4", marks=INT4)])
def test_a_sentence_alone_and_in_batches_of_1_7_60_agree(quantized, mode):
    worst = _alone_vs_batched(quantized[mode])
    assert max(worst.values()) <= 1e-5, worst


def test_fp16_batch_dependence_stays_within_its_documented_limit(quantized, tiny_model_path):
    """fp16 on the CPU: not exact (float16 partial sums; see check.BATCH_TOLERANCE), but small."""
    assert max(_alone_vs_batched(tiny_model_path).values()) <= 1e-5  # float32: the baseline
    worst = _alone_vs_batched(quantized["fp16"])
    assert max(worst.values()) <= 2e-3, worst


def test_the_bundled_int8_model_is_batch_independent():
    path = BUNDLED / "default.int8.onnx"
    assert _quant(path)["scheme"] == "elmo-edge exact int8 v1"
    # fixed scales: the 8 products of the LSTM steps (h ∈ ±proj_clip, σ·tanh ∈ [-1, 1]) and
    # layer 1's input projections (layer 0's clipped h); per token: the highway and
    # projection (ReLU mixes: ≥ 0) and layer 0's input projections (token vectors)
    assert _quant(path)["activation_schemes"] == {
        "static": 10, "per_row_nonnegative": 2, "per_row_symmetric": 2}
    assert max(_alone_vs_batched(path).values()) <= 1e-5


def _bodies_and_top(graph: onnx.GraphProto) -> list[onnx.GraphProto]:
    return [graph, *_subgraphs(graph)]


def _matmul_integers(
    path: Path, bodies_only: bool = False
) -> list[tuple[onnx.NodeProto, dict[str, np.ndarray]]]:
    """Every MatMulInteger (of the Scan bodies only) with the constants of its graph."""
    found = []
    graph = onnx.load(str(path)).graph
    for g in _subgraphs(graph) if bodies_only else _bodies_and_top(graph):
        consts = {t.name: onnx.numpy_helper.to_array(t) for t in g.initializer}
        found.extend((n, consts) for n in g.node if n.op_type == "MatMulInteger")
    return found


def _pairwise_saturating(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row n of ``a`` times column n of ``b`` as AVX2's u8×s8 kernel sums it: pairs of
    products added into a saturating int16 (``vpmaddubsw``), then exactly."""
    a, b = a.astype(np.int64), b.T.astype(np.int64)  # (N, K) each
    if a.shape[1] % 2:
        a, b = np.pad(a, [(0, 0), (0, 1)]), np.pad(b, [(0, 0), (0, 1)])
    pairs = a[:, 0::2] * b[:, 0::2] + a[:, 1::2] * b[:, 1::2]
    return np.clip(pairs, -(2**15), PAIR_LIMIT).sum(1)


def test_the_saturation_model_catches_full_range_weights():
    """The emulated AVX2 kernel differs from the exact product for 8-bit weights × 255."""
    a = np.full((1, 4), 255, np.uint8)
    b = np.full((4, 1), 127, np.int8)
    assert _pairwise_saturating(a, b)[0] == 2 * PAIR_LIMIT != (a.astype(int) @ b)[0, 0]


@pytest.mark.parametrize("which", ["tiny", "bundled"])
def test_no_int8_kernel_can_saturate_on_any_input(quantized, which):
    """7-bit weights: the worst u8 inputs (255 where w > 0, or where w < 0) stay exact."""
    path = quantized["int8"] if which == "tiny" else BUNDLED / "default.int8.onnx"
    nodes = _matmul_integers(path)
    assert nodes
    for node, consts in nodes:
        w = consts[node.input[1]]
        assert w.dtype == np.int8 and np.abs(w.astype(int)).max() <= 63, node.name
        for worst in (np.where(w.T > 0, 255, 0), np.where(w.T < 0, 255, 0)):  # row n: column n
            exact = (worst.astype(np.int64) * w.T.astype(np.int64)).sum(1)
            assert (_pairwise_saturating(worst, w) == exact).all(), node.name


def _tiny_model(node: onnx.NodeProto, consts: dict[str, np.ndarray], k: int) -> bytes:
    inits = [onnx.numpy_helper.from_array(consts[n], n) for n in node.input[1:] if n]
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMulInteger", list(node.input), ["y"])], "one",
        [onnx.helper.make_tensor_value_info(node.input[0], onnx.TensorProto.UINT8, [None, k])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.INT32, None)], inits)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def test_a_matmul_integer_from_the_graph_equals_numpys_integer_product(quantized):
    """The recurrent product of an LSTM step, extracted with its weights: exact, worst case too."""
    node, consts = next((n, c) for n, c in _matmul_integers(quantized["int8"], bodies_only=True)
                        if c[n.input[2]] == 128)
    w = consts[node.input[1]]
    zero_point = int(consts[node.input[2]])
    session = ort.InferenceSession(_tiny_model(node, consts, w.shape[0]),
                                   providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    cases = [rng.integers(0, 256, (33, w.shape[0])).astype(np.uint8),
             np.where(w.T > 0, 255, 0).astype(np.uint8), np.full((2, w.shape[0]), 255, np.uint8)]
    for a in cases:
        got = session.run(None, {node.input[0]: a})[0]
        want = (a.astype(np.int64) - zero_point) @ w.astype(np.int64)
        assert got.dtype == np.int32 and (got == want).all()


def test_the_graph_computes_its_integer_arithmetic(quantized, tiny_model_path):
    """A whole-graph product (input projection, per-token scales) vs NumPy's exact version."""
    model = onnx.load(str(quantized["int8"]))
    top = {n.output[0]: n for n in model.graph.node}
    mmi = next(n for n in model.graph.node if n.op_type == "MatMulInteger"
               and n.input[0].endswith("_q8_x") and f"{n.input[0][:-2]}_abs" in top)
    prefix = mmi.input[0][: -len("_x")]
    x_name, y_name = top[f"{prefix}_abs"].input[0], prefix[: -len("_q8")]
    consts = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    for name in (x_name, y_name):
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT,
                                                                     None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"],
                                   disabled_optimizers=DISABLED_OPTIMIZERS)
    feed = chars.pack(_sentences([1, 9, 30], seed=7), 50).feed()
    x, y = session.run([x_name, y_name], feed)
    scale = np.maximum(np.abs(x).max(-1, keepdims=True), np.float32(1e-30)) / np.float32(127)
    q = np.round(x / scale)  # float32 division, rounding half to even, as the graph does
    assert np.abs(q).max() <= 127
    exact = q.astype(np.int64) @ consts[f"{prefix}_W"].astype(np.int64)
    want = exact * (scale.astype(np.float64) * consts[f"{prefix}_col_scale"].astype(np.float64))
    np.testing.assert_allclose(y, want, rtol=2e-6, atol=1e-6 * np.abs(want).max())


def _heldout_sentences(n: int) -> list[list[str]]:
    wordnet_dir = Path("/usr/share/wordnet")
    if not (wordnet_dir / "data.noun").is_file():
        pytest.skip("WordNet 3.0 not installed (Debian package wordnet-base)")
    sys.path.insert(0, str(RECIPES_DIR))
    try:
        import wordnet_corpus
    finally:
        sys.path.remove(str(RECIPES_DIR))
    examples = list(wordnet_corpus.heldout_examples(wordnet_dir))
    picked = np.random.default_rng(12).choice(len(examples), size=n, replace=False)
    return [list(examples[i].tokens) for i in sorted(picked)]


@pytest.mark.slow
def test_the_bundled_int8_model_is_close_to_float32_on_heldout_wordnet():
    """Per layer, per token: mean cosine ≥ 0.999 and min ≥ 0.995 (issue 12) on 500 sentences."""
    from elmo_runtime.quantize import compare_models

    sentences = _heldout_sentences(500)
    source = BUNDLED / "default.onnx"
    info = contract.parse_metadata(_meta(source), "default")
    report = compare_models(source, BUNDLED / "default.int8.onnx", sentences, info, 0.999,
                            batch_tolerance=1e-5)
    assert report.tokens > 3000
    for layer in report.layers:
        assert layer.mean >= 0.999 and layer.min >= 0.995, report.layers
    assert report.batch_max_abs_diff == 0.0 and report.passed


def test_the_check_reports_batch_independence(quantized, elmo, tiny_model_path, tmp_path):
    q = _quant(quantized["int8"])["check"]["batch_independence"]
    assert q == {"max_abs_diff_alone_vs_batch": 0.0, "tolerance": 1e-5}
    assert _quant(quantized["fp16"])["check"]["batch_independence"]["tolerance"] is None
    out = tmp_path / "q.onnx"
    result = CliRunner().invoke(elmo, ["quantize", str(tiny_model_path), "-o", str(out),
                                       "--per-tensor"])
    assert result.exit_code == 0, result.output
    assert "batch independence: each sentence alone vs in its batch, max |diff| 0 " \
           "(≤ 1e-05 required) — independent" in result.output
    assert _quant(out)["per_channel"] is False


def test_the_check_refuses_a_batch_dependent_model(tiny_model_path, tmp_path, monkeypatch):
    """A candidate whose vectors move with the batch fails the check, whatever its cosines."""
    from elmo_runtime.quantize import check

    real = check._session

    def shaky(model, provider):
        session = real(model, provider)

        class Shaky:
            def run(self, names, feed):
                out = session.run(names, feed)
                return [o + 1e-3 * (len(feed[contract.INPUT_TOKEN_INDEX]) > 1) for o in out]

        return Shaky() if isinstance(model, bytes) else session

    monkeypatch.setattr(check, "_session", shaky)
    with pytest.raises(QuantizeError, match=r"alone and in a batch differ by 0\.001 > 1e-05"):
        quantize_model(tiny_model_path, tmp_path / "q.onnx")
    assert _files(tmp_path) == []


def test_ranges_bound_what_the_lstm_bounds():
    from elmo_runtime.quantize.ranges import Ranges, state_bounds

    h = onnx.helper
    nodes = [h.make_node("Sigmoid", ["x"], ["s"]), h.make_node("Tanh", ["c"], ["t"]),
             h.make_node("Mul", ["s", "t"], ["h_full"]), h.make_node("Relu", ["x"], ["r"]),
             h.make_node("Sub", ["one", "s"], ["gate"]), h.make_node("Mul", ["gate", "r"], ["mix"]),
             h.make_node("Clip", ["x", "lo", "hi"], ["clipped"]),
             h.make_node("Where", ["m", "clipped", "h_prev"], ["h_next"]),
             h.make_node("Add", ["x", "s"], ["free"])]
    consts = [onnx.numpy_helper.from_array(np.float32(v), n)
              for n, v in (("one", 1.0), ("lo", -3.0), ("hi", 3.0))]
    f = onnx.TensorProto.FLOAT
    graph = h.make_graph(
        nodes, "g", [h.make_tensor_value_info(n, f, None) for n in ("h_prev", "x", "c", "m")],
        [h.make_tensor_value_info("h_next", f, None)], consts)
    ranges = Ranges(graph)
    assert ranges.of("h_full") == (-1.0, 1.0)
    assert ranges.of("mix") == (0.0, np.inf)
    assert ranges.of("clipped") == (-3.0, 3.0)
    assert ranges.of("free") == (-np.inf, np.inf)
    assert ranges.of("h_next") == (-np.inf, np.inf)  # h_prev unknown without state analysis
    assert state_bounds(graph, 1) == {"h_prev": (-3.0, 3.0)}


@pytest.mark.parametrize(
    ("tolerance", "diff", "word"),
    [
        (None, 2e-3, "within float16 rounding"),
        (1e-5, 0.0, "independent"),
        (1e-5, 1e-3, "DEPENDENT"),
    ],
)
def test_the_report_names_the_batch_state_by_its_tolerance(tolerance, diff, word):
    """fp16 (no tolerance) is never called "independent" next to a 2e-3 difference."""
    from elmo_runtime.cli.quantize import format_report
    from elmo_runtime.quantize import QuantizeReport
    from elmo_runtime.quantize.check import CheckReport, LayerCosine

    check = CheckReport(layers=[LayerCosine(0, 1.0, 1.0)], threshold=0.99, sentences=1, tokens=3,
                        provider="cpu", batch_max_abs_diff=diff, batch_tolerance=tolerance)
    report = QuantizeReport(source=Path("a.onnx"), output=Path("b.onnx"), mode="fp16",
                            size_before=2, size_after=1, settings={}, check=check, forced=False)
    line = next(x for x in format_report(report).splitlines() if x.startswith("batch"))
    assert line.endswith(f"— {word}")
