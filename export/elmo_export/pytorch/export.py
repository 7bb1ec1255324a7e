"""Export a trained PyTorch biLM to a self-describing ONNX file, refusing any that disagrees.

The graph is built from the model's weights (:mod:`elmo_export.graph.builder`) and checked
against the PyTorch model itself (:mod:`elmo_export.graph.parity`: several batch sizes and
lengths, mixed lengths in one batch, non-zero initial states, every mismatch
collected into one error). Only a model that passes is moved under the final
name; the measured difference goes into its metadata. Published ELMo weights
are converted without PyTorch by :mod:`elmo_export.graph.convert`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..graph.builder import build_model
from ..graph.convert import check_directory, write_model
from ..graph.parity import DEFAULT_ATOL, ExportError, ParityReport, random_sentences
from ..graph.parity import check_parity as _check_parity
from .modules import BiLM

__all__ = ["DEFAULT_ATOL", "ExportError", "ParityReport", "check_parity", "export_onnx",
           "random_sentences", "torch_reference"]


def torch_reference(model: BiLM) -> Any:
    """``model`` as a parity reference: a contract feed → its outputs (NumPy)."""
    model.eval()

    def run(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.no_grad():
            out = model.run_feed(feed)
        return {name: value.numpy() for name, value in out.items()}

    return run


def check_parity(model: BiLM, onnx_bytes: bytes, atol: float = DEFAULT_ATOL,
                 shapes: tuple[tuple[int, int], ...] | None = None,
                 seed: int = 0) -> ParityReport:
    """Run ONNX and PyTorch on the same inputs; raise ExportError listing every mismatch."""
    kwargs = {} if shapes is None else {"shapes": shapes}
    return _check_parity(torch_reference(model), f"PyTorch (torch {torch.__version__})",
                         model.options, onnx_bytes, atol=atol, seed=seed, **kwargs)


def export_onnx(
    model: BiLM,
    path: str | Path,
    source: dict[str, Any],
    atol: float = DEFAULT_ATOL,
    check: bool = True,
) -> ParityReport | None:
    """Write ``model`` as an elmo-edge ONNX file at ``path`` (atomically).

    With ``check`` (the default) the graph must match PyTorch within ``atol``
    times the largest absolute output value (at least 1) or nothing is
    written (ExportError).
    """
    path = Path(path)
    check_directory(path)
    proto = build_model(model.options, model.elmo_weights())
    report = None
    parity: dict[str, Any] = {"checked": False}
    if check:
        report = check_parity(model, proto.SerializeToString(), atol=atol)
        parity = report.metadata(atol)
    write_model(proto, model.options, path, source, parity)
    return report
