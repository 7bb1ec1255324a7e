"""The models that ship inside the package, by name (``--model default``).

``registry.json`` beside this file describes each bundled model: its name,
file, layers and vector size, parameter count, quantization, license and the
size and sha256 of the file (fastembed's model descriptions are the model
for this). :func:`resolve_model` turns what a user passes (None, a bundled
name or a path) into the path of an .onnx file. A ``str`` that is a bundled
name means that model; a :class:`~pathlib.Path`, or any string that is not
a name, is a path (``./default`` for a file named "default").
:func:`check_model_file` is what every command says about a path that is not
a model (a directory, a missing file, bilm-tf/AllenNLP weights or options):
the session factory calls it before onnxruntime sees the file.

``python -m elmo_runtime.models`` checks the registry against the files (exit
1 on a mismatch); ``--update`` rewrites the measured fields (size, sha256,
layers, dim, parameters, quantization) from the files themselves.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import ModelError

REGISTRY = "registry.json"
DEFAULT = "default"
MEASURED = ("size_bytes", "sha256", "layers", "dim", "parameters", "quantization")
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
CONVERT_IT = "convert them first: elmo convert OPTIONS_JSON WEIGHTS_HDF5 -o M.onnx"


@dataclass(frozen=True)
class BundledModel:
    """One bundled model, as described in ``registry.json``."""

    name: str
    file: str
    description: str
    layers: int  # L+1 output layers
    dim: int  # 2P, the size of one vector
    parameters: int
    quantization: str  # "none", "int8", "int4", "fp16"
    license: str
    license_file: str
    size_bytes: int
    sha256: str

    @property
    def path(self) -> Path:
        """Where the file is in this installation (it may be absent from a trimmed one)."""
        return models_dir() / self.file


def models_dir() -> Path:
    """The directory of the bundled models inside the installed package."""
    return Path(str(resources.files(__name__)))


def _read_registry() -> list[dict[str, Any]]:
    return json.loads((models_dir() / REGISTRY).read_text(encoding="utf-8"))["models"]


def bundled_models() -> list[BundledModel]:
    """Every model of the registry, the default first."""
    return [BundledModel(**entry) for entry in _read_registry()]


def names() -> list[str]:
    return [m.name for m in bundled_models()]


def get(name: str) -> BundledModel:
    """The bundled model called ``name``; ModelError listing the names if there is none."""
    for model in bundled_models():
        if model.name == name:
            return model
    raise ModelError(f"no bundled model named {name!r}; bundled: {', '.join(names())}")


def resolve_model(model: str | os.PathLike | None) -> Path:
    """The .onnx path for ``model``: None = the default, a bundled name, or a path.

    A path is not checked here (:func:`check_model_file` does that where it is opened).
    """
    if model is None or (isinstance(model, str) and model in names()):
        entry = get(DEFAULT if model is None else model)
        if not entry.path.is_file():
            which = "default model" if model is None else f"model {entry.name!r}"
            raise ModelError(f"no bundled {which} in this installation; pass --model PATH")
        return entry.path
    return Path(model)


def sniff(path: str | os.PathLike) -> bytes:
    """The first 8 bytes of a file (b"" when it cannot be read)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(HDF5_MAGIC))
    except OSError:
        return b""


def check_model_file(path: str | os.PathLike) -> None:
    """ModelError, in one line, when ``path`` cannot be an ONNX model file.

    A directory, a missing file (a name without a folder or .onnx also lists the bundled
    models),
    an HDF5 file or a JSON file (bilm-tf/AllenNLP weights or options: the
    message says to run `elmo convert`). Reads at most 8 bytes.
    """
    p = Path(path)
    if p.is_dir():
        raise ModelError(f"{p}: no such model file: it is a directory (give the .onnx file)")
    if not p.is_file():
        bare = os.sep not in str(path) and "/" not in str(path) and p.suffix.lower() != ".onnx"
        also = f" and not a bundled model ({', '.join(names())})" if bare else ""
        raise ModelError(f"{p}: no such model file{also}")
    head = sniff(p)
    if head == HDF5_MAGIC:
        raise ModelError(f"{p}: is an HDF5 file (bilm-tf/AllenNLP weights?), not an ONNX "
                         f"model; {CONVERT_IT}")
    if head.lstrip()[:1] == b"{" or p.suffix.lower() == ".json":
        raise ModelError(f"{p}: is a JSON file (a bilm-tf/AllenNLP options.json?), not an "
                         f"ONNX model; {CONVERT_IT}")


def bundled_name(path: str | os.PathLike) -> str | None:
    """The registry name of ``path`` if it is a bundled model's file, else None."""
    try:
        resolved = Path(path).resolve()
    except OSError:
        return None
    for model in bundled_models():
        if model.path.resolve() == resolved:
            return model.name
    return None


def measure(model: BundledModel) -> dict[str, Any]:
    """The measured fields of ``model`` (:data:`MEASURED`), read from its file."""
    from ..files import sha256_file
    from ..session import open_session

    _, info = open_session(model.path, "cpu", threads=1)
    return {
        "size_bytes": model.path.stat().st_size,
        "sha256": sha256_file(model.path),
        "layers": info.options.n_output_layers,
        "dim": info.options.output_dim,
        "parameters": info.options.n_parameters(),
        "quantization": info.quantization.get("mode", "none"),
    }


def check_registry() -> list[str]:
    """Every way the registry differs from the files (empty when it matches)."""
    problems = []
    for model in bundled_models():
        if not model.path.is_file():
            problems.append(f"{model.name}: {model.file} is missing")
            continue
        if not (models_dir() / model.license_file).is_file():
            problems.append(f"{model.name}: license file {model.license_file} is missing")
        recorded = asdict(model)
        for key, value in measure(model).items():
            if recorded[key] != value:
                problems.append(f"{model.name}: {key} is {value!r}, the registry says "
                                f"{recorded[key]!r}")
    return problems


def update_registry() -> None:
    """Rewrite the measured fields of ``registry.json`` from the files."""
    from ..files import write_text_atomic

    entries = _read_registry()
    for entry in entries:
        entry.update(measure(BundledModel(**entry)))
    text = json.dumps({"models": entries}, indent=2, ensure_ascii=False) + "\n"
    write_text_atomic(models_dir() / REGISTRY, text)
