"""Conformance with bilm-tf: its own test fixtures, reproduced statefully.

10 batches of 3 sentences (``zip(*sentences)``), LSTM state carried by row;
the expected top layer is (forward, backward) halves, boundaries removed.
Checked for the PyTorch model (StatefulBiLM) and for the ONNX model run
through the runtime's Embedder, both as `elmo convert` writes it (no PyTorch,
checked against the NumPy reference) and as `elmo export` of the PyTorch
model writes it.
"""

from __future__ import annotations

import numpy as np
import pytest
from elmo_runtime.format.chars import pack
from elmo_runtime.format.options import load_options
from support.bilm_fixtures import (
    FIXTURE_ATOL,
    fixture_batches,
    fixture_expected,
    require_fixtures,
    top_layer_halves,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def fixture_model():
    from elmo_export.bilm_tf.weights import read_weights

    d = require_fixtures()
    options = load_options(d / "options.json")
    weights = read_weights(d / "lm_weights.hdf5", options)
    return d, options, weights


@pytest.fixture(scope="module", params=["convert", "export"])
def fixture_onnx(request, fixture_model, tmp_path_factory):
    d, options, weights = fixture_model
    path = tmp_path_factory.mktemp("onnx") / f"bilm-tf-fixture-{request.param}.onnx"
    if request.param == "convert":  # torch-free
        from elmo_export.graph.convert import convert_bilm_tf

        convert_bilm_tf(d / "options.json", d / "lm_weights.hdf5", path)
        return path
    pytest.importorskip("torch", reason="elmo export of a PyTorch model needs torch")
    from elmo_export.pytorch.export import export_onnx
    from elmo_export.pytorch.modules import BiLM

    model = BiLM.from_elmo_weights(options, weights)
    model.eval()
    export_onnx(model, path, source={"weights": str(d / "lm_weights.hdf5")})
    return path


def _halves_without_boundaries(vectors: np.ndarray, proj_dim: int) -> np.ndarray:
    """Embedder output (L+1, n, 2P) -> fixture layout (2, n, P) of the top layer."""
    top = np.asarray(vectors)[-1]
    return np.stack([top[:, :proj_dim], top[:, proj_dim:]])


def _errors(got_batches, expected) -> list[float]:
    """Max |got - expected| per batch (shapes must agree)."""
    errs = []
    for got, exp in zip(got_batches, expected, strict=True):
        worst = 0.0
        for g, e in zip(got, exp, strict=True):
            assert g.shape == e.shape, (g.shape, e.shape)
            worst = max(worst, float(np.abs(g - e).max()))
        errs.append(worst)
    return errs


# ------------------------------------------------------------------------- PyTorch
def _torch_stateful_run(stateful, batches, options):
    import torch

    got = []
    with torch.no_grad():
        for batch in batches:
            packed = pack(batch, options.max_characters_per_token)
            out = stateful(torch.from_numpy(packed.token_chars).long(),
                           torch.from_numpy(packed.token_index).long())
            layers = out.layers.detach().numpy()
            got.append(
                [
                    top_layer_halves(layers[k], len(s), options.projection_dim)
                    for k, s in enumerate(batch)
                ]
            )
    return got


def test_torch_reproduces_bilm_tf_statefully(fixture_model):
    pytest.importorskip("torch", reason="the PyTorch model needs the export extra")
    from elmo_export.pytorch.modules import BiLM, StatefulBiLM

    d, options, weights = fixture_model
    batches, expected = fixture_batches(d), fixture_expected(d)
    assert len(batches) == len(expected) == 10
    model = BiLM.from_elmo_weights(options, weights)
    model.eval()
    stateful = StatefulBiLM(model)
    errs = _torch_stateful_run(stateful, batches, options)
    assert max(_errors(errs, expected)) <= FIXTURE_ATOL, _errors(errs, expected)

    # reset_states really resets (batch 0 again matches), and state really is
    # carried (batch 1 right after a reset does not).
    stateful.reset_states()
    again = _torch_stateful_run(stateful, batches[:1], options)
    assert _errors(again, expected[:1])[0] <= FIXTURE_ATOL
    stateful.reset_states()
    fresh = _torch_stateful_run(stateful, batches[1:2], options)
    assert _errors(fresh, expected[1:2])[0] > 1e-3


# ---------------------------------------------------------------------------- ONNX
def test_onnx_embedder_reproduces_bilm_tf_statefully(fixture_model, fixture_onnx):
    from elmo_runtime import Embedder

    d, options, _ = fixture_model
    batches, expected = fixture_batches(d), fixture_expected(d)
    emb = Embedder(fixture_onnx, stateful=True, provider="cpu")
    got = []
    for batch in batches:
        vectors = emb.embed_batch(batch)
        assert len(vectors) == len(batch)
        for v, s in zip(vectors, batch, strict=True):
            assert v.shape == (options.n_output_layers, len(s), options.output_dim)
        got.append([_halves_without_boundaries(v, options.projection_dim) for v in vectors])
    errs = _errors(got, expected)
    assert max(errs) <= FIXTURE_ATOL, errs

    # After reset_states the run starts over from zeros.
    emb.reset_states()
    first = [_halves_without_boundaries(v, options.projection_dim)
             for v in emb.embed_batch(batches[0])]
    assert _errors([first], expected[:1])[0] <= FIXTURE_ATOL


def test_onnx_embedder_stateful_stream(fixture_model, fixture_onnx):
    """embed_sentences in stateful mode keeps consecutive batches of batch_size rows."""
    from elmo_runtime import Embedder

    d, options, _ = fixture_model
    batches, expected = fixture_batches(d), fixture_expected(d)
    emb = Embedder(fixture_onnx, stateful=True, provider="cpu")
    stream = [s for batch in batches for s in batch]
    vectors = list(emb.embed_sentences(stream, batch_size=3))
    assert len(vectors) == len(stream)
    got = [
        [_halves_without_boundaries(v, options.projection_dim) for v in vectors[i : i + 3]]
        for i in range(0, len(vectors), 3)
    ]
    errs = _errors(got, expected)
    assert max(errs) <= FIXTURE_ATOL, errs


def test_onnx_embedder_stateless_differs_after_first_batch(fixture_model, fixture_onnx):
    """Stateless is the default: batch 0 matches (zero start), later batches do not."""
    from elmo_runtime import Embedder

    d, options, _ = fixture_model
    batches, expected = fixture_batches(d), fixture_expected(d)
    emb = Embedder(fixture_onnx, provider="cpu")
    got = [
        [_halves_without_boundaries(v, options.projection_dim) for v in emb.embed_batch(b)]
        for b in batches[:2]
    ]
    errs = _errors(got, expected[:2])
    assert errs[0] <= FIXTURE_ATOL
    assert errs[1] > 1e-3
