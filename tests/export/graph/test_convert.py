"""`elmo convert` without PyTorch: the float64 NumPy forward, cells without projection, refusals.

The package's NumPy forward (``elmo_export.graph.reference``, convert's parity
oracle) is held to the independent naive oracle of ``tests/support/reference.py``;
weights without a cell projection (dim == projection_dim, no ``W_P_0``,
allenai/allennlp#2062) go through the graph, the PyTorch model and the
converter, all checked against that oracle. Nothing here needs torch except
the PyTorch comparison, which skips without it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from elmo_runtime.format import contract
from elmo_runtime.format.chars import batch_to_ids
from support.bilm_fixtures import require_fixtures
from support.models import EDGE_BATCH, break_build, small_options
from support.reference import ReferenceBiLM

h5py = pytest.importorskip("h5py", reason="reading weight files needs h5py (convert extra)")

from elmo_export.bilm_tf.weights import (  # noqa: E402
    PROJECTION,
    WeightsError,
    lstm_prefix,
    read_weights,
    write_weights,
)
from elmo_export.graph import convert as convert_mod  # noqa: E402
from elmo_export.graph.builder import build_model  # noqa: E402
from elmo_export.graph.parity import ExportError  # noqa: E402
from elmo_export.graph.reference import NumpyBiLM  # noqa: E402
from elmo_runtime.loading.session import create_session  # noqa: E402
from support.bilm_random import random_weights  # noqa: E402

ATOL = 1e-5
# dim == projection_dim: a biLM whose cells have no projection. Scale chosen so that
# cell_clip cuts values and |h| would exceed proj_clip (which must then not apply).
NO_PROJ = {"dim": 6, "projection_dim": 6, "cell_clip": 0.8, "proj_clip": 0.3}


def _states(options, batch: int, seed: int = 5):
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((2, options.n_layers, batch, options.lstm_dim)).astype(np.float32)
    h = (0.5 * rng.standard_normal((2, options.n_layers, batch, options.projection_dim))).astype(
        np.float32)
    return c, h


def _feed(options, batch, c=None, h=None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    ids, _ = batch_to_ids(batch, options.max_characters_per_token)
    feed = contract.char_ids_feed(ids)
    if c is not None:
        feed[contract.INPUT_STATE_C], feed[contract.INPUT_STATE_H] = c, h
    return feed, ids


def _compare(got: dict[str, np.ndarray], ref, what: str) -> None:
    np.testing.assert_array_equal(got[contract.OUTPUT_MASK], ref.mask, err_msg=what)
    for name, want in ((contract.OUTPUT_LAYERS, ref.layers), (contract.OUTPUT_STATE_C, ref.state_c),
                       (contract.OUTPUT_STATE_H, ref.state_h)):
        np.testing.assert_allclose(got[name], want, rtol=0, atol=ATOL, err_msg=f"{what}: {name}")


@pytest.mark.parametrize("overrides,seed,scale", [
    ({}, 3, 2.0),
    ({"activation": "relu", "n_highway": 2, "use_skip_connections": False}, 2, 1.5),
    ({"cell_clip": None, "proj_clip": None, "n_layers": 1}, 3, 2.0),
])
def test_numpy_forward_matches_the_independent_oracle(overrides, seed, scale):
    options = small_options(**overrides)
    weights = random_weights(options, seed=seed, scale=scale)
    c, h = _states(options, len(EDGE_BATCH))
    feed, ids = _feed(options, EDGE_BATCH, c, h)
    ref = ReferenceBiLM(options, weights).run_batch(ids, c, h)
    _compare(NumpyBiLM(options, weights).run(feed), ref, str(overrides))


def test_numpy_forward_uses_cached_vectors():
    """Rows fed as cached_vectors are what the encoded rows would have been."""
    options = small_options()
    weights = random_weights(options, seed=3, scale=2.0)
    numpy_bilm = NumpyBiLM(options, weights)
    feed, _ = _feed(options, EDGE_BATCH[:1])
    full = numpy_bilm.run(feed)
    chars_, index = feed[contract.INPUT_TOKEN_CHARS], feed[contract.INPUT_TOKEN_INDEX]
    keep = 3  # encode the first 3 rows, feed the others from the "cache"
    vectors = full[contract.OUTPUT_TOKEN_VECTORS]
    split = numpy_bilm.run({contract.INPUT_TOKEN_CHARS: chars_[:keep],
                            contract.INPUT_CACHED_VECTORS: vectors[keep:].astype(np.float32),
                            contract.INPUT_TOKEN_INDEX: index})
    np.testing.assert_allclose(split[contract.OUTPUT_LAYERS], full[contract.OUTPUT_LAYERS],
                               atol=1e-6, rtol=0)


# ------------------------------------------------------------- no cell projection
def _no_projection():
    options = small_options(**NO_PROJ)
    weights = random_weights(options, seed=4, scale=2.0, projection=False)
    assert not any(name.endswith(PROJECTION) for name in weights)
    return options, weights


def test_no_projection_graph_matches_the_oracle():
    options, weights = _no_projection()
    c, h = _states(options, len(EDGE_BATCH))
    feed, ids = _feed(options, EDGE_BATCH, c, h)
    ref = ReferenceBiLM(options, weights).run_batch(ids, c, h)
    assert ref.stats.cell_clipped > 0  # cell_clip still applies
    assert np.abs(ref.state_h).max() > options.proj_clip  # proj_clip does not
    session = create_session(build_model(options, weights).SerializeToString(), "cpu")
    got = dict(zip(contract.OUTPUTS, session.run(list(contract.OUTPUTS), feed), strict=True))
    _compare(got, ref, "onnx, no projection")
    _compare(NumpyBiLM(options, weights).run(feed), ref, "numpy, no projection")
    # no projection MatMul in the step body: the graph really skips it
    proto = build_model(options, weights)
    bodies = [a.g for n in proto.graph.node if n.op_type == "Scan" for a in n.attribute
              if a.name == "body"]
    assert bodies and all(sum(n.op_type == "MatMul" for n in b.node) == 1 for b in bodies)


def test_no_projection_torch_matches_the_oracle():
    torch = pytest.importorskip("torch", reason="the PyTorch model needs torch")
    from elmo_export.pytorch.modules import BiLM

    options, weights = _no_projection()
    c, h = _states(options, len(EDGE_BATCH))
    feed, ids = _feed(options, EDGE_BATCH, c, h)
    ref = ReferenceBiLM(options, weights).run_batch(ids, c, h)
    model = BiLM.from_elmo_weights(options, weights).eval()
    with torch.no_grad():
        got = {k: v.numpy() for k, v in model.run_feed(feed).items()}
    _compare(got, ref, "torch, no projection")
    assert set(model.elmo_weights()) == set(weights)  # still no W_P_0 on the way out


def test_convert_weights_without_projection(tmp_path):
    from elmo_runtime import Embedder

    options, weights = _no_projection()
    (tmp_path / "options.json").write_text(options.to_json(), encoding="utf-8")
    write_weights(tmp_path / "weights.hdf5", weights, options)
    out = tmp_path / "m.onnx"
    report = convert_mod.convert_bilm_tf(tmp_path / "options.json", tmp_path / "weights.hdf5", out)
    assert report.max_abs_diff <= ATOL
    emb = Embedder(out, provider="cpu")
    assert emb.info.source["cell_projection"] is False
    ids, _ = batch_to_ids(EDGE_BATCH, options.max_characters_per_token)
    ref = ReferenceBiLM(options, weights).run_batch(ids)
    for b, (got, sentence) in enumerate(zip(emb.embed_batch(EDGE_BATCH), EDGE_BATCH,
                                            strict=True)):
        np.testing.assert_allclose(got, ref.layers[b, :, 1 : 1 + len(sentence)], atol=ATOL,
                                   rtol=0)


def test_some_cells_without_projection_are_refused(tmp_path):
    options, weights = _no_projection()
    weights = random_weights(options, seed=4)  # with W_P_0 everywhere …
    del weights[f"{lstm_prefix(1, 0)}/{PROJECTION}"]  # … but one
    with pytest.raises(WeightsError, match=f"{lstm_prefix(1, 0)}/{PROJECTION}.*missing"):
        build_model(options, weights)


def test_missing_projection_with_a_smaller_projection_dim_is_refused(tmp_path):
    options = small_options()  # dim 8, projection_dim 5: W_P_0 is required
    weights = random_weights(options, seed=1)
    for name in [n for n in weights if n.endswith(PROJECTION)]:
        del weights[name]
    with pytest.raises(WeightsError, match="W_P_0' is missing"):
        NumpyBiLM(options, weights)


# -------------------------------------------------------------------- convert
def test_convert_refuses_a_graph_that_disagrees(tmp_path, monkeypatch):
    options = small_options()
    weights = random_weights(options, seed=3)
    break_build(monkeypatch, convert_mod)
    with pytest.raises(ExportError, match="differs from the float64 NumPy reference.*layers"):
        convert_mod.convert_weights(options, weights, tmp_path / "bad.onnx", {"kind": "test"})
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temp file


BLOCK_TORCH = (
    "import sys; sys.modules['torch'] = None\n"
    "from elmo_runtime.cli import main\n"
    "try:\n    main()\n"
    "finally:\n    assert 'torch' not in [m for m, v in sys.modules.items() if v]\n"
)


@pytest.mark.slow
def test_cli_convert_without_torch_writes_a_checked_model(tmp_path):
    """`elmo convert` of the bilm-tf fixture with torch blocked: written, checked, embeds."""
    from elmo_runtime import Embedder

    d = require_fixtures()
    out = tmp_path / "fixture.onnx"
    run = subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH, "convert", str(d / "options.json"),
         str(d / "lm_weights.hdf5"), "-o", str(out)], capture_output=True, timeout=300)
    assert run.returncode == 0, run.stderr.decode()
    assert "max |ONNX − float64 reference|" in run.stderr.decode()
    emb = Embedder(out, provider="cpu")
    assert emb.info.parity["checked"] and emb.info.parity["max_abs_diff"] <= ATOL
    assert "NumPy" in emb.info.parity["reference"]
    assert emb.embed_sentence(["Hello", "world"]).shape == (3, 2, 32)
    options, weights = emb.info.options, read_weights(d / "lm_weights.hdf5", emb.info.options)
    ids, _ = batch_to_ids([["Hello", "world"]], options.max_characters_per_token)
    ref = ReferenceBiLM(options, weights).run_batch(ids)
    np.testing.assert_allclose(emb.embed_sentence(["Hello", "world"]), ref.layers[0, :, 1:3],
                               atol=ATOL, rtol=0)


def test_convert_to_a_missing_directory_reads_nothing(tmp_path):
    d = require_fixtures()
    with pytest.raises(Exception, match="does not exist"):
        convert_mod.convert_bilm_tf(d / "options.json", d / "lm_weights.hdf5",
                            tmp_path / "nope" / "m.onnx")
    assert not (tmp_path / "nope").exists()


def test_convert_accepts_str_paths_and_checks_every_shape(tmp_path):
    d = require_fixtures()
    out: Path = tmp_path / "m.onnx"
    report = convert_mod.convert_bilm_tf(str(d / "options.json"), str(d / "lm_weights.hdf5"),
                                         str(out))
    assert out.is_file() and report.max_abs_diff <= ATOL
    assert [c["batch"] for c in report.cases] == [1, 1, 3, 5, 2]


def test_a_bilm_tf_folder_converts_by_its_name(tmp_path: Path) -> None:
    """`elmo convert DIR` on a bilm-tf folder needs no torch and no file names."""
    from support.cli import run_elmo
    from support.errors import one_line_error

    fixtures = require_fixtures()
    out = tmp_path / "folder.onnx"
    result = run_elmo("convert", fixtures, "-o", out)
    assert result.exit_code == 0, result.output
    assert out.is_file() and "lm_weights.hdf5" in result.stderr
    (tmp_path / "empty").mkdir()
    line = one_line_error(run_elmo("convert", tmp_path / "empty", "-o", tmp_path / "x.onnx"))
    assert "no config.json" in line and "*weights*.hdf5" in line
    assert not (tmp_path / "x.onnx").exists()


def test_convert_never_replaces_a_file_without_overwrite(tmp_path: Path) -> None:
    """Issue 24 item 3: `elmo convert` overwrote any existing file without a word."""
    from support.cli import run_elmo
    from support.errors import one_line_error

    fixtures = require_fixtures()
    out = tmp_path / "m.onnx"
    out.write_bytes(b"mine")
    one_line_error(run_elmo("convert", fixtures, "-o", out),
                   f"{out}: exists; pass --overwrite to replace it")
    assert out.read_bytes() == b"mine"
    result = run_elmo("convert", fixtures, "-o", out, "--overwrite")
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(b"\x08")  # an ONNX protobuf now
