"""Shared fixtures: ONNX models that follow (or break) the elmo-edge contract.

* ``tiny_model_path``: the bilm-tf fixture biLM, built by elmo_export's graph
  builder (real numbers; needs the export extra).
* ``toy_model_path``: a contract-conforming graph with closed-form outputs
  (see :func:`toy_vectors`), for exact plumbing tests without the export side:
  ``layers[b, l, t, k] = (sum of char ids of step t + 1000 l + k + S_b) * mask``
  (``token_vectors`` rows are the sum of the token's char ids, repeated)
  where ``S_b`` is the sum of ``state_h[0, 0, b]``, and each final state is
  the initial state plus the row's length (boundaries included).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx
import pytest
from elmo_runtime.format import chars, contract
from elmo_runtime.format.options import ElmoOptions, load_options, parse_options
from onnx import TensorProto, helper, numpy_helper
from util import FIXTURES_MISSING, fixture_dir, missing_fixtures

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




@pytest.fixture(scope="session", autouse=True)
def private_prepared_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Prepared copies of test models go to a temp dir, not the user's cache (subprocesses too)."""
    from elmo_runtime.prepared import ENV_CACHE

    before = os.environ.get(ENV_CACHE)
    os.environ[ENV_CACHE] = str(tmp_path_factory.mktemp("prepared-cache"))
    yield Path(os.environ[ENV_CACHE])
    if before is None:
        os.environ.pop(ENV_CACHE, None)
    else:
        os.environ[ENV_CACHE] = before


@pytest.fixture(scope="session")
def bilm_fixtures() -> Path:
    path = fixture_dir()
    if not (path / "options.json").is_file():
        missing_fixtures(f"{FIXTURES_MISSING} at {path} (set ELMO_FIXTURES)")
    return path


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line in the summary when the bilm-tf fixtures were missing: a green run skipped them."""
    skipped = terminalreporter.stats.get("skipped", [])
    count = sum(FIXTURES_MISSING in str(getattr(r, "longrepr", "")) for r in skipped)
    if count:
        terminalreporter.write_line(
            f"{count} tests skipped: {FIXTURES_MISSING} at {fixture_dir()}; set ELMO_FIXTURES "
            "to the bilm-tf fixture directory (ELMO_REQUIRE_FIXTURES=1 makes this a failure)",
            yellow=True,
        )


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory, bilm_fixtures: Path) -> Path:
    """The bilm-tf fixture biLM as an elmo-edge ONNX model."""
    onnx_graph = pytest.importorskip("elmo_export.graph.builder")
    weights_mod = pytest.importorskip("elmo_export.bilm_tf.weights")
    options = load_options(bilm_fixtures / "options.json")
    weights = weights_mod.read_weights(bilm_fixtures / "lm_weights.hdf5", options)
    proto = onnx_graph.build_model(options, weights)
    helper.set_model_props(proto, contract.make_metadata(options, source={"kind": "test"}))
    path = tmp_path_factory.mktemp("models") / "tiny.onnx"
    onnx.save(proto, str(path))
    return path


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


@pytest.fixture(scope="session")
def toy_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "toy.onnx"
    onnx.save(toy_model(), str(path))
    return path


@pytest.fixture(scope="session")
def toy() -> Callable[..., np.ndarray]:
    """:func:`toy_vectors`, for tests that compare against the toy model."""
    return toy_vectors


@pytest.fixture(scope="session")
def not_elmo_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid ONNX model (Identity) without elmo-edge metadata."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", FLOAT, [1])],
        [helper.make_tensor_value_info("y", FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("models") / "identity.onnx"
    onnx.save(model, str(path))
    return path
