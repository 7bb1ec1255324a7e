"""Reading the float32 source, checking the destination, writing the result with its record."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnx
from onnx import helper

from ..errors import ElmoError, ModelError, QuantizeError
from ..files import atomic_path, check_output
from ..format import contract
from ..format.contract import ModelInfo
from ..loading.model_file import load_proto


def load_float_model(path: Path) -> tuple[onnx.ModelProto, ModelInfo]:
    """Load an unquantized elmo-edge model.

    Raises ModelError (unreadable, not ONNX, not elmo-edge) or QuantizeError
    (already quantized), each naming the file. ``path`` is a checked model
    file (:func:`elmo_runtime.loading.model_file.locate`).
    """
    model = load_proto(path, load_external_data=False)  # external data: refused below
    check_initializers(model, path)
    info = contract.parse_metadata({p.key: p.value for p in model.metadata_props}, str(path))
    mode = info.quantization.get("mode", "none")
    if mode != "none":
        raise QuantizeError(
            f"{path}: already quantized (mode {mode}); quantize its float32 source instead"
        )
    return model, info


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """``graph`` and every subgraph (Scan bodies, If branches), depth first."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attr.g)
            for sub in attr.graphs:
                yield from _graphs(sub)


# The typed field that holds a tensor's values when raw_data is not used, by element type.
_TYPED_FIELDS = ("float_data", "int32_data", "int64_data", "double_data", "uint64_data",
                 "string_data")


def check_initializers(model: onnx.ModelProto, path: Path) -> None:
    """ModelError unless every initializer's declared shape matches the bytes it holds.

    A stranger's file may declare ``[2**40, 4096]`` over a few bytes: the shape
    would be used to reshape (or to allocate) before anything else complains.
    Here each declared element count is compared with the data actually stored
    (``raw_data`` bytes or the typed field's length) and with the file's size;
    external data (a second file) is refused. Nothing is converted or allocated.
    """
    size = path.stat().st_size
    for graph in _graphs(model.graph):
        for tensor in graph.initializer:
            where = f"{path}: initializer {tensor.name!r}"
            if tensor.data_location == onnx.TensorProto.EXTERNAL or tensor.external_data:
                raise ModelError(f"{where} keeps its data in another file (external data); "
                                 "elmo-edge models hold their weights inside the .onnx file")
            dims = list(tensor.dims)
            if any(d < 0 for d in dims):
                raise ModelError(f"{where}: negative dimension in its shape {dims}")
            count = math.prod(dims)
            try:
                itemsize = helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
            except (KeyError, ValueError, TypeError):
                raise ModelError(f"{where}: unknown element type {tensor.data_type}") from None
            if tensor.data_type != onnx.TensorProto.STRING and count * itemsize > size:
                raise ModelError(
                    f"{where} declares shape {dims} ({count * itemsize:,} bytes), more than "
                    f"the whole file ({size:,} bytes)")
            if tensor.HasField("raw_data"):
                stored, expected, unit = len(tensor.raw_data), count * itemsize, "bytes"
            else:
                stored = next((len(getattr(tensor, f)) for f in _TYPED_FIELDS
                               if len(getattr(tensor, f))), 0)
                expected, unit = count, "values"
                if tensor.data_type in (onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128):
                    expected *= 2
            if stored != expected:
                raise ModelError(f"{where} declares shape {dims} ({expected:,} {unit}) but "
                                 f"holds {stored:,} {unit}")


def check_destination(src: Path, dst: Path, overwrite: bool = False) -> None:
    """ElmoError unless ``dst`` can be written and is not ``src``; an existing ``dst`` is
    replaced only with ``overwrite`` (:func:`..files.check_output`)."""
    parent = dst.parent
    if not parent.exists():
        raise ElmoError(f"{dst}: directory {parent} does not exist")
    if not parent.is_dir():
        raise ElmoError(f"{dst}: {parent} is not a directory")
    if dst.is_dir():
        raise ElmoError(f"{dst}: is a directory; give the output file's name")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ElmoError(f"{dst}: cannot write to directory {parent} (permission denied)")
    if dst.exists() and src.exists() and (dst.resolve() == src.resolve()
                                          or os.path.samefile(dst, src)):
        raise ElmoError(f"{dst}: is the source model; choose another output name")
    check_output(dst, [src], overwrite)


def set_metadata(
    model: onnx.ModelProto, source_meta: dict[str, str], settings: dict[str, Any]
) -> None:
    """The source's metadata, with the quantization entry replaced by ``settings``."""
    meta = {**source_meta, contract.KEY_QUANT: json.dumps(settings, sort_keys=True)}
    model.ClearField("metadata_props")
    helper.set_model_props(model, meta)


def write_atomically(dst: Path, data: bytes) -> None:
    """``data`` at ``dst``, complete or not at all; ElmoError naming ``dst`` on an OS error."""
    try:
        with atomic_path(dst) as tmp:
            tmp.write_bytes(data)
    except OSError as e:
        raise ElmoError(f"{dst}: cannot write ({e.strerror})") from None


def tool_versions() -> str:
    """``"elmo-edge X, onnxruntime Y"``: what made the file."""
    import onnxruntime as ort

    from ..version import __version__

    return f"elmo-edge {__version__}, onnxruntime {ort.__version__}"
