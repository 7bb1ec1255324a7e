"""The model file: a name or path resolved once, its first bytes sniffed once, one proto loader.

What a user passes as a model (None, a bundled name or a path) becomes a
:class:`ModelFile` in :func:`locate`: :func:`resolve_model` (a ``str`` that is
a bundled name means that model; a :class:`~pathlib.Path`, or any string that
is not a name, is a path: ``./default`` for a file named "default"), then
:func:`check_model_file`, what every command says about a path that is not a
model (a directory, a missing file, bilm-tf/AllenNLP weights or options). A
ModelFile is that check done: the session factory and the prepared cache take
it as it is. :func:`load_proto` is the one way a model's ONNX proto is read
(`elmo info`, `elmo quantize`, the prepared copy's child).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelError, first_line
from ..models import DEFAULT, get, names
from ..models.published import published_names
from .pulled import pulled_model

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
CONVERT_IT = "convert them first: elmo convert OPTIONS_JSON WEIGHTS_HDF5 -o M.onnx"


@dataclass(frozen=True)
class ModelFile:
    """A model file that passed :func:`check_model_file`: ``path``, and ``name`` when it
    is a bundled model's (its registry name), else None."""

    path: Path
    name: str | None = None

    def __fspath__(self) -> str:
        return str(self.path)


def resolve_model(model: str | os.PathLike | None) -> Path:
    """The .onnx path for ``model``: None = the default, a bundled name, a published
    model's name (``elmo pull NAME`` first), or a path.

    A path is not checked here (:func:`check_model_file` does that). Raises
    ModelError when a bundled model is absent from this installation, or a published
    one has not been pulled.
    """
    if isinstance(model, ModelFile):
        return model.path
    if model is None or (isinstance(model, str) and model in names()):
        entry = get(DEFAULT if model is None else model)
        if not entry.path.is_file():
            which = "default model" if model is None else f"model {entry.name!r}"
            raise ModelError(f"no bundled {which} in this installation; pass --model PATH")
        return entry.path
    if isinstance(model, str) and model in published_names():
        return pulled_model(model)
    return Path(model)


def sniff(path: str | os.PathLike) -> bytes:
    """The first 8 bytes of a file (b"" when it cannot be read)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(HDF5_MAGIC))
    except OSError:
        return b""


def _holds(folder: Path, pattern: str) -> bool:
    """Whether ``folder`` itself (not below) holds a file matching ``pattern``."""
    return any(entry.is_file() for entry in folder.glob(pattern))


def check_model_file(path: str | os.PathLike) -> None:
    """ModelError, in one line, when ``path`` cannot be an ONNX model file.

    A directory (one holding ``*.json`` with ``*.hdf5`` or ``*.pkl``, a model folder as
    published, says to run `elmo convert` on it), a missing file (a name without a folder
    or .onnx also lists the bundled models), a ZIP, an HDF5 file or a JSON file (bilm-tf/AllenNLP
    weights or options: the message says to run `elmo convert`), a file that
    cannot be read. Reads at most 8 bytes.
    """
    p = Path(path)
    if p.is_dir():
        if _holds(p, "*.json") and (_holds(p, "*.hdf5") or _holds(p, "*.pkl")):
            raise ModelError(f"{p}: is a folder of published weights, not an ONNX model; "
                             f"convert it first: elmo convert {p} -o M.onnx")
        raise ModelError(f"{p}: no such model file: it is a directory (give the .onnx file)")
    if not p.is_file():
        bare = os.sep not in str(path) and "/" not in str(path) and p.suffix.lower() != ".onnx"
        also = (f" and not a bundled model ({', '.join(names())}) nor a published one "
                "(elmo pull --list)") if bare else ""
        raise ModelError(f"{p}: no such model file{also}")
    if not os.access(p, os.R_OK):
        raise ModelError(f"{p}: cannot read the model file (permission denied)")
    head = sniff(p)
    if head == HDF5_MAGIC:
        raise ModelError(f"{p}: is an HDF5 file (bilm-tf/AllenNLP weights?), not an ONNX "
                         f"model; {CONVERT_IT}")
    if head.startswith(b"PK\x03\x04"):  # a ZIP; an ONNX file starts with field 1's tag, 0x08
        raise ModelError(f"{p}: is a ZIP (an NLPL or SeqVec model as published?), not an ONNX "
                         f"model; convert it first: elmo convert {p} -o M.onnx")
    if head.lstrip()[:1] == b"{" or p.suffix.lower() == ".json":
        raise ModelError(f"{p}: is a JSON file (a bilm-tf/AllenNLP options.json?), not an "
                         f"ONNX model; {CONVERT_IT}")


def locate(model: str | os.PathLike | ModelFile | None) -> ModelFile:
    """``model`` resolved (:func:`resolve_model`) and checked (:func:`check_model_file`).

    A ModelFile is returned as it is: neither resolved nor sniffed again.
    """
    if isinstance(model, ModelFile):
        return model
    path = resolve_model(model)
    check_model_file(path)
    if model is None:
        return ModelFile(path, DEFAULT)
    named = isinstance(model, str) and path != Path(model)  # a bundled name, not a path
    return ModelFile(path, model if named else None)


def load_proto(path: str | os.PathLike, load_external_data: bool = True) -> Any:
    """The ``onnx.ModelProto`` of the file at ``path``.

    Raises ModelError naming the file when it cannot be read or is not ONNX
    (protobuf's DecodeError and friends, or a file without a graph).
    """
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=load_external_data)
    except OSError as e:
        raise ModelError(f"{path}: cannot read the model file ({e.strerror})") from None
    except Exception as e:  # protobuf's DecodeError and friends
        raise ModelError(f"{path}: not a readable ONNX model ({first_line(e)})") from None
    if not proto.graph.node:
        raise ModelError(f"{path}: not an ONNX model (no graph found in the file)")
    return proto
