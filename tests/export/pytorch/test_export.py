"""ONNX export: dynamic axes, a loop that is not unrolled, parity with PyTorch, metadata."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch", reason="elmo export checks against PyTorch (export extra)")

from elmo_export.pytorch import export as onnx_export  # noqa: E402
from elmo_export.pytorch.export import ExportError, export_onnx, random_sentences  # noqa: E402
from elmo_export.pytorch.modules import BiLM  # noqa: E402
from elmo_runtime.format import contract  # noqa: E402
from elmo_runtime.format.chars import batch_to_ids  # noqa: E402
from elmo_runtime.format.options import parse_options  # noqa: E402
from support.bilm_random import random_weights  # noqa: E402
from support.models import break_build  # noqa: E402

SMALL = {
    "lstm": {"dim": 24, "projection_dim": 8, "n_layers": 2, "cell_clip": 3, "proj_clip": 3,
             "use_skip_connections": True},
    "char_cnn": {"embedding": {"dim": 4}, "filters": [[1, 4], [2, 8], [3, 8]], "n_highway": 1,
                 "n_characters": 262, "max_characters_per_token": 50, "activation": "relu"},
}


@pytest.fixture(scope="module")
def small_model() -> BiLM:
    options = parse_options(SMALL)
    return BiLM.from_elmo_weights(options, random_weights(options, seed=3)).eval()


@pytest.fixture(scope="module")
def small_onnx(small_model, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("export") / "small.onnx"
    export_onnx(small_model, path, {"kind": "test"})
    return str(path)


def _session(path: str) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def _torch(model: BiLM, ids: np.ndarray, state=None):
    """The PyTorch model on a padded (B, T, C) batch, through the graph's inputs."""
    feed = contract.char_ids_feed(ids)
    return model(torch.from_numpy(feed[contract.INPUT_TOKEN_CHARS]).long(),
                 torch.from_numpy(feed[contract.INPUT_TOKEN_INDEX]).long(), state)


def _all_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    nodes = list(graph.node)
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                nodes += _all_nodes(attr.g)
    return nodes


def test_time_loop_is_a_scan_not_unrolled(small_onnx):
    model = onnx.load(small_onnx)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Scan") == 4  # 2 directions × 2 layers
    # one step's body: a handful of ops, not one copy per time step
    assert len(_all_nodes(model.graph)) < 200
    dims = {inp.name: [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
            for inp in model.graph.input}
    assert dims[contract.INPUT_TOKEN_CHARS] == ["distinct_tokens", 50]
    assert dims[contract.INPUT_TOKEN_INDEX] == ["batch", "tokens"]


@pytest.mark.parametrize("batch,max_len", [(1, 1), (1, 200), (7, 45), (32, 120), (64, 30)])
def test_onnx_matches_pytorch(small_model, small_onnx, batch, max_len):
    rng = np.random.default_rng(batch * 1000 + max_len)
    sentences = random_sentences(rng, batch, max_len)
    ids, lengths = batch_to_ids(sentences)
    layers, mask, state_c, state_h, _ = _session(small_onnx).run(None,
                                                                   contract.char_ids_feed(ids))
    with torch.no_grad():
        ref = _torch(small_model, ids)
    assert layers.shape == (batch, 3, max_len + 2, 16)
    assert np.abs(layers - ref.layers.numpy()).max() <= 1e-5
    assert np.abs(state_c - ref.state_c.numpy()).max() <= 1e-5
    assert np.abs(state_h - ref.state_h.numpy()).max() <= 1e-5
    np.testing.assert_array_equal(mask.sum(axis=1), lengths)
    # padded steps are zero in every layer
    for row, n in enumerate(lengths):
        assert not layers[row, :, n:].any()


def test_states_broadcast_and_override(small_model, small_onnx):
    """The state inputs default to zeros; fed ones are used row by row."""
    rng = np.random.default_rng(0)
    ids, _ = batch_to_ids(random_sentences(rng, 3, 6))
    sess = _session(small_onnx)
    default = sess.run(None, contract.char_ids_feed(ids))[0]
    zeros = sess.run(None, {**contract.char_ids_feed(ids),
                            "state_c": np.zeros((2, 2, 3, 24), np.float32),
                            "state_h": np.zeros((2, 2, 3, 8), np.float32)})[0]
    np.testing.assert_array_equal(default, zeros)
    c0 = rng.uniform(-1, 1, (2, 2, 3, 24)).astype(np.float32)
    h0 = rng.uniform(-1, 1, (2, 2, 3, 8)).astype(np.float32)
    fed = sess.run(None, {**contract.char_ids_feed(ids), "state_c": c0, "state_h": h0})
    with torch.no_grad():
        ref = _torch(small_model, ids, (torch.from_numpy(c0), torch.from_numpy(h0)))
    assert np.abs(fed[0] - ref.layers.numpy()).max() <= 1e-5
    assert np.abs(fed[0] - default).max() > 1e-3  # the state really changed the output


def test_metadata_describes_the_model(small_onnx):
    meta = {p.key: p.value for p in onnx.load(small_onnx).metadata_props}
    info = contract.parse_metadata(meta, small_onnx)
    assert info.options == parse_options(SMALL)
    parity = json.loads(meta[contract.KEY_PARITY])
    assert parity["checked"] and parity["max_abs_diff"] <= parity["atol"] == 1e-5
    assert json.loads(meta[contract.KEY_QUANT]) == {"mode": "none"}


def test_export_refuses_a_graph_that_disagrees(small_model, tmp_path, monkeypatch):
    break_build(monkeypatch, onnx_export)
    out = tmp_path / "bad.onnx"
    with pytest.raises(ExportError, match="layers: max abs diff"):
        export_onnx(small_model, out, {"kind": "test"})
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temp file


def test_export_to_missing_directory(small_model, tmp_path):
    with pytest.raises(Exception, match="does not exist"):
        export_onnx(small_model, tmp_path / "nope" / "m.onnx", {"kind": "test"})


def test_runtime_refuses_metadata_that_does_not_match_the_graph(small_onnx, tmp_path):
    """A model whose metadata options disagree with its graph's shapes is refused by name."""
    from elmo_runtime.errors import ModelError
    from elmo_runtime.loading.loaded import open_model

    model = onnx.load(small_onnx)
    wrong = json.loads(json.dumps(SMALL))
    wrong["lstm"]["projection_dim"] = 9
    for prop in model.metadata_props:
        if prop.key == contract.KEY_OPTIONS:
            prop.value = json.dumps(wrong)
    path = tmp_path / "mismatch.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelError, match=r"layers has shape .* imply \['\?', 3, '\?', 18\]"):
        open_model(path, "cpu")


def test_stateless_vectors_do_not_depend_on_the_batch(small_onnx):
    """The same sentence alone and inside a batch of 50 (any order) agrees to 1e-5."""
    from elmo_runtime import Embedder

    emb = Embedder(small_onnx, provider="cpu")
    rng = np.random.default_rng(7)
    batch = random_sentences(rng, 50, 40)
    alone = [emb.embed_sentence(s) for s in batch[:5]]
    together = emb.embed_batch(batch)
    order = rng.permutation(50)
    shuffled = emb.embed_batch([batch[i] for i in order])
    streamed = list(emb.embed_sentences(batch, batch_size=16))
    for i in range(5):
        assert np.abs(alone[i] - together[i]).max() <= 1e-5
        assert np.abs(alone[i] - shuffled[int(np.where(order == i)[0][0])]).max() <= 1e-5
        assert np.abs(alone[i] - streamed[i]).max() <= 1e-5
    assert [a.shape[1] for a in streamed] == [len(s) for s in batch]
