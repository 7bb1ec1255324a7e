"""Reading the float32 source, checking the destination, writing the result with its record."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import onnx
from onnx import helper

from ..errors import ElmoError, QuantizeError
from ..files import atomic_path
from ..format import contract
from ..format.contract import ModelInfo
from ..loading.model_file import load_proto


def load_float_model(path: Path) -> tuple[onnx.ModelProto, ModelInfo]:
    """Load an unquantized elmo-edge model.

    Raises ModelError (unreadable, not ONNX, not elmo-edge) or QuantizeError
    (already quantized), each naming the file. ``path`` is a checked model
    file (:func:`elmo_runtime.loading.model_file.locate`).
    """
    model = load_proto(path)
    info = contract.parse_metadata({p.key: p.value for p in model.metadata_props}, str(path))
    mode = info.quantization.get("mode", "none")
    if mode != "none":
        raise QuantizeError(
            f"{path}: already quantized (mode {mode}); quantize its float32 source instead"
        )
    return model, info


def check_destination(src: Path, dst: Path) -> None:
    """ElmoError unless ``dst`` can be written and is not ``src``."""
    parent = dst.parent
    if not parent.exists():
        raise ElmoError(f"{dst}: directory {parent} does not exist")
    if not parent.is_dir():
        raise ElmoError(f"{dst}: {parent} is not a directory")
    if dst.is_dir():
        raise ElmoError(f"{dst}: is a directory; give the output file's name")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ElmoError(f"{dst}: cannot write to directory {parent} (permission denied)")
    if dst.exists() and (dst.resolve() == src.resolve() or os.path.samefile(dst, src)):
        raise ElmoError(f"{dst}: is the source model; choose another output name")


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
