"""The three modes: their settings as recorded in the metadata, and the conversion itself.

* ``int8`` — :mod:`.int8`: exact integer products (7-bit weights × 8-bit
  activations), activation scales per token, standard ONNX ops, Scan bodies
  included. The char-CNN ``Conv``\\ s stay float32: ``ConvInteger`` measured
  slower than the float ``Conv`` (bench/RESULTS.md), and the graph runs them
  once per distinct token.
* ``fp16`` — :mod:`.fp16`: float16 weights and compute (for GPU providers).
* ``int4`` — onnxruntime's ``MatMulNBitsQuantizer``: weight-only, block-wise
  4-bit ``MatMulNBits`` (asymmetric, ``block_size`` weights per scale), Scan
  bodies included, float32 compute (``accuracy_level`` 1). Level 4 (int8
  activations per block of each row) made a sentence's vectors depend on its
  batch-mates on an AVX2-only CPU: MLAS runs one row and several rows through
  different int8 kernels whose float sums round apart, and the recurrence
  amplifies one flipped activation quantum (measured 5.6e-3 alone vs batched
  on bilm-tf's test model, AMD EPYC Zen 3, onnxruntime 1.32; level 1: 7e-7).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import onnx
from onnx import TensorProto

from ..errors import QUANTIZE_HINT, QuantizeError
from .fp16 import to_fp16
from .int8 import WEIGHT_MAX, all_graphs, quantize_int8

MODES = ("int8", "fp16", "int4")
DEFAULT_BLOCK_SIZE = 32
# MatMulNBits: float32 activations × int4 weights (4, int8 activations, is batch-dependent)
INT4_ACCURACY_LEVEL = 1
# Least mean per-token cosine to the float32 source accepted on every layer.
THRESHOLDS = {"int8": 0.99, "fp16": 0.999, "int4": 0.97}
# Nodes the modes put in place of a float MatMul.
QUANTIZED_OPS = ("MatMulInteger", "MatMulNBits")


def settings(mode: str, per_channel: bool | None, block_size: int | None) -> dict[str, Any]:
    """The mode's settings as recorded in the metadata; QuantizeError on ones that do not apply.

    ``per_channel`` (int8; None = True): one weight scale per output column.
    ``block_size`` (int4; None = :data:`DEFAULT_BLOCK_SIZE`): a power of two ≥ 16.
    """
    if mode not in MODES:
        raise QuantizeError(f"unknown quantization mode {mode!r}; choose one of {', '.join(MODES)}")
    if per_channel is not None and mode != "int8":
        raise QuantizeError(f"per-channel scales apply to int8 only, not {mode}")
    if block_size is not None and mode != "int4":
        raise QuantizeError(f"a block size applies to int4 only, not {mode}")
    if mode == "int8":
        return {
            "mode": mode,
            "scheme": "elmo-edge exact int8 v1",
            "weights": f"symmetric 7-bit in [-{WEIGHT_MAX}, {WEIGHT_MAX}] (int8), "
            + ("one scale per output column" if per_channel is not False else "one scale"),
            "activations": "uint8, one scale per token (row): fixed where the graph bounds "
            "the values, else the row's maximum",
            "exact": "u8 x s7 products: a pair sums to at most 2*255*63 = 32130 < 2**15, so "
            "no int8 kernel saturates (AVX2 vpmaddubsw included)",
            "per_channel": per_channel is not False,
            "op_types": ["MatMul"],
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


def convert(model: onnx.ModelProto, settings: dict[str, Any]) -> onnx.ModelProto:
    """``model`` converted as ``settings`` (from :func:`settings`) say; adds what was made."""
    mode = settings["mode"]
    if mode == "int8":
        settings["activation_schemes"] = quantize_int8(model, settings["per_channel"])
        quantized = model
    elif mode == "int4":
        quantized = _int4(model, settings["block_size"])
    else:
        quantized = to_fp16(model)
    settings.update(census(quantized.graph))
    return quantized


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
    with quiet_quantizers():
        quantizer = MatMulNBitsQuantizer(
            model,
            bits=4,
            block_size=block_size,
            is_symmetric=False,
            accuracy_level=INT4_ACCURACY_LEVEL,
        )
        quantizer.process()
    return quantizer.model.model


def census(graph: onnx.GraphProto) -> dict[str, Any]:
    """What the conversion produced: quantized nodes by type, or float16 weight tensors."""
    ops: Counter[str] = Counter()
    halves = 0
    for g in all_graphs(graph):
        ops.update(n.op_type for n in g.node if n.op_type in QUANTIZED_OPS)
        halves += sum(t.data_type == TensorProto.FLOAT16 for t in g.initializer)
    if halves:
        return {"float16_tensors": halves}
    return {"quantized_nodes": dict(sorted(ops.items()))}


@contextmanager
def quiet_quantizers() -> Iterator[None]:
    """Silence onnxruntime's quantizers' logging (they warn about shape inference on bools)."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)
