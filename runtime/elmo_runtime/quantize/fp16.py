"""The fp16 mode: float16 weights and compute behind a float32 interface (for GPUs).

On the CPU provider onnxruntime runs the nodes that lack a float16 kernel in
float32 (correct, about 2× slower than the float32 model) and must skip the
optimizers in :data:`elmo_runtime.loading.session.DISABLED_OPTIMIZERS`
(microsoft/onnxruntime#28392). Batch independence is within float16's
precision, not exact: see :data:`.check.BATCH_TOLERANCE`.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import QuantizeError, first_line

FP16_MAX = float(np.finfo(np.float16).max)


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with float16 weights and compute, float32 inputs and outputs (in place).

    Raises QuantizeError naming a weight beyond float16's range (65504) or
    when the converted graph does not pass onnx's checker.
    """
    graph = model.graph
    inputs = [v.name for v in graph.input if v.type.tensor_type.elem_type == TensorProto.FLOAT]
    outputs = [v.name for v in graph.output if v.type.tensor_type.elem_type == TensorProto.FLOAT]
    # Float inputs keep their float32 default initializers; the graph reads a cast copy.
    renames = {name: f"{name}__fp16" for name in (*inputs, *outputs)}
    _graph_to_fp16(graph, keep=set(inputs), renames=renames, top=True)
    to_half, to_float = TensorProto.FLOAT16, TensorProto.FLOAT
    casts_in = [
        helper.make_node("Cast", [n], [renames[n]], name=f"{n}__to_fp16", to=to_half)
        for n in inputs
    ]
    casts_out = [
        helper.make_node("Cast", [renames[n]], [n], name=f"{n}__to_fp32", to=to_float)
        for n in outputs
    ]
    nodes = [*casts_in, *graph.node, *casts_out]
    graph.ClearField("node")
    graph.node.extend(nodes)
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:  # onnx raises ValidationError / InferenceError
        raise QuantizeError(f"the fp16 graph is invalid: {first_line(e)}") from None
    return model


def _graph_to_fp16(
    graph: onnx.GraphProto, keep: set[str], renames: dict[str, str], top: bool
) -> None:
    """Convert one graph (and its subgraphs) to float16, renaming boundary tensors."""
    for i, tensor in enumerate(graph.initializer):
        if tensor.data_type == TensorProto.FLOAT and tensor.name not in keep:
            graph.initializer[i].CopyFrom(_half_tensor(tensor))
    declared = [graph.value_info] if top else [graph.input, graph.output, graph.value_info]
    for infos in declared:
        for info in infos:
            if info.type.tensor_type.elem_type == TensorProto.FLOAT:
                info.type.tensor_type.elem_type = TensorProto.FLOAT16
    for info in graph.value_info:
        info.name = renames.get(info.name, info.name)
    for node in graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _graph_to_fp16(attr.g, keep, renames, top=False)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    _graph_to_fp16(sub, keep, renames, top=False)
            elif attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT:
                attr.t.CopyFrom(_half_tensor(attr.t))  # Constant, ConstantOfShape
            elif node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.FLOAT16


def _half_tensor(tensor: onnx.TensorProto) -> onnx.TensorProto:
    value = numpy_helper.to_array(tensor)
    big = np.abs(value[np.isfinite(value)]).max(initial=0.0)
    if big > FP16_MAX:
        raise QuantizeError(
            f"tensor {tensor.name!r} holds {big:.3g}, beyond float16's range ({FP16_MAX:g})"
        )
    return numpy_helper.from_array(value.astype(np.float16), tensor.name)
