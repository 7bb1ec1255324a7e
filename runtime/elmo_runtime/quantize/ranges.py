"""Value ranges of a graph's tensors, read from its ops: which MatMul inputs are bounded.

A small interval analysis over the ops elmo-edge graphs use. The int8 rewrite
(:mod:`.int8`) asks it for the range of each MatMul's activation input:

* a finite range (``σ(o)·tanh(c)`` lies in [-1, 1]; ``h`` is clipped to
  ±proj_clip) gets a **static** scale: no per-row reduction at run time;
* a range that starts at 0 (ReLU, the highway's convex mix of ReLU outputs)
  uses all 256 uint8 levels with zero point 0;
* anything else is quantized per row, symmetric.

Unknown ops and graph inputs are unbounded, so the analysis can only err
towards the general (dynamic) scheme. Loop-carried states of a ``Scan`` body
take the range of what the body writes into them (see :func:`state_bounds`),
which assumes that a caller-supplied initial state lies in the same range;
every state the model itself returns does.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import numpy_helper

Interval = tuple[float, float]
UNBOUNDED: Interval = (-math.inf, math.inf)
EMPTY: Interval = (math.inf, -math.inf)  # the union's identity: a state seen before it exists

# Ops whose output values are some of their first input's values (reshaped, gathered, …).
_SAME_AS_DATA = frozenset(
    {"Identity", "Reshape", "Transpose", "Unsqueeze", "Squeeze", "Flatten", "Slice", "Gather",
     "Expand", "Split", "ReduceMax", "ReduceMin", "MaxPool", "Dropout"}
)
_UNION = frozenset({"Concat", "Max", "Min"})


def _union(a: Interval, b: Interval) -> Interval:
    return (min(a[0], b[0]), max(a[1], b[1]))


def _product(a: Interval, b: Interval) -> Interval:
    values = [x * y for x in a for y in b]
    values = [0.0 if math.isnan(v) else v for v in values]  # 0 · ∞: the zero side wins
    return (min(values), max(values))


def _is_empty(a: Interval) -> bool:
    return a[0] > a[1]


class Ranges:
    """Interval bounds of the tensors of one graph (subgraphs are analysed separately).

    ``known`` presets the range of some names (a Scan body's state inputs).
    """

    def __init__(self, graph: onnx.GraphProto, known: dict[str, Interval] | None = None) -> None:
        self._producer = {out: node for node in graph.node for out in node.output}
        self._consts = {t.name: t for t in graph.initializer}
        self._inputs = {v.name for v in graph.input}
        self._memo: dict[str, Interval] = dict(known or {})

    def of(self, name: str) -> Interval:
        """The (lo, hi) every value of tensor ``name`` lies in; ±inf when not bounded."""
        if name not in self._memo:
            self._memo[name] = self._compute(name)
        return self._memo[name]

    def _compute(self, name: str) -> Interval:
        if name in self._consts and name not in self._inputs:
            return _array_range(numpy_helper.to_array(self._consts[name]))
        node = self._producer.get(name)
        if node is None:
            return UNBOUNDED
        op, ins = node.op_type, [i for i in node.input if i]
        if op == "Constant":
            value = next((a for a in node.attribute if a.name == "value"), None)
            return _array_range(numpy_helper.to_array(value.t)) if value is not None else UNBOUNDED
        if op == "Sigmoid":
            return (0.0, 1.0)
        if op == "Tanh":
            return (-1.0, 1.0)
        if op == "Relu":
            lo, hi = self.of(ins[0])
            return (max(lo, 0.0), max(hi, 0.0))
        if op == "Clip":  # opset ≥ 11: min and max are optional inputs ("" when absent)
            lo, hi = self.of(node.input[0])
            given = list(node.input) + ["", ""]
            cut_lo = self.of(given[1])[0] if given[1] else -math.inf
            cut_hi = self.of(given[2])[1] if given[2] else math.inf
            return (min(max(lo, cut_lo), cut_hi), max(min(hi, cut_hi), cut_lo))
        if op in ("Add", "Sub", "Mul"):
            a, b = self.of(ins[0]), self.of(ins[1])
            if _is_empty(a) or _is_empty(b):
                return EMPTY
            if op == "Add":
                return (a[0] + b[0], a[1] + b[1])
            if op == "Sub":
                return (a[0] - b[1], a[1] - b[0])
            return _product(a, b)
        if op == "Where":
            return _union(self.of(ins[1]), self.of(ins[2]))
        if op in _UNION:
            result = EMPTY
            for i in ins:
                result = _union(result, self.of(i))
            return result
        if op in _SAME_AS_DATA:
            return self.of(ins[0])
        if op == "Scan":
            return self._scan_output(node, list(node.output).index(name))
        return UNBOUNDED

    def _scan_output(self, node: onnx.NodeProto, k: int) -> Interval:
        """Output ``k`` of a Scan: what its body writes there, states bounded as in the body."""
        body = next(a.g for a in node.attribute if a.name == "body")
        n_scan = next(a.i for a in node.attribute if a.name == "num_scan_inputs")
        n_states = len(body.input) - n_scan
        known = state_bounds(body, n_states)
        if k < n_states and body.input[k].name not in known:
            return UNBOUNDED  # a final state may still hold the unbounded initial one
        return Ranges(body, known).of(body.output[k].name)


def _array_range(value: np.ndarray) -> Interval:
    if value.size == 0 or value.dtype.kind not in "fiub":
        return EMPTY if value.size == 0 else UNBOUNDED
    value = value.astype(np.float64)
    if not np.isfinite(value).all():
        return UNBOUNDED
    return (float(value.min()), float(value.max()))


def state_bounds(body: onnx.GraphProto, n_states: int) -> dict[str, Interval]:
    """Ranges of a Scan body's loop-carried state inputs, from what the body writes into them.

    State ``i`` (input ``i``, output ``i``) gets the range of its output
    computed with the state itself taken as empty, e.g. ``Where(m,
    Clip(x, -3, 3), h_prev)`` → [-3, 3]. This holds for every step when the
    initial state lies in that range; a state the body may leave unbounded
    gets no entry.
    """
    bounds: dict[str, Interval] = {}
    for i in range(n_states):
        state, written = body.input[i].name, body.output[i].name
        lo, hi = Ranges(body, {state: EMPTY}).of(written)
        if math.isfinite(lo) and math.isfinite(hi) and lo <= hi:
            bounds[state] = (lo, hi)
    return bounds
