"""The int8 mode: exact integer products, activation scales per token, standard ONNX ops.

Each ``MatMul`` with a constant float weight ``W`` (K, N), in the main graph
and inside the LSTM ``Scan`` bodies, becomes::

    q = quantize(x)                      # uint8, one scale per row (token)
    y = MatMulInteger(q, Wq, zp) · (s_row ⊗ s_col)

**Weights**: symmetric 7-bit, one scale per output column (``per_channel``,
the default) or one for the tensor: ``Wq = round(W / s_col)`` in
[-:data:`WEIGHT_MAX`, :data:`WEIGHT_MAX`] stored as int8.

**Activations**, by the range :mod:`.ranges` proves for ``x``:

* bounded (``σ(o)·tanh(c)`` ∈ [-1, 1], ``h`` ∈ ±proj_clip): a fixed scale,
  ``QuantizeLinear`` with zero point 128 (or 0 when the range starts at 0);
* non-negative (ReLU outputs, the highway's mix of them): per row, ``s =
  max(x_row) / 255``, zero point 0;
* otherwise: per row, symmetric, ``s = max|x_row| / 127``, zero point 128.

A row is one token (one step of one sentence), so no sentence's vectors
depend on its batch-mates: the scale of a token never sees another token.

**Exact on every kernel.** The activation bytes are in [0, 255] and the
weights in [-63, 63], so a pair of products is at most 2·255·63 = 32,130 <
2¹⁵: AVX2's ``vpmaddubsw`` (which adds two u8×s8 products into a saturating
int16) cannot saturate, and VNNI, ARM dot-product and WASM kernels are exact
anyway. The int32 sums cannot overflow below K = 2³¹ / (255·63) ≈ 133,000.
``MatMulInteger`` gets a scalar zero point: onnxruntime's CPU kernel refuses a
per-row one (measured: "input1 zero point must be a scalar").

onnxruntime fuses ``MatMulInteger → Cast → Mul(·, a_scale·b_scale)`` into its
``MatMulIntegerToFloat`` kernel when the scale product is a ``Mul`` node; for
the fixed scales that product is written as ``DequantizeLinear(1, s) ·
s_col``, which constant folding leaves alone (its value is ``s · s_col``);
the ``DequantizeLinear`` sits in the main graph, computed once per run rather
than at every step of a ``Scan`` (measured: ~15% of the batch-1 time).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .ranges import Ranges, state_bounds

WEIGHT_MAX = 63  # 7-bit weights: 2 · 255 · 63 < 2**15
ZERO_POINT = 128  # symmetric activations in [1, 255]
SYMMETRIC_LEVELS = 127
UNSIGNED_LEVELS = 255
TINY = 1e-30  # least row maximum: an all-zero row quantizes to zeros, not NaN
SCHEMES = ("static", "per_row_nonnegative", "per_row_symmetric")


def quantize_weight(w: np.ndarray, per_channel: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(Wq int8 (K, N) in [-63, 63], scale float32 (N,)) with ``W ≈ Wq · scale``.

    A column (or tensor) of zeros gets scale 1.
    """
    w = w.astype(np.float64)
    top = np.abs(w).max(axis=0) if per_channel else np.full(w.shape[1], np.abs(w).max())
    scale = np.where(top > 0, top / WEIGHT_MAX, 1.0).astype(np.float32)
    q = np.clip(np.round(w / scale.astype(np.float64)), -WEIGHT_MAX, WEIGHT_MAX)
    return q.astype(np.int8), scale


def quantize_int8(model: onnx.ModelProto, per_channel: bool = True) -> dict[str, Any]:
    """Rewrite every constant-weight MatMul of ``model`` (bodies included) in place.

    Returns the count of rewritten MatMuls per activation scheme (:data:`SCHEMES`).
    """
    counts: Counter[str] = Counter()
    outer = _Outer(model.graph)
    _rewrite_graph(model.graph, Ranges(model.graph), per_channel, counts, outer)
    outer.prepend()
    return {scheme: counts[scheme] for scheme in SCHEMES}


class _Outer:
    """Constants of the main graph that subgraphs read (computed once, not at every step)."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.nodes: list[onnx.NodeProto] = []

    def fixed_scale(self, step: float) -> str:
        """``DequantizeLinear(1, step)``: the value ``step``, left alone by constant folding."""
        name = f"q8_fixed_scale_{len(self.nodes)}"
        self.graph.initializer.extend([numpy_helper.from_array(np.uint8(1), f"{name}_one"),
                                       numpy_helper.from_array(np.float32(step), f"{name}_step")])
        self.nodes.append(helper.make_node(
            "DequantizeLinear", [f"{name}_one", f"{name}_step"], [name], name=name))
        return name

    def prepend(self) -> None:
        nodes = [*self.nodes, *self.graph.node]
        self.graph.ClearField("node")
        self.graph.node.extend(nodes)


def _rewrite_graph(
    graph: onnx.GraphProto, ranges: Ranges, per_channel: bool, counts: Counter[str],
    outer: _Outer,
) -> None:
    for node in graph.node:
        for attr in node.attribute:
            if attr.type != onnx.AttributeProto.GRAPH:
                continue
            body = attr.g
            known = {}
            if node.op_type == "Scan":
                n_scan = next(a.i for a in node.attribute if a.name == "num_scan_inputs")
                known = state_bounds(body, len(body.input) - n_scan)
            _rewrite_graph(body, Ranges(body, known), per_channel, counts, outer)
    weights = {t.name: t for t in graph.initializer if t.data_type == TensorProto.FLOAT}
    uses = Counter(name for g in all_graphs(graph) for node in g.node for name in node.input)
    nodes: list[onnx.NodeProto] = []
    rewritten: set[str] = set()
    for node in graph.node:
        w = weights.get(node.input[1]) if node.op_type == "MatMul" else None
        if w is None or len(w.dims) != 2:
            nodes.append(node)
            continue
        emit = _Emitter(graph, node.output[0], outer)
        wq, col_scale = quantize_weight(numpy_helper.to_array(w), per_channel)
        scheme = emit.matmul(node.input[0], wq, col_scale, ranges.of(node.input[0]))
        counts[scheme] += 1
        if scheme != "static":
            rewritten.add(node.output[0])
        nodes.extend(emit.nodes)
        if uses[w.name] == 1:
            graph.initializer.remove(w)
    _keep_bias_apart(nodes, rewritten, {t.name for t in graph.initializer})
    graph.ClearField("node")
    graph.node.extend(nodes)


def _keep_bias_apart(nodes: list[onnx.NodeProto], rewritten: set[str], constants: set[str]) -> None:
    """Write ``Add(y, bias)`` after a rewritten MatMul as ``Sum(y, bias)`` (the same value).

    onnxruntime 1.32 fuses a following ``Add`` of a constant into its
    ``MatMulIntegerToFloat`` and then scales the bias by the per-row
    activation scale too (measured: off by up to 3.5 on a 50×512×1024
    product); it leaves a ``Sum`` out of the fusion. With a fixed (scalar)
    activation scale the fused bias is right and the Add stays.
    """
    for node in nodes:
        if node.op_type == "Add" and node.input[0] in rewritten and node.input[1] in constants:
            node.op_type = "Sum"


class _Emitter:
    """The nodes and constants replacing one MatMul whose output is ``out``."""

    def __init__(self, graph: onnx.GraphProto, out: str, outer: _Outer) -> None:
        self.graph, self.out, self.prefix, self.outer = graph, out, f"{out}_q8", outer
        self.nodes: list[onnx.NodeProto] = []

    def const(self, name: str, value: Any, dtype: Any) -> str:
        full = f"{self.prefix}_{name}"
        self.graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype), full))
        return full

    def op(self, op_type: str, inputs: list[str], name: str, **attrs: Any) -> str:
        out = self.out if name == "y" else f"{self.prefix}_{name}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def matmul(self, x: str, wq: np.ndarray, col_scale: np.ndarray,
               bound: tuple[float, float]) -> str:
        """Emit the quantized product of ``x`` and ``wq``; return the scheme used."""
        lo, hi = bound
        nonnegative = lo >= 0.0
        zp = self.const("zp", 0 if nonnegative else ZERO_POINT, np.uint8)
        if np.isfinite(lo) and np.isfinite(hi):
            scheme = "static"
            top = hi if nonnegative else max(-lo, hi)
            levels = UNSIGNED_LEVELS if nonnegative else SYMMETRIC_LEVELS
            value = np.float32(top / levels if top > 0 else 1.0)
            q = self.op("QuantizeLinear", [x, self.const("step", value, np.float32), zp], "x")
            a_scale = self.outer.fixed_scale(float(value))
        elif nonnegative:
            scheme = "per_row_nonnegative"
            top = self.op("ReduceMax", [x], "row_max", axes=[-1], keepdims=1)
            a_scale = self._row_scale(top, UNSIGNED_LEVELS)
            levels = self.op("Round", [self.op("Div", [x, a_scale], "x_div")], "x_round")
            q = self.op("Cast", [levels], "x", to=TensorProto.UINT8)
        else:
            scheme = "per_row_symmetric"
            top = self.op("ReduceMax", [self.op("Abs", [x], "abs")], "row_max", axes=[-1],
                          keepdims=1)
            a_scale = self._row_scale(top, SYMMETRIC_LEVELS)
            levels = self.op("Round", [self.op("Div", [x, a_scale], "x_div")], "x_round")
            shifted = self.op("Add", [levels, self.const("shift", ZERO_POINT, np.float32)], "x_zp")
            q = self.op("Cast", [shifted], "x", to=TensorProto.UINT8)
        product = self.op("MatMulInteger", [q, self.const("W", wq, np.int8), zp], "int32")
        scale = self.op("Mul", [a_scale, self.const("col_scale", col_scale, np.float32)], "scale")
        self.op("Mul", [self.op("Cast", [product], "float", to=TensorProto.FLOAT), scale], "y")
        return scheme

    def _row_scale(self, row_max: str, levels: int) -> str:
        floor = self.op("Max", [row_max, self.const("tiny", TINY, np.float32)], "row_max_pos")
        return self.op("Div", [floor, self.const("levels", levels, np.float32)], "a_scale")


def all_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """``graph`` and every subgraph below it (Scan bodies, If branches, …), depth first."""
    stack = [graph]
    while stack:
        g = stack.pop()
        yield g
        for node in g.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    stack.append(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    stack.extend(attr.graphs)
