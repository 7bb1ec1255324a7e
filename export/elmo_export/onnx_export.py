"""Export a biLM to a self-describing ONNX file, refusing any that disagrees with PyTorch.

The parity check runs the written graph in onnxruntime and the PyTorch model
on the same inputs, on shapes unlike one another (several batch sizes and
lengths, mixed lengths in one batch, non-zero initial states), collects every
mismatch, and raises one error naming them. Only a model that passes is
moved under the final name; the measured difference goes into its metadata.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from elmo_runtime.errors import ElmoError
from elmo_runtime.files import atomic_path, sha256_file
from elmo_runtime.spec import contract
from elmo_runtime.spec.chars import batch_to_ids

from .modules import BiLM
from .onnx_graph import build_model

DEFAULT_ATOL = contract.PARITY_ATOL
# (batch size, max tokens): shapes chosen unlike each other; rows get mixed lengths
PARITY_SHAPES = ((1, 1), (1, 17), (3, 8), (5, 33), (2, 60))
_ALPHABET = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,'-") + [
    "é", "ß", "ж", "中", "😀"
]


class ExportError(ElmoError):
    """The exported graph does not reproduce the PyTorch model."""


@dataclass
class ParityReport:
    max_abs_diff: float
    cases: list[dict[str, Any]]


def random_sentences(rng: np.random.Generator, batch: int, max_len: int) -> list[list[str]]:
    """Sentences of random lengths in [0, max_len] (one of exactly max_len) of random tokens."""
    lengths = rng.integers(0, max_len + 1, size=batch)
    lengths[0] = max_len
    sentences = []
    for n in lengths:
        sentence = []
        for _ in range(n):
            size = int(rng.choice([1, 2, 5, 9, 60])) if rng.random() < 0.1 else int(
                rng.integers(1, 12)
            )
            sentence.append("".join(rng.choice(_ALPHABET, size=size)))
        sentences.append(sentence)
    return sentences


def check_parity(
    model: BiLM,
    onnx_bytes: bytes,
    atol: float = DEFAULT_ATOL,
    shapes: tuple[tuple[int, int], ...] = PARITY_SHAPES,
    seed: int = 0,
) -> ParityReport:
    """Run ONNX and PyTorch on the same inputs; raise ExportError listing every mismatch."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    o = model.options
    model.eval()
    failures, cases, worst = [], [], 0.0
    for case, (batch, max_len) in enumerate(shapes):
        ids, _ = batch_to_ids(random_sentences(rng, batch, max_len), o.max_characters_per_token)
        feed = contract.char_ids_feed(ids)
        state = None
        if case % 2 == 1:  # every other case starts from a non-zero state
            c0 = rng.uniform(-1, 1, (2, o.n_layers, batch, o.lstm_dim)).astype(np.float32)
            h0 = rng.uniform(-1, 1, (2, o.n_layers, batch, o.projection_dim)).astype(np.float32)
            feed[contract.INPUT_STATE_C], feed[contract.INPUT_STATE_H] = c0, h0
            state = (torch.from_numpy(c0), torch.from_numpy(h0))
        got = dict(zip(contract.OUTPUTS, session.run(list(contract.OUTPUTS), feed), strict=True))
        with torch.no_grad():
            ref = model(torch.from_numpy(ids).long(), state)
        expected = {
            contract.OUTPUT_LAYERS: ref.layers.numpy(),
            contract.OUTPUT_MASK: ref.mask.numpy().astype(np.int32),
            contract.OUTPUT_STATE_C: ref.state_c.numpy(),
            contract.OUTPUT_STATE_H: ref.state_h.numpy(),
        }
        diffs = {}
        for name, want in expected.items():
            have = got[name]
            if have.shape != want.shape:
                failures.append(f"{name}: shape {have.shape}, expected {want.shape} "
                                f"(batch {batch}, tokens {ids.shape[1]})")
                continue
            diff = float(np.abs(have.astype(np.float64) - want).max()) if want.size else 0.0
            diffs[name] = diff
            worst = max(worst, diff)
            # atol on values of order 1; float32 rounding grows with the values' size
            scale = max(1.0, float(np.abs(want).max())) if want.size else 1.0
            if not diff <= atol * scale:
                failures.append(f"{name}: max abs diff {diff:.3g} > {atol:g} x {scale:.3g} "
                                f"(batch {batch}, tokens {ids.shape[1]})")
        cases.append({"batch": batch, "tokens": int(ids.shape[1]), "max_abs_diff": diffs})
    if failures:
        raise ExportError("ONNX output differs from PyTorch: " + "; ".join(failures))
    return ParityReport(worst, cases)


def export_onnx(
    model: BiLM,
    path: str | Path,
    source: dict[str, Any],
    atol: float = DEFAULT_ATOL,
    check: bool = True,
) -> ParityReport | None:
    """Write ``model`` as an elmo-edge ONNX file at ``path`` (atomically).

    With ``check`` (the default) the graph must match PyTorch within ``atol``
    times the largest absolute output value (at least 1)
    or nothing is written.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise ElmoError(f"{path}: directory {path.parent} does not exist")
    options = model.options
    proto = build_model(options, model.elmo_weights())
    report = None
    parity: dict[str, Any] = {"checked": False}
    if check:
        report = check_parity(model, proto.SerializeToString(), atol=atol)
        parity = {
            "checked": True,
            "atol": atol,
            "max_abs_diff": report.max_abs_diff,
            "reference": f"torch {torch.__version__}",
            "shapes": [[c["batch"], c["tokens"]] for c in report.cases],
        }
    meta = contract.make_metadata(
        options,
        source={**source, "exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        parity=parity,
    )
    onnx.helper.set_model_props(proto, meta)
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(proto.SerializeToString())
    except OSError as e:
        raise ElmoError(f"{path}: cannot write ({e.strerror})") from None
    return report


def convert(options_path: str | Path, weights_path: str | Path, output: str | Path,
            atol: float = DEFAULT_ATOL) -> ParityReport | None:
    """Published ELMo weights (options.json + weights.hdf5) → elmo-edge ONNX."""
    from elmo_runtime.spec.options import load_options

    from .weights import read_weights

    options = load_options(options_path)
    weights = read_weights(weights_path, options)
    model = BiLM.from_elmo_weights(options, weights)
    source = {
        "kind": "elmo-hdf5",
        "weights_file": Path(weights_path).name,
        "weights_sha256": sha256_file(weights_path),
    }
    return export_onnx(model, output, source, atol=atol)
