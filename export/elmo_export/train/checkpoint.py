"""Training checkpoints: plain dicts of tensors and JSON-like values, never pickled objects.

A checkpoint holds everything needed to resume exactly and to export:

- ``format``, ``version``; ``options`` (the options.json structure); ``vocab``
  (list of tokens); ``config`` (the training settings); ``corpus`` (its
  fingerprint); ``step``, ``tokens`` (stream positions trained on);
- ``model`` and ``optimizer`` state dicts;
- ``ranks``: per training process, stacked on a leading axis: the RNG states
  of Python, NumPy and torch, the data position and the carried LSTM states.

Writes are atomic (temporary file, then rename), so an interrupted save
leaves the previous checkpoint intact. Reads take the file's bytes once,
hash them (``sha256``: what an export records, even if training replaces
the file meanwhile) and decode them with ``torch.load(weights_only=True)``,
which refuses anything but tensors and plain containers
(:mod:`elmo_export.pytorch.safe_load`).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from elmo_runtime.errors import ElmoError, first_line
from elmo_runtime.files import atomic_path, check_output
from elmo_runtime.format.chars import EMBED_ROWS
from elmo_runtime.format.options import ElmoOptions, parse_options

from ..bilm_tf.weights import write_weights
from ..pytorch.modules import BiLM
from ..pytorch.safe_load import TorchFileError, load_tensors
from .data import Vocab

FORMAT = "elmo-edge-checkpoint"
VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"
BILM_PREFIX = "bilm."


class CheckpointError(ElmoError):
    """A checkpoint that cannot be read or does not fit the run."""


def checkpoint_path(path: str | Path) -> Path:
    """A checkpoint file, or the training output directory holding one."""
    path = Path(path)
    return path / CHECKPOINT_NAME if path.is_dir() else path


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (plus format and version) atomically."""
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            torch.save({"format": FORMAT, "version": VERSION, **payload}, tmp)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot write the checkpoint ({e.strerror})") from None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and check a checkpoint (file or output directory).

    Returns its dict with ``options`` parsed, ``vocab`` a :class:`Vocab`,
    ``path`` and ``sha256`` (hex digest of exactly the bytes decoded).
    Raises CheckpointError for a missing, unreadable or foreign file.
    """
    path = checkpoint_path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        data = path.read_bytes()  # one read: the hash and the weights come from the same bytes
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read the checkpoint ({e.strerror})") from None
    digest = hashlib.sha256(data).hexdigest()
    try:
        ckpt = load_tensors(data)
    except TorchFileError as e:
        what = f"{path}: not a readable elmo-edge checkpoint"
        raise CheckpointError(f"{what}: {e}" if e.refused else f"{what} ({e})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an elmo-edge training checkpoint")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {ckpt.get('version')!r} is not "
                              f"supported (this elmo-edge reads version {VERSION})")
    try:
        ckpt["options"] = parse_options(ckpt["options"])
        ckpt["vocab"] = Vocab(ckpt["vocab"], f"{path} (vocabulary)")
    except KeyError as e:
        raise CheckpointError(f"{path}: checkpoint lacks {e}") from None
    except ElmoError as e:
        raise CheckpointError(f"{path}: {e}") from None
    ckpt["path"] = str(path)
    ckpt["sha256"] = digest
    return ckpt


def options_diff(a: ElmoOptions, b: ElmoOptions) -> str:
    """The differing fields of two options, as 'field: a vs b, …' (n_characters ignored)."""
    fields = [f for f in a.__dataclass_fields__ if f != "n_characters"]
    return ", ".join(f"{f}: {getattr(a, f)} vs {getattr(b, f)}" for f in fields
                     if getattr(a, f) != getattr(b, f))


def bilm_state(model_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The BiLM's entries of a LanguageModel state dict."""
    n = len(BILM_PREFIX)
    return {k[n:]: v for k, v in model_state.items() if k.startswith(BILM_PREFIX)}


def load_bilm(path: str | Path) -> tuple[BiLM, dict[str, Any]]:
    """The trained BiLM of a checkpoint (eval mode) and the checkpoint itself."""
    ckpt = load_checkpoint(path)
    model = BiLM(ckpt["options"])
    try:
        model.load_state_dict(bilm_state(ckpt["model"]))
    except (RuntimeError, KeyError) as e:
        raise CheckpointError(
            f"{ckpt['path']}: weights do not match its options ({first_line(e)})"
        ) from None
    return model.eval(), ckpt


def export_checkpoint(path: str | Path, output: str | Path, fmt: str = "onnx",
                      atol: float | None = None, overwrite: bool = False) -> float | None:
    """Export a checkpoint's biLM; returns the ONNX parity difference (None for hdf5).

    ``onnx``: an elmo-edge ONNX file at ``output``, checked against PyTorch.
    ``hdf5``: the directory ``output`` gets options.json (n_characters 262,
    ``EMBED_ROWS``), weights.hdf5 in the ELMo layout, and the vocabulary as
    vocab.txt. The ONNX model records ``checkpoint_sha256``: the hash of the
    bytes its weights were read from. An existing output file (in ``output``
    for hdf5) is replaced only with ``overwrite`` (:func:`elmo_runtime.files.check_output`).
    """
    source = checkpoint_path(path)
    names = ("weights.hdf5", "options.json", "vocab.txt")
    for target in [Path(output)] if fmt == "onnx" else [Path(output) / n for n in names]:
        check_output(target, [source], overwrite)  # before anything is read or written
    model, ckpt = load_bilm(path)
    if fmt == "onnx":
        from ..pytorch.export import DEFAULT_ATOL, export_onnx

        source = {
            "kind": "elmo-edge-train",
            "checkpoint_sha256": ckpt["sha256"],
            "step": int(ckpt["step"]),
            "tokens": int(ckpt["tokens"]),
            "vocab_size": len(ckpt["vocab"]),
            "corpus": ckpt["corpus"],
        }
        report = export_onnx(model, output, source, atol=DEFAULT_ATOL if atol is None else atol)
        return None if report is None else report.max_abs_diff
    if fmt != "hdf5":
        raise ElmoError(f"unknown export format {fmt!r}; choose onnx or hdf5")
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise ElmoError(f"{out}: exists and is not a directory (hdf5 export writes a directory)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        options = replace(model.options, n_characters=EMBED_ROWS)
        write_weights(out / "weights.hdf5", model.elmo_weights(), options)
        _write_text(out / "options.json", json.dumps(options.to_dict(), indent=2) + "\n")
        _write_text(out / "vocab.txt", "".join(t + "\n" for t in ckpt["vocab"].tokens))
    except OSError as e:
        raise ElmoError(f"{out}: cannot write the export ({e.strerror})") from None
    return None


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


# ---------------------------------------------------------------------------- RNG states


def rng_state() -> dict[str, torch.Tensor]:
    """Python, NumPy and torch (CPU) RNG states as tensors."""
    version, py_state, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "rng_python": torch.tensor([version, *py_state], dtype=torch.int64),
        "rng_python_gauss": torch.tensor([gauss is not None, gauss or 0.0], dtype=torch.float64),
        "rng_numpy_keys": torch.from_numpy(keys.astype(np.int64)),
        "rng_numpy_misc": torch.tensor([pos, has_gauss, cached], dtype=torch.float64),
        "rng_torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    """Restore what :func:`rng_state` returned."""
    py = state["rng_python"].tolist()
    has_gauss_py, gauss = state["rng_python_gauss"].tolist()
    random.setstate((py[0], tuple(py[1:]), gauss if has_gauss_py else None))
    pos, has_gauss, cached = state["rng_numpy_misc"].tolist()
    keys = state["rng_numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, int(pos), int(has_gauss), cached))
    # a clone: set_rng_state reads a view's storage from its start (crashes on rank > 0)
    torch.set_rng_state(state["rng_torch"].clone())
