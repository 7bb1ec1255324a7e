"""elmo-edge runtime: ELMo embeddings with NumPy and onnxruntime only (never torch)."""

from __future__ import annotations

from importlib import metadata
from typing import TYPE_CHECKING, Any

DISTRIBUTION = "elmo-edge"

try:  # the one place the version is read: the installed package's metadata (pyproject.toml)
    __version__ = metadata.version(DISTRIBUTION)
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["Embedder", "__version__"]

if TYPE_CHECKING:
    from .embedder import Embedder


def __getattr__(name: str) -> Any:
    # Import lazily so `elmo --help` and metadata readers start fast.
    if name == "Embedder":
        from .embedder import Embedder

        return Embedder
    raise AttributeError(name)
