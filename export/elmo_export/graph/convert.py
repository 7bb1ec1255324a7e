"""`elmo convert` without PyTorch: published ELMo weights → a parity-checked elmo-edge ONNX file.

Needs NumPy, onnx, onnxruntime and h5py (``pip install 'elmo-edge[convert]'``).
The graph is built by :mod:`.builder` and checked against the float64
NumPy forward of the spec (:mod:`.reference`) on several shapes before it is
written; a model that disagrees is refused and nothing is written.
:func:`write_model` is the one writer of a model file (metadata, atomic
rename), shared with ``elmo export`` (:mod:`elmo_export.pytorch.export`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from elmo_runtime.errors import ElmoError
from elmo_runtime.files import atomic_path, format_mib, sha256_file
from elmo_runtime.format import contract
from elmo_runtime.format.options import ElmoOptions, load_options

from ..bilm_tf.weights import Weights, has_projection, read_weights
from .builder import build_model
from .parity import DEFAULT_ATOL, ParityReport, SentenceMaker, check_parity, random_sentences
from .reference import NumpyBiLM


def check_directory(path: Path) -> None:
    """Raise ElmoError unless ``path``'s directory exists (checked before any work)."""
    if not path.parent.is_dir():
        raise ElmoError(f"{path}: directory {path.parent} does not exist")


def _metadata(options: ElmoOptions, source: dict[str, Any], parity: dict[str, Any],
              vocabulary: Any) -> dict[str, str]:
    return contract.make_metadata(
        options,
        source={**source, "exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        parity=parity,
        vocabulary=vocabulary,
    )


def metadata_bytes(meta: dict[str, str]) -> bytes:
    """``meta`` as a serialized ModelProto holding only ``metadata_props``: appended to a
    serialized model without metadata it adds them (protobuf merges concatenated messages,
    repeated fields appended), so a large model need not be serialized twice."""
    extra = onnx.ModelProto()
    onnx.helper.set_model_props(extra, meta)
    return extra.SerializeToString()


def write_model(proto: onnx.ModelProto, options: ElmoOptions, path: str | Path,
                source: dict[str, Any], parity: dict[str, Any],
                vocabulary: Any = None) -> None:
    """Add the contract metadata to ``proto`` and write it to ``path`` atomically.

    ``vocabulary``: a code-point model's vocabularies (``spec.codepoints``).
    """
    path = Path(path)
    meta = _metadata(options, source, parity, vocabulary)
    onnx.helper.set_model_props(proto, meta)
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(proto.SerializeToString())
    except OSError as e:
        raise ElmoError(f"{path}: cannot write ({e.strerror})") from None


def written_line(output: str | Path, report: ParityReport, atol: float) -> str:
    """What `elmo convert` says once ``output`` is written: its size in MiB, the largest
    |ONNX - reference| and the tolerance it was held to (``atol`` x the output's scale)."""
    size = format_mib(Path(output).stat().st_size)
    return (f"wrote {output} ({size}); max |ONNX − float64 reference| = "
            f"{report.max_abs_diff:.2g}, tolerance applied {report.tolerance:.2g} "
            f"({atol:g} x max(1, |output|))")


def numpy_reference_name() -> str:
    return f"the float64 NumPy reference (numpy {np.__version__})"


def convert_weights(options: ElmoOptions, weights: Weights, output: str | Path,
                    source: dict[str, Any], atol: float = DEFAULT_ATOL,
                    vocabulary: Any = None,
                    sentences: SentenceMaker = random_sentences) -> ParityReport:
    """Build, check against :class:`NumpyBiLM` and write; raises ExportError on a mismatch.

    ``vocabulary``: a code-point model's scheme (``spec.codepoints``), used to pack the
    parity sentences and written to the metadata; ``sentences``: the parity check's
    sentence maker (default: random bilm-tf tokens).
    """
    output = Path(output)
    check_directory(output)
    if not has_projection(weights, options):
        source = {**source, "cell_projection": False}
    proto = build_model(options, weights)
    del proto.metadata_props[:]  # the metadata is appended once parity is known
    reference = NumpyBiLM(options, weights)
    # Memory: the graph is serialized once, straight into the temp file, and the proto let
    # go before onnxruntime loads that file for the parity check; the metadata is appended
    # after it (bench/RESULTS.md, "First-use conversion").
    try:
        with atomic_path(output) as tmp:
            tmp.write_bytes(proto.SerializeToString())
            del proto
            report = check_parity(reference.run, numpy_reference_name(), options, tmp,
                                  atol=atol, scheme=vocabulary, sentences=sentences)
            with open(tmp, "ab") as f:
                f.write(metadata_bytes(_metadata(options, source, report.metadata(atol),
                                                 vocabulary)))
    except OSError as e:
        raise ElmoError(f"{output}: cannot write ({e.strerror})") from None
    return report


def convert_bilm_tf(options_path: str | Path, weights_path: str | Path, output: str | Path,
                    atol: float = DEFAULT_ATOL) -> ParityReport:
    """Published ELMo weights (options.json + weights.hdf5) → elmo-edge ONNX at ``output``.

    Raises OptionsError / WeightsError for bad inputs, ExportError when the
    graph does not match the NumPy reference within ``atol`` (nothing written).
    """
    options = load_options(options_path)
    check_directory(Path(output))
    weights = read_weights(weights_path, options)
    source = {
        "kind": "elmo-hdf5",
        "weights_file": Path(weights_path).name,
        "weights_sha256": sha256_file(weights_path),
    }
    return convert_weights(options, weights, output, source, atol=atol)
