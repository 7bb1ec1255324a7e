"""Small models and options for the tests.

* :func:`small_options`: tiny options for random-weight comparisons.
* The toy model: a contract-conforming graph with closed-form outputs (see
  :func:`toy_vectors`), for exact plumbing tests without the export side:
  ``layers[b, l, t, k] = (sum of char ids of step t + 1000 l + k + S_b) * mask``
  (``token_vectors`` rows are the sum of the token's char ids, repeated)
  where ``S_b`` is the sum of ``state_h[0, 0, b]``, and each final state is
  the initial state plus the row's length (boundaries included).
* :func:`identity_model`: a valid ONNX model that is not an elmo-edge model.
* :func:`break_build`: make the graph builder write a slightly wrong graph.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import pytest
from elmo_runtime.format import chars, contract
from elmo_runtime.format.options import ElmoOptions, parse_options
from onnx import TensorProto, helper, numpy_helper

FLOAT = TensorProto.FLOAT
TOY_OPTIONS = parse_options(
    {
        "lstm": {"dim": 3, "projection_dim": 2, "n_layers": 2, "use_skip_connections": False},
        "char_cnn": {
            "embedding": {"dim": 2},
            "n_characters": 262,
            "max_characters_per_token": chars.DEFAULT_MAX_CHARS,
            "activation": "relu",
            "n_highway": 0,
            "filters": [[1, 2]],
        },
    }
)

# A batch exercising the edge cases: mixed lengths, an empty sentence, a token
# longer than 48 bytes (truncated mid multibyte character), multibyte UTF-8.
EDGE_BATCH = [
    ["The", "cat", "sat", "on", "the", "mat", "."],
    [],
    ["a" + "é" * 30, "x" * 60],
    ["naïve", "日本語", "🙂", "Zürich"],
    ["one"],
]


def small_options(**overrides: object) -> ElmoOptions:
    """Tiny options for random-weight comparisons; lstm/char_cnn fields overridable
    (None drops a clip)."""
    lstm = {
        "dim": 8,
        "projection_dim": 5,
        "n_layers": 3,
        "cell_clip": 2.0,
        "proj_clip": 1.0,
        "use_skip_connections": True,
    }
    cnn = {
        "embedding": {"dim": 3},
        "n_characters": 262,
        "max_characters_per_token": 50,
        "activation": "tanh",
        "n_highway": 1,
        "filters": [[1, 4], [2, 5], [3, 6]],
    }
    for key, value in overrides.items():
        if key in lstm or key in ("cell_clip", "proj_clip"):
            if value is None:
                lstm.pop(key, None)
            else:
                lstm[key] = value
        elif key in cnn:
            cnn[key] = value
        else:
            raise KeyError(key)
    return parse_options({"lstm": lstm, "char_cnn": cnn})


def _const(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def _declared(spec: contract.TensorSpec, options: ElmoOptions,
              name: str | None = None) -> onnx.ValueInfoProto:
    """A graph input/output declared as the contract table says (under ``name``)."""
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(spec.dtype))
    return helper.make_tensor_value_info(name or spec.name, elem, spec.resolve(options))


def toy_model(
    options: ElmoOptions = TOY_OPTIONS,
    input_names: Sequence[str] = contract.INPUTS,
    metadata: dict[str, str] | None = None,
) -> onnx.ModelProto:
    """The closed-form contract model described in the module docstring."""
    n_layers, p = options.n_layers, options.projection_dim
    token_chars, cached, index, state_c, state_h = input_names
    n = helper.make_node
    nodes = [
        # token vectors: every column is the sum of the token's char ids
        n("Cast", [token_chars], ["chars_f"], to=FLOAT),
        n("ReduceSum", ["chars_f", "axis1"], ["char_sum"], keepdims=1),  # (N, 1)
        n("Mul", ["char_sum", "ones_p"], [contract.OUTPUT_TOKEN_VECTORS]),  # (N, P)
        n("Concat", [contract.OUTPUT_TOKEN_VECTORS, cached], ["table"], axis=0),
        n("Max", [index, "zero_i32"], ["safe"]),
        n("Gather", ["table", "safe"], ["steps"], axis=0),  # (B, T, P)
        n("ReduceMean", ["steps"], ["v_any"], axes=[2], keepdims=0),  # (B, T)
        n("Greater", [index, "minus_one"], ["mask_b"]),
        n("Cast", ["mask_b"], [contract.OUTPUT_MASK], to=TensorProto.INT32),
        n("Cast", ["mask_b"], ["mask_f"], to=FLOAT),
        n("Mul", ["v_any", "mask_f"], ["v"]),
        n("ReduceSum", ["mask_f", "axis1"], ["length"], keepdims=0),  # (B,)
        n("Reshape", ["length", "state_shape"], ["length_s"]),  # (1, 1, B, 1)
        n("Add", [state_c, "length_s"], [contract.OUTPUT_STATE_C]),
        n("Add", [state_h, "length_s"], [contract.OUTPUT_STATE_H]),
        n("Gather", [state_h, "zero_i"], ["h_dir"], axis=0),  # (L, S, P)
        n("Gather", ["h_dir", "zero_i"], ["h_row"], axis=0),  # (S, P)
        n("ReduceSum", ["h_row", "axis1"], ["s"], keepdims=0),  # (S,)
        n("Reshape", ["s", "row_shape"], ["s4"]),  # (S, 1, 1, 1)
        n("Unsqueeze", ["v", "axes13"], ["v4"]),  # (B, 1, T, 1)
        n("Unsqueeze", ["mask_f", "axes13"], ["mask4"]),
        n("Add", ["v4", "layer_offset"], ["a1"]),
        n("Add", ["a1", "k_ramp"], ["a2"]),
        n("Add", ["a2", "s4"], ["a3"]),
        n("Mul", ["a3", "mask4"], [contract.OUTPUT_LAYERS]),
    ]
    inits = [
        _const("axis1", np.array([1], np.int64)),
        _const("axes13", np.array([1, 3], np.int64)),
        _const("zero_i", np.int64(0)),
        _const("zero_i32", np.int32(0)),
        _const("minus_one", np.int32(-1)),
        _const("ones_p", np.ones((1, p), np.float32)),
        _const("state_shape", np.array([1, 1, -1, 1], np.int64)),
        _const("row_shape", np.array([-1, 1, 1, 1], np.int64)),
        _const(
            "layer_offset", 1000 * np.arange(n_layers + 1, dtype=np.float32)[None, :, None, None]
        ),
        _const("k_ramp", np.arange(2 * p, dtype=np.float32)[None, None, None, :]),
        _const(cached, np.zeros((0, p), np.float32)),  # optional input: no cached tokens
    ]
    renamed = dict(zip(contract.INPUTS, input_names, strict=True))
    graph = helper.make_graph(
        nodes,
        "toy",
        [_declared(spec, options, renamed[spec.name]) for spec in contract.INPUT_SPECS],
        [_declared(spec, options) for spec in contract.OUTPUT_SPECS],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = metadata if metadata is not None else contract.make_metadata(options, {"kind": "toy"})
    helper.set_model_props(model, meta)
    return model


def toy_vectors(tokens: Sequence[str], state: float = 0.0) -> np.ndarray:
    """What the toy model gives for ``tokens`` (L+1, n, 2P) when ``state_h`` rows hold ``state``."""
    p = TOY_OPTIONS.projection_dim
    ids = chars.batch_to_ids([tokens], TOY_OPTIONS.max_characters_per_token)[0][0]
    v = ids[1 : 1 + len(tokens)].sum(axis=-1).astype(np.float32)
    layer = 1000 * np.arange(TOY_OPTIONS.n_output_layers, dtype=np.float32)
    k = np.arange(2 * p, dtype=np.float32)
    out = v[None, :, None] + layer[:, None, None] + k[None, None, :] + p * state
    return out.astype(np.float32)


def identity_model() -> onnx.ModelProto:
    """A valid ONNX model (Identity) without elmo-edge metadata."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", FLOAT, [1])],
        [helper.make_tensor_value_info("y", FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def break_build(monkeypatch: pytest.MonkeyPatch, module: object) -> None:
    """Make ``module.build_model`` write a graph off by 0.01 in ``CNN_proj/b_proj``."""
    real_build = module.build_model

    def broken(options, weights):
        weights = dict(weights)
        weights["CNN_proj/b_proj"] = weights["CNN_proj/b_proj"] + 0.01
        return real_build(options, weights)

    monkeypatch.setattr(module, "build_model", broken)
