"""Build the elmo-edge ONNX graph from ELMo weights: NumPy and onnx only, no PyTorch.

The recurrence is an ONNX ``Scan`` per direction and layer whose body is one
LSTM step, so the graph's size does not depend on the sentence length and
both ``batch`` and ``tokens`` stay dynamic. Work that does not depend on the
previous step is hoisted out of the loop: the input projection of every step
is one MatMul, and the +1 forget bias is folded into the stored bias.
The char CNN runs once per distinct token (``token_chars``); steps gather
their token's row. The graph's inputs and outputs (names, dtypes, dims, axis
names, defaults of optional inputs) are declared from the contract table,
:data:`elmo_runtime.format.contract.TENSORS`. Weights without cell projections
(no ``W_P_0``) get no projection MatMul and no ``proj_clip``
(:mod:`elmo_export.bilm_tf.weights`).
"""

from __future__ import annotations

import numpy as np
import onnx
from elmo_runtime.format import contract
from elmo_runtime.format.options import FORGET_BIAS, ElmoOptions
from onnx import TensorProto, helper, numpy_helper

from ..bilm_tf.weights import (
    PROJECTION,
    WORD_EMBED,
    Weights,
    check_weights,
    has_projection,
    lstm_prefix,
)

OPSET = 17
IR_VERSION = 8  # readable by onnxruntime >= 1.10
FLOAT = TensorProto.FLOAT


class _Graph:
    """A small helper that names nodes and collects nodes and initializers."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{self.prefix}{hint}_{self._count}"

    def const(self, value: np.ndarray, hint: str) -> str:
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str = "", n_out: int = 1, **attrs):
        outputs = [self.name(hint or op_type.lower()) for _ in range(n_out)]
        self.nodes.append(
            helper.make_node(op_type, inputs, outputs, name=self.name(op_type), **attrs)
        )
        return outputs[0] if n_out == 1 else outputs

    def linear(self, x: str, w: np.ndarray, b: np.ndarray | None, hint: str) -> str:
        y = self.op("MatMul", [x, self.const(w.astype(np.float32), f"{hint}_W")], hint)
        if b is None:
            return y
        return self.op("Add", [y, self.const(b.astype(np.float32), f"{hint}_b")], hint)


def declare(spec: contract.TensorSpec, options: ElmoOptions) -> onnx.ValueInfoProto:
    """A graph input or output as the contract table declares it for ``options``."""
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(spec.dtype))
    return helper.make_tensor_value_info(spec.name, elem, spec.resolve(options))


def _lstm_step_body(
    w_state: np.ndarray, w_proj: np.ndarray | None, cell_clip: float | None,
    proj_clip: float | None
) -> onnx.GraphProto:
    """One LSTM step: (c, h, x_proj_t, mask_t) → (c', h', y_t); no W_P_0: h' = σ(o)·tanh(c')."""
    g = _Graph("step_")
    d = w_state.shape[1] // 4
    p = d if w_proj is None else w_proj.shape[1]
    z = g.op("Add", ["x_t", g.linear("h_prev", w_state, None, "rec")], "z")
    i, j, f, o = g.op("Split", [z], "gate", n_out=4, axis=1)
    keep = g.op("Mul", [g.op("Sigmoid", [f]), "c_prev"], "keep")
    write = g.op("Mul", [g.op("Sigmoid", [i]), g.op("Tanh", [j])], "write")
    c_new = g.op("Add", [keep, write], "c_new")
    if cell_clip is not None:
        lo, hi = g.const(np.float32(-cell_clip), "lo"), g.const(np.float32(cell_clip), "hi")
        c_new = g.op("Clip", [c_new, lo, hi], "c_clip")
    h_new = g.op("Mul", [g.op("Sigmoid", [o]), g.op("Tanh", [c_new])], "h_full")
    if w_proj is not None:
        h_new = g.linear(h_new, w_proj, None, "proj")
    if w_proj is not None and proj_clip is not None:
        lo, hi = g.const(np.float32(-proj_clip), "lo"), g.const(np.float32(proj_clip), "hi")
        h_new = g.op("Clip", [h_new, lo, hi], "h_clip")
    zero = g.const(np.float32(0.0), "zero")
    g.nodes.append(helper.make_node("Where", ["m_t", c_new, "c_prev"], ["c_next"]))
    g.nodes.append(helper.make_node("Where", ["m_t", h_new, "h_prev"], ["h_next"]))
    g.nodes.append(helper.make_node("Where", ["m_t", h_new, zero], ["y_t"]))
    return helper.make_graph(
        g.nodes,
        "lstm_step",
        inputs=[
            helper.make_tensor_value_info("c_prev", FLOAT, ["batch", d]),
            helper.make_tensor_value_info("h_prev", FLOAT, ["batch", p]),
            helper.make_tensor_value_info("x_t", FLOAT, ["batch", 4 * d]),
            helper.make_tensor_value_info("m_t", TensorProto.BOOL, ["batch", 1]),
        ],
        outputs=[
            helper.make_tensor_value_info("c_next", FLOAT, ["batch", d]),
            helper.make_tensor_value_info("h_next", FLOAT, ["batch", p]),
            helper.make_tensor_value_info("y_t", FLOAT, ["batch", p]),
        ],
        initializer=g.initializers,
    )


def _char_cnn(g: _Graph, o: ElmoOptions, w: Weights, token_chars: str) -> str:
    """token_chars (N, C) → token vectors (N, P)."""
    e = o.char_embed_dim
    table = np.concatenate([np.zeros((1, e), np.float32), w["char_embed"]]).astype(np.float32)
    emb = g.op("Gather", [g.const(table, "char_embed"), token_chars], "emb")  # (N, C, e)
    x = g.op("Transpose", [emb], "emb_nec", perm=[0, 2, 1])  # (N, e, C)
    act = "Tanh" if o.activation == "tanh" else "Relu"
    pooled = []
    for i in range(len(o.filters)):
        kernel = w[f"CNN/W_cnn_{i}"][0].transpose(2, 1, 0)  # (w, e, n) → (n, e, w)
        conv = g.op(
            "Conv",
            [x, g.const(kernel.astype(np.float32), f"cnn{i}_W"), g.const(w[f"CNN/b_cnn_{i}"], "b")],
            f"conv{i}",
        )
        top = g.op("ReduceMax", [conv], f"pool{i}", axes=[2], keepdims=0)
        pooled.append(g.op(act, [top], f"act{i}"))
    h = g.op("Concat", pooled, "cnn", axis=1) if len(pooled) > 1 else pooled[0]
    for k in range(o.n_highway):
        # carry and transform in one MatMul: x·[W_carry | W_transform]
        wk = np.concatenate([w[f"CNN_high_{k}/W_carry"], w[f"CNN_high_{k}/W_transform"]], 1)
        bk = np.concatenate([w[f"CNN_high_{k}/b_carry"], w[f"CNN_high_{k}/b_transform"]])
        both = g.linear(h, wk, bk, f"highway{k}")
        gate_in, trans_in = g.op("Split", [both], f"hw{k}", n_out=2, axis=1)
        gate = g.op("Sigmoid", [gate_in], "gate")
        trans = g.op("Relu", [trans_in], "trans")
        # g·t + (1−g)·x
        carry = g.op("Mul", [g.op("Sub", [g.const(np.float32(1.0), "one"), gate]), h], "carry")
        h = g.op("Add", [g.op("Mul", [gate, trans]), carry], f"highway{k}_out")
    if o.has_word_branch:  # [word vector; char CNN] before the projection (ELMoForManyLangs)
        table = g.const(np.asarray(w[WORD_EMBED], np.float32), "word_embed")
        words = g.op("Gather", [table, contract.INPUT_WORD_IDS], "words", axis=0)  # (N, W)
        h = g.op("Concat", [words, h], "token_features", axis=1)
    return g.linear(h, w["CNN_proj/W_proj"], w["CNN_proj/b_proj"], "cnn_proj")


def build_model(options: ElmoOptions, weights: Weights) -> onnx.ModelProto:
    """The ONNX model of a biLM (no metadata; :func:`.convert.write_model` adds it)."""
    check_weights(weights, options, "weights")
    o = options
    g = _Graph()
    n_layers, d, p = o.n_layers, o.lstm_dim, o.projection_dim
    projected = has_projection(weights, o)

    index = contract.INPUT_TOKEN_INDEX
    batch = g.op("Slice", [g.op("Shape", [index], "index_shape"),
                           g.const(np.array([0], np.int64), "s"),
                           g.const(np.array([1], np.int64), "e")], "batch")

    # mask: a step is real when it points at a token
    mask = g.op("Greater", [index, g.const(np.int32(-1), "minus_one")], "mask_bool")  # (B, T)
    g.nodes.append(helper.make_node("Cast", [mask], [contract.OUTPUT_MASK], to=TensorProto.INT32))
    mask_f = g.op("Cast", [mask], "mask_f", to=FLOAT)

    # each distinct token once, then one row per step from [encoded; cached]
    encoded = _char_cnn(g, o, weights, contract.INPUT_TOKEN_CHARS)  # (N, P)
    g.nodes.append(helper.make_node("Identity", [encoded], [contract.OUTPUT_TOKEN_VECTORS]))
    table = g.op("Concat", [encoded, contract.INPUT_CACHED_VECTORS], "token_table", axis=0)
    safe = g.op("Max", [index, g.const(np.int32(0), "zero_i")], "safe_index")
    tokens = g.op("Gather", [table, safe], "tokens", axis=0)  # (B, T, P)
    tokens = g.op("Mul", [tokens, g.op("Unsqueeze", [mask_f, g.const(np.array([2], np.int64),
                                                                      "ax")])], "tokens_masked")
    x_tm = g.op("Transpose", [tokens], "tokens_tm", perm=[1, 0, 2])  # (T, B, P)
    mask_tm = g.op("Unsqueeze", [g.op("Transpose", [mask], perm=[1, 0]),
                                 g.const(np.array([2], np.int64), "ax")], "mask_tm")  # (T, B, 1)

    # initial states, broadcast from (2, L, 1 or B, ·) to (2, L, B, ·)
    init = {}
    for name, width in ((contract.INPUT_STATE_C, d), (contract.INPUT_STATE_H, p)):
        full = g.op("Concat", [g.const(np.array([2, n_layers], np.int64), "dl"), batch,
                               g.const(np.array([width], np.int64), "w")], axis=0)
        init[name] = g.op("Expand", [name, full], f"{name}_full")

    def initial(name: str, direction: int, layer: int) -> str:
        per_dir = g.op("Gather", [init[name], g.const(np.int64(direction), "d")], axis=0)
        return g.op("Gather", [per_dir, g.const(np.int64(layer), "l")], axis=0)

    forget = np.zeros(4 * d, np.float32)
    forget[2 * d : 3 * d] = FORGET_BIAS
    layer_outputs: list[list[str]] = [[], []]
    finals_c, finals_h = [], []
    for direction in range(2):
        inp = x_tm
        for layer in range(n_layers):
            prefix = lstm_prefix(direction, layer)
            w0 = weights[f"{prefix}/W_0"]
            bias = weights[f"{prefix}/B"] + forget
            x_proj = g.linear(inp, w0[:p], bias, f"xproj{direction}{layer}")
            w_proj = weights[f"{prefix}/{PROJECTION}"] if projected else None
            body = _lstm_step_body(w0[p:], w_proj, o.cell_clip, o.proj_clip)
            c_fin, h_fin, out = g.op(
                "Scan",
                [initial(contract.INPUT_STATE_C, direction, layer),
                 initial(contract.INPUT_STATE_H, direction, layer), x_proj, mask_tm],
                f"scan{direction}{layer}",
                n_out=3,
                body=body,
                num_scan_inputs=2,
                scan_input_directions=[direction, direction],
                scan_output_directions=[direction],
            )
            if o.use_skip_connections and layer > 0:
                out = g.op("Add", [out, inp], f"residual{direction}{layer}")
            layer_outputs[direction].append(out)
            finals_c.append(c_fin)
            finals_h.append(h_fin)
            inp = out

    # layers: (T, B, 2P) each → (T, B, L+1, 2P) → (B, L+1, T, 2P)
    ax2 = g.const(np.array([2], np.int64), "ax")
    stacked = [g.op("Unsqueeze", [g.op("Concat", [x_tm, x_tm], axis=2), ax2])]
    for fwd, bwd in zip(layer_outputs[0], layer_outputs[1], strict=True):
        stacked.append(g.op("Unsqueeze", [g.op("Concat", [fwd, bwd], axis=2), ax2]))
    all_layers = g.op("Concat", stacked, "all_layers", axis=2)
    g.nodes.append(
        helper.make_node("Transpose", [all_layers], [contract.OUTPUT_LAYERS], perm=[1, 2, 0, 3])
    )
    for finals, width, out_name in (
        (finals_c, d, contract.OUTPUT_STATE_C),
        (finals_h, p, contract.OUTPUT_STATE_H),
    ):
        joined = g.op("Concat", finals, axis=0)  # (2·L·B, width)
        shape = g.const(np.array([2, n_layers, -1, width], np.int64), "state_shape")
        g.nodes.append(helper.make_node("Reshape", [joined, shape], [out_name]))

    # optional inputs: their defaults are overridable initializers. Tensors that only
    # some models have (in_every_model False, e.g. another char-id scheme's) are not ours.
    inputs = list(contract.input_specs(o))  # + word_ids for a model with a word branch
    outputs = [spec for spec in contract.OUTPUT_SPECS if spec.in_every_model]
    defaults = [numpy_helper.from_array(spec.default_value(o), spec.name)
                for spec in inputs if spec.optional]
    graph = helper.make_graph(
        g.nodes,
        "elmo_bilm",
        inputs=[declare(spec, o) for spec in inputs],
        outputs=[declare(spec, o) for spec in outputs],
        initializer=g.initializers + defaults,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="elmo-edge",
        doc_string="ELMo biLM exported by elmo-edge; see metadata_props elmo_edge.*",
    )
    model.ir_version = IR_VERSION
    return model
