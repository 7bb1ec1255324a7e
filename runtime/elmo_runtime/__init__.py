"""elmo-edge runtime: ELMo embeddings with NumPy and onnxruntime only (never torch)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .version import __version__

__all__ = ["Embedder", "__version__"]

if TYPE_CHECKING:
    from .embedder import Embedder


def __getattr__(name: str) -> Any:
    # Import lazily so `elmo --help` and metadata readers start fast.
    if name == "Embedder":
        from .embedder import Embedder

        return Embedder
    raise AttributeError(name)
