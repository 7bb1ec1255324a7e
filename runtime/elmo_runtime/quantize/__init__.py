"""int8 / fp16 / int4 variants of an exported elmo-edge model, with their error measured.

Modes (every one keeps the graph's float32 inputs and outputs):

* ``int8`` — onnxruntime dynamic quantization of every MatMul, **including
  those inside the LSTM ``Scan`` bodies** (``EnableSubgraph``): int8
  weights (QInt8, symmetric; per tensor, or per output channel with
  ``per_channel``), activations quantized to uint8 at run time. The char-CNN
  ``Conv``\\ s stay float32: ``ConvInteger`` measured slower than the float
  ``Conv`` (bench/RESULTS.md), and the graph runs them once per distinct token.
* ``fp16`` — weights and compute in float16, for GPU execution providers;
  ``Cast`` nodes at the graph boundary keep the caller's float32 interface.
  It loads and runs on the CPU provider too, where onnxruntime casts the
  nodes lacking a float16 kernel back to float32: correct, but about 2× slower
  than the float32 model, and the session must skip the optimizers in
  :data:`session.DISABLED_OPTIMIZERS` (onnxruntime crashes otherwise,
  microsoft/onnxruntime#28392).
* ``int4`` — weight-only, block-wise 4-bit ``MatMulNBits`` (asymmetric,
  ``block_size`` weights per scale), Scan bodies included; on the CPU the
  activations are quantized to int8 per block for the product
  (``accuracy_level`` 4), which measured faster at batch 1 for the same error.

The check (on by default) runs the float32 source and the quantized model on
the same sentences and measures the cosine similarity of every token's vector
(boundaries excluded), per layer. The result is written into the model's
metadata. Thresholds, on the **mean** cosine of every layer
(:data:`THRESHOLDS`): int8 ≥ 0.99, int4 ≥ 0.97, fp16 ≥ 0.999. Below them
nothing is written unless ``force`` is set.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import QUANTIZE_HINT, ElmoError, InputError, ModelError, first_line
from ..files import atomic_path, sha256_file
from ..spec import chars, contract
from ..spec.contract import ModelInfo

MODES = ("int8", "fp16", "int4")
DEFAULT_BLOCK_SIZE = 32
INT4_ACCURACY_LEVEL = 4  # MatMulNBits: int8 activations × int4 weights on the CPU
INT8_OP_TYPES = ("MatMul",)
# Least mean per-token cosine to the float32 source accepted on every layer.
THRESHOLDS = {"int8": 0.99, "fp16": 0.999, "int4": 0.97}
CHECK_BATCH = 8
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
FP16_MAX = float(np.finfo(np.float16).max)
# Nodes the quantizers put in place of a float MatMul / Conv.
QUANTIZED_OPS = ("MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul", "MatMulNBits")

# Built-in check sentences: varied length, register, punctuation, numbers,
# names, non-ASCII and one token longer than the 48 bytes a token keeps.
SAMPLE_SENTENCES: tuple[str, ...] = (
    "Hello .",
    "The cat sat on the mat .",
    "I can't believe it's already December !",
    "Stocks fell 3.2 % on Tuesday after the central bank raised interest rates again .",
    "She sells sea shells by the sea shore .",
    "Who wrote the letter , and why was it never sent ?",
    "The mitochondria is the powerhouse of the cell .",
    "In 1969 , Neil Armstrong became the first person to walk on the Moon .",
    "Please send the report to j.smith@example.com by 5 p.m. tomorrow .",
    "The quick brown fox jumps over the lazy dog .",
    "Despite the heavy rain , thousands of fans waited outside the stadium for hours , "
    "singing and waving flags until the gates finally opened .",
    "Paris is the capital of France .",
    "He ordered a café au lait and a croissant at the naïve little bistro in Zürich .",
    "Run !",
    "The defendant , who had pleaded not guilty , was acquitted of all charges .",
    "Photosynthesis converts light energy into chemical energy stored in glucose .",
    "Can you recommend a good book about the history of mathematics ?",
    "THE MEETING HAS BEEN POSTPONED UNTIL FURTHER NOTICE .",
    "Antidisestablishmentarianism is often cited as one of the longest English words .",
    "pneumonoultramicroscopicsilicovolcanoconiosis-and-supercalifragilisticexpialidocious "
    "is not a real compound .",
    "The committee will review the proposal , consult the stakeholders , estimate the costs , "
    "and publish its recommendations before the end of the fiscal year , which ends on "
    "30 June .",
    "I saw her duck .",
    "Time flies like an arrow ; fruit flies like a banana .",
    "Visit https://www.example.org/docs/index.html for more information .",
    "The new iPhone 15 Pro costs $ 999 in the U.S. and € 1,199 in Germany .",
    "Water boils at 100 degrees Celsius at sea level .",
    "They played chess in the park every Sunday afternoon for twenty years .",
    "Why ?",
    "The bank of the river was steep , so we walked to the bank in town instead .",
    "Machine translation systems still struggle with idioms , sarcasm and rare words "
    "like \" sesquipedalian \" .",
)


class QuantizeError(ElmoError):
    """A model that cannot be quantized, or whose quantized outputs drift too far."""


class QuantizeWarning(UserWarning):
    """A quantized model written although it failed the check (``force``)."""


@dataclass(frozen=True)
class LayerCosine:
    """Per-token cosine similarity of one output layer, quantized vs float32."""

    layer: int
    mean: float
    min: float


@dataclass(frozen=True)
class CheckReport:
    """The comparison of a quantized model with its float32 source."""

    layers: list[LayerCosine]
    threshold: float
    sentences: int
    tokens: int
    provider: str

    @property
    def passed(self) -> bool:
        # `not <` would let NaN through: a NaN mean fails.
        return all(c.mean >= self.threshold for c in self.layers)

    def failures(self) -> list[str]:
        return [
            f"layer {c.layer} mean cosine {c.mean:.4f} < {self.threshold}"
            for c in self.layers
            if not c.mean >= self.threshold
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "sentences": self.sentences,
            "tokens": self.tokens,
            "provider": self.provider,
            "threshold_mean_cosine": self.threshold,
            "cosine": [{"layer": c.layer, "mean": c.mean, "min": c.min} for c in self.layers],
            "passed": self.passed,
        }


@dataclass(frozen=True)
class QuantizeReport:
    """What :func:`quantize_model` wrote."""

    source: Path
    output: Path
    mode: str
    size_before: int
    size_after: int
    settings: dict[str, Any]
    check: CheckReport | None
    forced: bool

    @property
    def ratio(self) -> float:
        return self.size_after / self.size_before


def quantize_model(
    src_path: str | Path,
    dst_path: str | Path,
    mode: str = "int8",
    per_channel: bool = False,
    block_size: int | None = None,
    check: bool = True,
    sentences: Sequence[Sequence[str]] | None = None,
    threshold: float | None = None,
    force: bool = False,
) -> QuantizeReport:
    """Write an ``int8``, ``fp16`` or ``int4`` variant of the float32 model at ``src_path``.

    ``per_channel`` applies to int8, ``block_size`` (a power of two ≥ 16,
    default 32) to int4. With ``check``, the new model is compared with the
    source on ``sentences`` (default :data:`SAMPLE_SENTENCES`) and refused
    below ``threshold`` (default :data:`THRESHOLDS` of the mode) unless
    ``force``. The output appears atomically or not at all.
    """
    src, dst = Path(src_path), Path(dst_path)
    settings = _settings(mode, per_channel, block_size)
    model, info = load_float_model(src)
    _check_destination(src, dst)
    size_before = src.stat().st_size
    source_meta = {p.key: p.value for p in model.metadata_props}

    if mode == "int8":
        quantized = _int8(model, per_channel)
    elif mode == "int4":
        quantized = _int4(model, settings["block_size"])
    else:
        quantized = to_fp16(model)
    del model
    settings.update(_census(quantized.graph))
    settings["source"] = {"file": src.name, "size": size_before, "sha256": sha256_file(src)}
    settings["tool"] = _tool_versions()

    report = None
    if check:
        report = compare_models(
            src,
            quantized.SerializeToString(),
            [s.split() for s in SAMPLE_SENTENCES] if sentences is None else sentences,
            info,
            THRESHOLDS[mode] if threshold is None else threshold,
            _check_provider(mode),
        )
        settings["check"] = report.to_dict()
        if not report.passed and not force:
            raise QuantizeError(
                f"{src}: the {mode} model drifts too far from its float32 source "
                f"({'; '.join(report.failures())}); nothing written to {dst} "
                "(use --force to write it anyway)"
            )
    else:
        settings["check"] = {"skipped": True}
    forced = report is not None and not report.passed
    if forced:
        settings["check"]["forced"] = True
    _set_metadata(quantized, source_meta, settings)
    data = quantized.SerializeToString()
    del quantized
    _write_atomically(dst, data)
    if forced:
        warnings.warn(
            f"WRITTEN ANYWAY (--force): {dst} fails the {mode} check "
            f"({'; '.join(report.failures())}); its vectors differ from the float32 model's",
            QuantizeWarning,
            stacklevel=2,
        )
    return QuantizeReport(src, dst, mode, size_before, len(data), settings, report, forced)


# ---------------------------------------------------------------------------- inputs


def _settings(mode: str, per_channel: bool, block_size: int | None) -> dict[str, Any]:
    """The mode's settings as recorded in the metadata; raise on ones that do not apply."""
    if mode not in MODES:
        raise QuantizeError(f"unknown quantization mode {mode!r}; choose one of {', '.join(MODES)}")
    if per_channel and mode != "int8":
        raise QuantizeError(f"per-channel scales apply to int8 only, not {mode}")
    if block_size is not None and mode != "int4":
        raise QuantizeError(f"a block size applies to int4 only, not {mode}")
    if mode == "int8":
        return {
            "mode": mode,
            "weights": "int8 symmetric (QInt8)",
            "activations": "uint8, dynamic per tensor",
            "per_channel": per_channel,
            "op_types": list(INT8_OP_TYPES),
            "subgraphs": True,
        }
    if mode == "int4":
        block_size = DEFAULT_BLOCK_SIZE if block_size is None else block_size
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 16 or (
            block_size & (block_size - 1)
        ):
            raise QuantizeError(f"block size must be a power of two ≥ 16, found {block_size!r}")
        return {
            "mode": mode,
            "weights": "int4 asymmetric, block-wise (MatMulNBits)",
            "block_size": block_size,
            "accuracy_level": INT4_ACCURACY_LEVEL,
            "op_types": ["MatMul"],
            "subgraphs": True,
        }
    return {
        "mode": mode,
        "weights": "float16",
        "compute": "float16; inputs and outputs float32",
        "op_types": ["all"],
        "subgraphs": True,
    }


def load_float_model(path: Path) -> tuple[onnx.ModelProto, ModelInfo]:
    """Load an unquantized elmo-edge model; ModelError/QuantizeError naming the file if not."""
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    try:
        model = onnx.load(str(path))
    except OSError as e:
        raise ModelError(f"{path}: cannot read the model file ({e.strerror})") from None
    except Exception as e:  # protobuf's DecodeError and friends
        raise ModelError(f"{path}: not an ONNX model ({first_line(e)})") from None
    if not model.graph.node:
        raise ModelError(f"{path}: not an ONNX model (no graph found in the file)")
    info = contract.parse_metadata({p.key: p.value for p in model.metadata_props}, str(path))
    mode = info.quantization.get("mode", "none")
    if mode != "none":
        raise QuantizeError(
            f"{path}: already quantized (mode {mode}); quantize its float32 source instead"
        )
    return model, info


def _check_destination(src: Path, dst: Path) -> None:
    parent = dst.parent
    if not parent.exists():
        raise ElmoError(f"{dst}: directory {parent} does not exist")
    if not parent.is_dir():
        raise ElmoError(f"{dst}: {parent} is not a directory")
    if dst.is_dir():
        raise ElmoError(f"{dst}: is a directory; give the output file's name")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ElmoError(f"{dst}: cannot write to directory {parent} (permission denied)")
    if dst.exists() and dst.resolve() == src.resolve():
        raise ElmoError(f"{dst}: is the source model; choose another output name")


def load_sentences(path: str | Path) -> list[list[str]]:
    """Check sentences from a UTF-8 file: one sentence a line, tokens split on whitespace."""
    path = Path(path)
    sentences = []
    try:
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise InputError(
                        f"{path}:{lineno}: invalid UTF-8 at column {e.start + 1}"
                    ) from None
                tokens = text.removeprefix("\ufeff").split()
                if tokens:
                    sentences.append(tokens)
    except FileNotFoundError:
        raise InputError(f"{path}: no such sentences file") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read the sentences file ({e.strerror})") from None
    if not sentences:
        raise InputError(f"{path}: no sentences (every line is blank)")
    return sentences


# ---------------------------------------------------------------------------- the modes


@contextmanager
def _quiet_quantizers() -> Iterator[None]:
    """Silence the quantizers' logging (they warn about shape inference on bool tensors)."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def _int8(model: onnx.ModelProto, per_channel: bool) -> onnx.ModelProto:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="elmo-quantize-") as tmp, _quiet_quantizers():
        out = Path(tmp) / "int8.onnx"
        quantize_dynamic(
            model,
            out,
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            op_types_to_quantize=list(INT8_OP_TYPES),
            extra_options={"EnableSubgraph": True, "MatMulConstBOnly": True},
        )
        return onnx.load(str(out))


def _int4(model: onnx.ModelProto, block_size: int) -> onnx.ModelProto:
    root = logging.getLogger()
    guard = None
    if not root.handlers:
        # matmul_nbits_quantizer calls logging.basicConfig(level=INFO) on import;
        # with a handler in place that call does nothing to the caller's logging.
        guard = logging.NullHandler()
        root.addHandler(guard)
    try:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    except ImportError as e:  # recent onnxruntime needs onnx-ir for it
        raise QuantizeError(
            f"int4 quantization needs {e.name or 'a missing module'}: {QUANTIZE_HINT}"
        ) from None
    finally:
        if guard is not None:
            root.removeHandler(guard)
    with _quiet_quantizers():
        quantizer = MatMulNBitsQuantizer(
            model,
            bits=4,
            block_size=block_size,
            is_symmetric=False,
            accuracy_level=INT4_ACCURACY_LEVEL,
        )
        quantizer.process()
    return quantizer.model.model


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with float16 weights and compute, float32 inputs and outputs (in place)."""
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


def _census(graph: onnx.GraphProto) -> dict[str, Any]:
    """What the conversion produced: quantized nodes by type, float16 weight tensors."""
    ops: Counter[str] = Counter()
    halves = 0
    graphs = [graph]
    while graphs:
        g = graphs.pop()
        ops.update(n.op_type for n in g.node if n.op_type in QUANTIZED_OPS)
        halves += sum(t.data_type == TensorProto.FLOAT16 for t in g.initializer)
        for node in g.node:
            for attr in node.attribute:
                graphs.extend([attr.g] if attr.type == onnx.AttributeProto.GRAPH else attr.graphs)
    if halves:
        return {"float16_tensors": halves}
    return {"quantized_nodes": dict(sorted(ops.items()))}


# ---------------------------------------------------------------------------- the check


def _check_provider(mode: str) -> str:
    import onnxruntime as ort

    return CUDA if mode == "fp16" and CUDA in ort.get_available_providers() else CPU


def _session(model: str | Path | bytes, provider: str) -> Any:
    import onnxruntime as ort

    from ..session import DISABLED_OPTIMIZERS

    options = ort.SessionOptions()
    options.log_severity_level = 3
    providers = [provider] if provider == CPU else [provider, CPU]
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(
            source, options, providers=providers,
            disabled_optimizers=DISABLED_OPTIMIZERS,
        )
    except Exception as e:  # onnxruntime's own exception types
        where = "the quantized model" if isinstance(model, bytes) else str(model)
        raise QuantizeError(f"{where}: onnxruntime cannot load it ({first_line(e)})") from None


def compare_models(
    reference: str | Path | bytes,
    candidate: str | Path | bytes,
    sentences: Sequence[Sequence[str]],
    info: ModelInfo,
    threshold: float,
    provider: str = CPU,
) -> CheckReport:
    """Per-layer mean and minimum per-token cosine of ``candidate`` vs ``reference``.

    The reference runs on the CPU; the candidate on ``provider``. ``<S>``/``</S>``
    are left out, so are empty sentences.
    """
    sentences = [list(s) for s in sentences if len(s)]
    if not sentences:
        raise InputError("no tokens to check the quantized model on")
    ref, cand = _session(reference, CPU), _session(candidate, provider)
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    cosines: list[np.ndarray] = []
    for start in range(0, len(order), CHECK_BATCH):
        batch = [sentences[i] for i in order[start : start + CHECK_BATCH]]
        ids, _ = chars.batch_to_ids(batch, info.max_chars)
        feed = contract.char_ids_feed(ids)
        a = ref.run([contract.OUTPUT_LAYERS], feed)[0].astype(np.float64)
        b = cand.run([contract.OUTPUT_LAYERS], feed)[0].astype(np.float64)
        for row, sentence in enumerate(batch):
            span = slice(1, 1 + len(sentence))
            cosines.append(_cosine(a[row, :, span], b[row, :, span]))
    per_layer = np.concatenate(cosines, axis=1)  # (L+1, tokens)
    layers = [
        LayerCosine(layer, float(c.mean()), float(c.min())) for layer, c in enumerate(per_layer)
    ]
    return CheckReport(layers, threshold, len(sentences), per_layer.shape[1], provider)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine along the last axis; two zero vectors agree (1), one zero vector does not (0)."""
    na, nb = np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1)
    dot = (a * b).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = dot / (na * nb)
    both_zero = (na == 0) & (nb == 0)
    one_zero = (na == 0) ^ (nb == 0)
    return np.where(both_zero, 1.0, np.where(one_zero, 0.0, cos))


# ---------------------------------------------------------------------------- output


def _set_metadata(
    model: onnx.ModelProto, source_meta: dict[str, str], settings: dict[str, Any]
) -> None:
    """The source's metadata, with the quantization entry replaced by ``settings``."""
    meta = {**source_meta, contract.KEY_QUANT: json.dumps(settings, sort_keys=True)}
    model.ClearField("metadata_props")
    helper.set_model_props(model, meta)


def _write_atomically(dst: Path, data: bytes) -> None:
    try:
        with atomic_path(dst) as tmp:
            tmp.write_bytes(data)
    except OSError as e:
        raise ElmoError(f"{dst}: cannot write ({e.strerror})") from None


def _tool_versions() -> str:
    import onnxruntime as ort

    from .. import __version__

    return f"elmo-edge {__version__}, onnxruntime {ort.__version__}"


__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "MODES",
    "SAMPLE_SENTENCES",
    "THRESHOLDS",
    "CheckReport",
    "LayerCosine",
    "QuantizeError",
    "QuantizeReport",
    "QuantizeWarning",
    "compare_models",
    "load_float_model",
    "load_sentences",
    "quantize_model",
    "to_fp16",
]
