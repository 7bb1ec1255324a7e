"""The independent NumPy reference against bilm-tf, then PyTorch and ONNX against it.

The bilm-tf fixtures validate the reference (they have no skip connections
and never reach proj_clip); the reference then checks what the fixtures
cannot: skip connections, both clips engaged, tanh, other highway counts, no
clipping, nonzero initial states, cells without projection, and the edge
cases of the char ids. The package's own float64 NumPy forward
(``elmo_export.graph.reference``, the oracle of the torch-free `elmo convert`) is
held to this independent one too.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from elmo_runtime.format import contract
from elmo_runtime.format.chars import batch_to_ids
from elmo_runtime.format.options import load_options
from support import reference
from support.bilm_fixtures import (
    FIXTURE_ATOL,
    fixture_batches,
    fixture_expected,
    require_fixtures,
    top_layer_halves,
)
from support.models import EDGE_BATCH, small_options
from support.reference import ReferenceBiLM

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ATOL = 1e-5
SCALE = 2.0  # random_weights scale at which both clips engage on EDGE_BATCH


# --------------------------------------------------------------------------- helpers
def _fixture_model():
    from elmo_export.bilm_tf.weights import read_weights

    d = require_fixtures()
    options = load_options(d / "options.json")
    weights = read_weights(d / "lm_weights.hdf5", options)
    return d, options, weights


def _run_reference_statefully(ref: ReferenceBiLM, batches, options, stateful: bool = True):
    """Top-layer halves per batch/row, carrying state by row as bilm-tf does."""
    rows = len(batches[0])
    L, D, P = options.n_layers, options.lstm_dim, options.projection_dim
    c = np.zeros((2, L, rows, D))
    h = np.zeros((2, L, rows, P))
    got = []
    for batch in batches:
        assert len(batch) == rows
        ids, _ = batch_to_ids(batch, options.max_characters_per_token)
        out = ref.run_batch(ids, c, h) if stateful else ref.run_batch(ids)
        c, h = out.state_c, out.state_h
        got.append([top_layer_halves(out.layers[k], len(batch[k]), P) for k in range(rows)])
    return got


def _max_fixture_error(got, expected) -> float:
    worst = 0.0
    for g_batch, e_batch in zip(got, expected, strict=True):
        for g, e in zip(g_batch, e_batch, strict=True):
            assert g.shape == e.shape
            worst = max(worst, float(np.abs(g - e).max()))
    return worst


def _initial_states(options, batch: int, seed: int = 7):
    rng = np.random.default_rng(seed)
    L, D, P = options.n_layers, options.lstm_dim, options.projection_dim
    c = rng.standard_normal((2, L, batch, D)).astype(np.float32)
    h = (0.5 * rng.standard_normal((2, L, batch, P))).astype(np.float32)
    return c, h


def _torch_run(options, weights, ids, state_c=None, state_h=None):
    torch = pytest.importorskip("torch", reason="the PyTorch model needs the export extra")
    from elmo_export.pytorch.modules import BiLM

    model = BiLM.from_elmo_weights(options, weights)
    model.eval()
    state = None
    if state_c is not None:
        state = (torch.from_numpy(np.asarray(state_c)), torch.from_numpy(np.asarray(state_h)))
    feed = contract.char_ids_feed(np.asarray(ids, dtype=np.int32))
    with torch.no_grad():
        out = model(torch.from_numpy(feed[contract.INPUT_TOKEN_CHARS]).long(),
                    torch.from_numpy(feed[contract.INPUT_TOKEN_INDEX]).long(), state=state)
    return tuple(np.asarray(t.detach().numpy()) for t in out)


def _assert_matches(got, ref_out, what: str) -> None:
    layers, mask, c, h = got[:4]
    assert layers.shape == ref_out.layers.shape, what
    np.testing.assert_array_equal(np.asarray(mask).astype(np.int64), ref_out.mask, err_msg=what)
    np.testing.assert_allclose(layers, ref_out.layers, rtol=0, atol=ATOL, err_msg=f"{what}: layers")
    np.testing.assert_allclose(c, ref_out.state_c, rtol=0, atol=ATOL, err_msg=f"{what}: state_c")
    np.testing.assert_allclose(h, ref_out.state_h, rtol=0, atol=ATOL, err_msg=f"{what}: state_h")


# Variants of the small model: (name, small_options overrides, seed, random_weights
# scale, clips expected to engage). Seeds and scales are picked so that both clips
# cut values while activations stay below ~10: float32 rounding grows with
# magnitude (relu + 2 highways at |x| ~ 50 drifts ~1e-5 from float64, no bug).
VARIANTS = [
    ("skip-tanh-hw1", {}, 3, 2.0, True),
    ("relu-hw0", {"activation": "relu", "n_highway": 0}, 5, 1.5, True),
    ("relu-hw2", {"activation": "relu", "n_highway": 2}, 2, 1.5, True),
    ("noskip-tanh-hw2-1layer", {"use_skip_connections": False, "n_highway": 2, "n_layers": 1},
     3, 2.0, True),
    ("no-clips", {"cell_clip": None, "proj_clip": None}, 3, 2.0, False),
]
VARIANT_IDS = [v[0] for v in VARIANTS]
VARIANT_ARGS = ("name", "overrides", "seed", "scale", "clips")


def _variant(overrides, seed: int = 3, scale: float = SCALE):
    from support.bilm_random import random_weights

    options = small_options(**overrides)
    weights = random_weights(options, seed=seed, scale=scale)
    return options, weights


def _assert_clip_coverage(options, stats, clips_expected: bool) -> None:
    if clips_expected:
        # Both clip paths must actually cut values, else the comparison proves nothing.
        assert stats.cell_clipped > 0, f"cell_clip never engaged: {stats}"
        assert stats.proj_clipped > 0, f"proj_clip never engaged: {stats}"
    else:
        assert options.cell_clip is None and options.proj_clip is None
        # Values well beyond any clip a wrong implementation might apply by default.
        assert stats.cell_max > 3.0, stats
        assert stats.proj_max > 3.0, stats


# ------------------------------------------------------- (a) reference vs bilm-tf
def test_reference_reproduces_bilm_tf_fixtures():
    d, options, weights = _fixture_model()
    batches = fixture_batches(d)
    expected = fixture_expected(d)
    assert len(batches) == len(expected) == 10
    got = _run_reference_statefully(ReferenceBiLM(options, weights), batches, options)
    assert _max_fixture_error(got, expected) <= FIXTURE_ATOL


def test_fixtures_detect_a_stateless_run():
    """The fixture comparison can fail: zero states from batch 1 on are far off."""
    d, options, weights = _fixture_model()
    batches = fixture_batches(d)[:2]
    expected = fixture_expected(d)[:2]
    got = _run_reference_statefully(
        ReferenceBiLM(options, weights), batches, options, stateful=False
    )
    assert _max_fixture_error(got[:1], expected[:1]) <= FIXTURE_ATOL  # batch 0 starts at zero
    assert _max_fixture_error(got[1:], expected[1:]) > 1e-3


def test_fixtures_detect_a_missing_forget_bias(monkeypatch):
    d, options, weights = _fixture_model()
    monkeypatch.setattr(reference, "FORGET_BIAS", 0.0)
    batches = fixture_batches(d)[:1]
    got = _run_reference_statefully(ReferenceBiLM(options, weights), batches, options)
    assert _max_fixture_error(got, fixture_expected(d)[:1]) > 1e-3


def test_reference_final_states_come_from_sentence_ends():
    """Forward final state = after </S>; backward = after <S>, at each row's own length."""
    options, weights = _variant({})
    ref = ReferenceBiLM(options, weights)
    ids, lengths = batch_to_ids(EDGE_BATCH, options.max_characters_per_token)
    c0, h0 = _initial_states(options, len(EDGE_BATCH))
    out = ref.run_batch(ids, c0, h0)
    for b, n in enumerate(lengths):
        assert out.mask[b].sum() == n
        assert not out.layers[b, :, n:].any()
    # The top forward output at </S> is the final forward h of the top layer
    # (no skip is added to h; the reported output at layer >= 1 includes x).
    P = options.projection_dim
    b, n = 0, int(lengths[0])
    top_in = out.layers[b, -2, n - 1, :P]
    np.testing.assert_allclose(
        out.layers[b, -1, n - 1, :P] - top_in, out.state_h[0, -1, b], atol=1e-12
    )
    np.testing.assert_allclose(
        out.layers[b, -1, 0, P:] - out.layers[b, -2, 0, P:], out.state_h[1, -1, b], atol=1e-12
    )


# -------------------------------------------------------- (b) PyTorch vs reference
@pytest.mark.parametrize(VARIANT_ARGS, VARIANTS, ids=VARIANT_IDS)
def test_torch_matches_reference(name, overrides, seed, scale, clips):
    options, weights = _variant(overrides, seed, scale)
    ids, _ = batch_to_ids(EDGE_BATCH, options.max_characters_per_token)
    c0, h0 = _initial_states(options, len(EDGE_BATCH))
    ref_out = ReferenceBiLM(options, weights).run_batch(ids, c0, h0)
    _assert_clip_coverage(options, ref_out.stats, clips)
    _assert_matches(_torch_run(options, weights, ids, c0, h0), ref_out, name)


def test_torch_matches_reference_from_zero_state():
    options, weights = _variant({})
    ids, _ = batch_to_ids(EDGE_BATCH, options.max_characters_per_token)
    ref_out = ReferenceBiLM(options, weights).run_batch(ids)
    _assert_clip_coverage(options, ref_out.stats, True)
    _assert_matches(_torch_run(options, weights, ids), ref_out, "zero state")


def test_torch_initial_state_matters():
    """Guards the comparison above: the initial state must change the outputs."""
    options, weights = _variant({})
    ids, _ = batch_to_ids(EDGE_BATCH, options.max_characters_per_token)
    c0, h0 = _initial_states(options, len(EDGE_BATCH))
    with_state = _torch_run(options, weights, ids, c0, h0)
    zero = _torch_run(options, weights, ids)
    assert np.abs(with_state[0] - zero[0]).max() > 1e-2


def _ids_with_padding_row(options) -> np.ndarray:
    """Two sentences, an all-zero row, and two all-zero steps after every row."""
    ids, _ = batch_to_ids(EDGE_BATCH[:2], options.max_characters_per_token)
    ids = np.concatenate([ids, np.zeros_like(ids[:1])], axis=0)
    return np.concatenate([ids, np.zeros_like(ids[:, :2])], axis=1)


def test_torch_all_padding_row_keeps_its_state():
    """A row with no token at all (length 0): state passes through, outputs are 0."""
    options, weights = _variant({})
    ids = _ids_with_padding_row(options)
    c0, h0 = _initial_states(options, ids.shape[0])
    ref_out = ReferenceBiLM(options, weights).run_batch(ids, c0, h0)
    np.testing.assert_array_equal(ref_out.state_c[:, :, 2], c0[:, :, 2])
    np.testing.assert_array_equal(ref_out.state_h[:, :, 2], h0[:, :, 2])
    _assert_matches(_torch_run(options, weights, ids, c0, h0), ref_out, "padding row")


# ---------------------------------------------------------- (c) ONNX vs reference
def _onnx_session(options, weights):
    from elmo_export.graph.builder import build_model  # torch-free
    from elmo_runtime.loading.session import create_session

    model = build_model(options, weights)
    return create_session(model.SerializeToString(), "cpu")


def _onnx_run(session, ids, state_c=None, state_h=None):
    feed = contract.char_ids_feed(np.asarray(ids, dtype=np.int32))
    if state_c is not None:
        feed[contract.INPUT_STATE_C] = np.asarray(state_c, dtype=np.float32)
        feed[contract.INPUT_STATE_H] = np.asarray(state_h, dtype=np.float32)
    outs = session.run(list(contract.OUTPUTS), feed)
    return tuple(outs)


@pytest.mark.parametrize(VARIANT_ARGS, VARIANTS, ids=VARIANT_IDS)
def test_onnx_matches_reference(name, overrides, seed, scale, clips):
    options, weights = _variant(overrides, seed, scale)
    session = _onnx_session(options, weights)
    ids, _ = batch_to_ids(EDGE_BATCH, options.max_characters_per_token)
    c0, h0 = _initial_states(options, len(EDGE_BATCH))
    ref_out = ReferenceBiLM(options, weights).run_batch(ids, c0, h0)
    _assert_clip_coverage(options, ref_out.stats, clips)
    got = _onnx_run(session, ids, c0, h0)
    assert got[0].dtype == np.float32 and got[1].dtype == np.int32
    _assert_matches(got, ref_out, name)


def test_onnx_matches_reference_without_state_inputs():
    """state_c / state_h are optional inputs: left out, they are zeros."""
    options, weights = _variant({})
    session = _onnx_session(options, weights)
    ids, _ = batch_to_ids(EDGE_BATCH, options.max_characters_per_token)
    ref_out = ReferenceBiLM(options, weights).run_batch(ids)
    _assert_matches(_onnx_run(session, ids), ref_out, "onnx zero state")


def test_onnx_broadcasts_a_single_state_row():
    """Contract: the state batch axis may be 1, shared by every row."""
    options, weights = _variant({})
    session = _onnx_session(options, weights)
    ids, _ = batch_to_ids(EDGE_BATCH, options.max_characters_per_token)
    c1, h1 = _initial_states(options, 1)
    B = len(EDGE_BATCH)
    ref_out = ReferenceBiLM(options, weights).run_batch(
        ids, np.repeat(c1, B, axis=2), np.repeat(h1, B, axis=2)
    )
    _assert_matches(_onnx_run(session, ids, c1, h1), ref_out, "onnx broadcast state")


def test_onnx_all_padding_row_keeps_its_state():
    options, weights = _variant({})
    session = _onnx_session(options, weights)
    ids = _ids_with_padding_row(options)
    c0, h0 = _initial_states(options, ids.shape[0])
    ref_out = ReferenceBiLM(options, weights).run_batch(ids, c0, h0)
    _assert_matches(_onnx_run(session, ids, c0, h0), ref_out, "onnx padding row")


# ------------------------------------------- stateful mode with varying batch sizes
STATEFUL_BATCHES = [
    [["The", "cat", "sat"], [], ["a" + "é" * 30, "x" * 60]],
    [["naïve", "日本語"]],
    [["one"], ["two", "words"], ["🙂"], ["Zürich", "is", "big", "."]],
    [[], ["last"]],
]


def _reference_stateful(options, weights, batches):
    """Per-row state per docs/elmo-spec.md: rows < B take new states, others keep theirs."""
    ref = ReferenceBiLM(options, weights)
    L, D, P = options.n_layers, options.lstm_dim, options.projection_dim
    c = np.zeros((2, L, 0, D))
    h = np.zeros((2, L, 0, P))
    results = []
    for batch in batches:
        B = len(batch)
        if c.shape[2] < B:
            grow = B - c.shape[2]
            c = np.concatenate([c, np.zeros((2, L, grow, D))], axis=2)
            h = np.concatenate([h, np.zeros((2, L, grow, P))], axis=2)
        ids, _ = batch_to_ids(batch, options.max_characters_per_token)
        out = ref.run_batch(ids, c[:, :, :B], h[:, :, :B])
        c[:, :, :B], h[:, :, :B] = out.state_c, out.state_h
        results.append([out.layers[b, :, 1 : 1 + len(s)] for b, s in enumerate(batch)])
    return results


def _compare_stateful(got, expected) -> None:
    for i, (g_batch, e_batch) in enumerate(zip(got, expected, strict=True)):
        for k, (g, e) in enumerate(zip(g_batch, e_batch, strict=True)):
            assert g.shape == e.shape, (i, k)
            np.testing.assert_allclose(g, e, rtol=0, atol=ATOL, err_msg=f"batch {i} row {k}")


def test_torch_stateful_rows_follow_the_spec():
    torch = pytest.importorskip("torch", reason="the PyTorch model needs the export extra")
    from elmo_export.pytorch.modules import BiLM, StatefulBiLM

    options, weights = _variant({})
    expected = _reference_stateful(options, weights, STATEFUL_BATCHES)
    model = BiLM.from_elmo_weights(options, weights)
    model.eval()
    stateful = StatefulBiLM(model)
    got = []
    with torch.no_grad():
        for batch in STATEFUL_BATCHES:
            ids, _ = batch_to_ids(batch, options.max_characters_per_token)
            feed = contract.char_ids_feed(ids)
            layers = stateful(torch.from_numpy(feed[contract.INPUT_TOKEN_CHARS]).long(),
                              torch.from_numpy(feed[contract.INPUT_TOKEN_INDEX]).long()
                              ).layers.numpy()
            got.append([layers[b, :, 1 : 1 + len(s)] for b, s in enumerate(batch)])
    _compare_stateful(got, expected)


def test_embedder_stateful_rows_follow_the_spec(tmp_path):
    if importlib.util.find_spec("elmo_runtime.embedder") is None:
        pytest.skip("elmo_runtime.embedder is not written yet")
    import onnx
    from elmo_export.graph.builder import build_model
    from elmo_runtime import Embedder

    options, weights = _variant({})

    proto = build_model(options, weights)
    onnx.helper.set_model_props(proto, contract.make_metadata(options, source={"kind": "test"}))
    path = tmp_path / "small.onnx"
    onnx.save(proto, str(path))

    expected = _reference_stateful(options, weights, STATEFUL_BATCHES)
    emb = Embedder(path, stateful=True, provider="cpu")
    got = [emb.embed_batch(batch) for batch in STATEFUL_BATCHES]
    _compare_stateful(got, expected)
    # Stateless on the same batches differs from the second batch on.
    plain = Embedder(path, provider="cpu")
    assert np.abs(plain.embed_batch(STATEFUL_BATCHES[1])[0] - expected[1][0]).max() > 1e-3
