"""The contract table is the one declaration: the builder and the validator follow it together.

Changing a dim or an axis name in ``elmo_runtime.format.contract`` changes what
the graph builder declares *and* what the session accepts; a model built
before the change is refused with every mismatch in one error. Torch-free.
"""

from __future__ import annotations

import dataclasses

import onnx
import pytest
from elmo_export.graph.builder import build_model
from elmo_runtime.errors import ModelError
from elmo_runtime.format import contract
from elmo_runtime.loading.loaded import open_model
from support.bilm_random import random_weights
from support.errors import one_line_error
from support.models import small_options

OPTIONS = small_options()


def _save(path, options=OPTIONS):
    proto = build_model(options, random_weights(options, seed=1))
    onnx.helper.set_model_props(proto, contract.make_metadata(options, {"kind": "test"}))
    onnx.save(proto, str(path))
    return path


def _declared(path, name: str) -> list:
    model = onnx.load(str(path))
    for value in [*model.graph.input, *model.graph.output]:
        if value.name == name:
            return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
    raise KeyError(name)


def _patch(monkeypatch, name: str, **changes) -> None:
    """Replace one row of the table (every view of it: specs, TENSORS)."""
    new = dataclasses.replace(contract.TENSORS[name], **changes)

    def swap(specs):
        return tuple(new if s.name == name else s for s in specs)

    monkeypatch.setattr(contract, "INPUT_SPECS", swap(contract.INPUT_SPECS))
    monkeypatch.setattr(contract, "OUTPUT_SPECS", swap(contract.OUTPUT_SPECS))
    monkeypatch.setattr(contract, "TENSORS", {**contract.TENSORS, name: new})


def test_builder_declares_the_table(tmp_path):
    path = _save(tmp_path / "m.onnx")
    for spec in (*contract.INPUT_SPECS, *contract.OUTPUT_SPECS):
        assert _declared(path, spec.name) == spec.resolve(OPTIONS), spec.name
    open_model(path, "cpu")  # and the validator accepts it


def test_renamed_axis_moves_builder_and_validator_together(tmp_path, monkeypatch):
    before = _save(tmp_path / "before.onnx")
    steps = contract.Axis("steps")
    for name in (contract.OUTPUT_LAYERS, contract.OUTPUT_MASK, contract.INPUT_TOKEN_INDEX):
        dims = tuple(steps if d == contract.TOKENS else d for d in contract.TENSORS[name].dims)
        _patch(monkeypatch, name, dims=dims)
    after = _save(tmp_path / "after.onnx")
    assert _declared(after, contract.OUTPUT_LAYERS)[2] == "steps"
    assert _declared(after, contract.INPUT_TOKEN_INDEX) == ["batch", "steps"]
    open_model(after, "cpu")
    with pytest.raises(ModelError) as e:
        open_model(before, "cpu")
    message = one_line_error(e)
    assert "do not match the elmo-edge contract" in message
    # every mismatch, in one error
    for name, axis in ((contract.INPUT_TOKEN_INDEX, 1), (contract.OUTPUT_LAYERS, 2),
                       (contract.OUTPUT_MASK, 1)):
        assert f"{name} dim {axis} is 'tokens', expected axis 'steps'" in message


def test_changed_dim_moves_builder_and_validator_together(tmp_path, monkeypatch):
    before = _save(tmp_path / "before.onnx")
    # token_chars rows declared as n_filters (15) wide instead of max_characters_per_token (50)
    _patch(monkeypatch, contract.INPUT_TOKEN_CHARS, dims=(contract.DISTINCT, "n_filters"))
    after = _save(tmp_path / "after.onnx")
    assert _declared(after, contract.INPUT_TOKEN_CHARS) == ["distinct_tokens", OPTIONS.n_filters]
    open_model(after, "cpu")
    with pytest.raises(ModelError, match=r"token_chars has shape \['distinct_tokens', 50\], "
                                         r"but the model's options imply \['\?', 15\]"):
        open_model(before, "cpu")


def test_missing_output_and_extra_input_in_one_error(tmp_path):
    path = _save(tmp_path / "m.onnx")
    model = onnx.load(str(path))
    model.graph.output.pop()  # token_vectors
    model.graph.input.append(onnx.helper.make_tensor_value_info(
        "word_ids", onnx.TensorProto.INT32, ["batch", "tokens"]))
    onnx.save(model, str(tmp_path / "bad.onnx"))
    with pytest.raises(ModelError) as e:
        open_model(tmp_path / "bad.onnx", "cpu")
    message = one_line_error(e)
    assert "output token_vectors is missing" in message
    assert "input word_ids is not in the contract" in message


def test_check_graph_reports_dtypes_and_axes():
    """The validator on a described interface (onnxruntime itself refuses such graphs)."""
    def described(specs):
        return {s.name: (contract.DTYPES[s.dtype], s.resolve(OPTIONS)) for s in specs}

    inputs, outputs = described(contract.INPUT_SPECS), described(contract.OUTPUT_SPECS)
    assert contract.check_graph(inputs, {}, outputs, OPTIONS) == []
    inputs[contract.INPUT_TOKEN_INDEX] = ("tensor(int64)", ["batch", "tokens"])
    outputs[contract.OUTPUT_MASK] = ("tensor(int32)", ["batch", None])
    assert contract.check_graph(inputs, {}, outputs, OPTIONS) == [
        "token_index has type tensor(int64), expected tensor(int32)",
        "mask dim 1 is None, expected axis 'tokens'",
    ]


def test_table_rows_are_json_ready():
    rows = contract.tensor_table()
    assert [r["name"] for r in rows] == [*contract.INPUTS, *contract.OUTPUTS]
    by_name = {r["name"]: r for r in rows}
    assert by_name["layers"]["dims"] == ["batch", "n_output_layers", "tokens", "output_dim"]
    assert by_name["state_c"]["optional"] and not by_name["token_chars"]["optional"]
