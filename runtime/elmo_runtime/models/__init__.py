"""The models that ship inside the package, by name (``--model default``).

``registry.json`` beside this file describes each bundled model: its name,
file, layers and vector size, parameter count, quantization, license and the
size and sha256 of the file (fastembed's model descriptions are the model
for this). Turning what a user passes (None, a bundled name or a path) into a
checked model file is :mod:`elmo_runtime.loading.model_file`'s job; this
package only knows the names. It imports nothing of elmo-edge but its errors.

``python -m elmo_runtime.models`` checks the registry against the files (exit
1 on a mismatch); ``--update`` rewrites the measured fields (size, sha256,
layers, dim, parameters, quantization) from the files themselves
(:mod:`.maintain`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import ModelError

REGISTRY = "registry.json"
DEFAULT = "default"
MEASURED = ("size_bytes", "sha256", "layers", "dim", "parameters", "quantization")


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
