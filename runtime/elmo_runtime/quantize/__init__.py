"""int8 / fp16 / int4 variants of an exported elmo-edge model, with their error measured.

Every mode keeps the graph's float32 inputs and outputs. The rooms:

* :mod:`.modes` — the modes and their recorded settings; :mod:`.int8` the
  exact, batch-independent int8 rewrite (with :mod:`.ranges`, which proves
  which activations are bounded); :mod:`.fp16` the float16 conversion; int4
  through onnxruntime's ``MatMulNBitsQuantizer``;
* :mod:`.check` — the comparison with the float32 source: per-layer mean and
  minimum per-token cosine, and a sentence alone vs inside its batch;
* :mod:`.model_io` — reading the source, the destination, the atomic write.

The check (on by default) is written into the model's metadata. Thresholds,
on the **mean** cosine of every layer (:data:`THRESHOLDS`): int8 ≥ 0.99,
int4 ≥ 0.97, fp16 ≥ 0.999; batch independence within
:data:`BATCH_TOLERANCE` (1e-5 for int8 and int4). Below them nothing is
written unless ``force`` is set.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import QuantizeError, QuantizeWarning
from ..files import sha256_file
from ..loading.model_file import ModelFile, locate
from ..loading.session import resolve_provider
from .check import (
    BATCH_TOLERANCE,
    SAMPLE_SENTENCES,
    CheckReport,
    LayerCosine,
    compare_models,
    load_sentences,
)
from .fp16 import to_fp16
from .model_io import (
    check_destination,
    load_float_model,
    set_metadata,
    tool_versions,
    write_atomically,
)
from .modes import DEFAULT_BLOCK_SIZE, MODES, THRESHOLDS, convert, settings


@dataclass(frozen=True)
class QuantizeReport:
    """What :func:`quantize_model` wrote."""

    source: Path
    output: Path
    mode: str
    size_before: int
    size_after: int
    settings: dict[str, Any]
    check: CheckReport | None
    forced: bool

    @property
    def ratio(self) -> float:
        return self.size_after / self.size_before


def quantize_model(
    src_path: str | Path | ModelFile,
    dst_path: str | Path,
    mode: str = "int8",
    per_channel: bool | None = None,
    block_size: int | None = None,
    check: bool = True,
    sentences: Sequence[Sequence[str]] | None = None,
    threshold: float | None = None,
    force: bool = False,
    overwrite: bool = False,
) -> QuantizeReport:
    """Write an ``int8``, ``fp16`` or ``int4`` variant of the float32 model ``src_path``.

    ``src_path``: a path, a bundled model's name, or a :class:`ModelFile`
    located before (then not resolved or sniffed again).

    ``per_channel`` applies to int8 (default: one weight scale per output
    column; False: one per tensor), ``block_size`` (a power of two ≥ 16,
    default 32) to int4. With ``check``, the new model is compared with the
    source on ``sentences`` (default :data:`SAMPLE_SENTENCES`) and refused
    below ``threshold`` (default :data:`THRESHOLDS` of the mode) or when a
    sentence alone and in its batch differ by more than
    :data:`BATCH_TOLERANCE`, unless ``force``. The output appears atomically or
    not at all; an existing ``dst_path`` is replaced only with ``overwrite``.
    Raises QuantizeError, ModelError, InputError or ElmoError (destination), each
    in one line naming the file.
    """
    recorded = settings(mode, per_channel, block_size)
    file = locate(src_path)
    src, dst = file.path, Path(dst_path)
    check_destination(src, dst, overwrite)  # before the source is read
    model, info = load_float_model(src)
    size_before = src.stat().st_size
    source_meta = {p.key: p.value for p in model.metadata_props}
    quantized = convert(model, recorded)
    del model
    recorded["source"] = {"file": src.name, "size": size_before, "sha256": sha256_file(src)}
    recorded["tool"] = tool_versions()

    report = None
    if check:
        report = compare_models(
            file,
            quantized.SerializeToString(),
            [s.split() for s in SAMPLE_SENTENCES] if sentences is None else sentences,
            info,
            THRESHOLDS[mode] if threshold is None else threshold,
            _check_provider(mode),
            BATCH_TOLERANCE[mode],
        )
        recorded["check"] = report.to_dict()
        if not report.passed and not force:
            raise QuantizeError(
                f"{src}: the {mode} model drifts too far from its float32 source "
                f"({'; '.join(report.failures())}); nothing written to {dst} "
                "(use --force to write it anyway)"
            )
    else:
        recorded["check"] = {"skipped": True}
    forced = report is not None and not report.passed
    if forced:
        recorded["check"]["forced"] = True
    set_metadata(quantized, source_meta, recorded)
    data = quantized.SerializeToString()
    del quantized
    write_atomically(dst, data)
    if forced:
        warnings.warn(
            f"WRITTEN ANYWAY (--force): {dst} fails the {mode} check "
            f"({'; '.join(report.failures())}); its vectors differ from the float32 model's",
            QuantizeWarning,
            stacklevel=2,
        )
    return QuantizeReport(src, dst, mode, size_before, len(data), recorded, report, forced)


def _check_provider(mode: str) -> str:
    """fp16 is checked on CUDA when there is one; the integer modes on the CPU (their kernels)."""
    return resolve_provider("auto") if mode == "fp16" else "cpu"


__all__ = [
    "BATCH_TOLERANCE",
    "DEFAULT_BLOCK_SIZE",
    "MODES",
    "SAMPLE_SENTENCES",
    "THRESHOLDS",
    "CheckReport",
    "LayerCosine",
    "QuantizeError",
    "QuantizeReport",
    "QuantizeWarning",
    "compare_models",
    "load_float_model",
    "load_sentences",
    "quantize_model",
    "to_fp16",
]
