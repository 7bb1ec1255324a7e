"""The one onnxruntime session factory: providers checked and confirmed, threads set.

:func:`create_session` is the only place in elmo-edge that constructs an
``onnxruntime.InferenceSession`` (the embedder, the quantize check and the
export parity check all go through it). It turns every way a model file or
an execution provider can fail into a one-line :class:`ModelError` or
:class:`ProviderError`. :func:`open_session` adds what an elmo-edge model
must offer: its metadata is read and its graph checked against the contract
table (:data:`elmo_runtime.format.contract.TENSORS`), every mismatch collected
into one ModelError.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import onnxruntime as ort

from . import prepared
from .errors import GPU_HINT, ElmoError, ModelError, ProviderError, first_line
from .format import contract
from .format.contract import ModelInfo
from .models import check_model_file

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
PROVIDERS = ("auto", "cpu", "cuda")
IN_MEMORY = "<in-memory model>"  # how errors name a model given as bytes
# onnxruntime 1.32 segfaults creating a CPU session for a float16 model at
# ORT_ENABLE_ALL unless this layout transformer is off; it only re-blocks the
# char CNN's float32 Convs (no gain measured on the small preset, 2 cores).
DISABLED_OPTIMIZERS = ["NchwcTransformer"]


def create_session(
    model: str | Path | bytes,
    provider: str = "cpu",
    threads: int | None = None,
    config: Mapping[str, str] | None = None,
    optimized_model_path: str | Path | None = None,
) -> ort.InferenceSession:
    """An onnxruntime session for ``model`` (a path or the serialized bytes).

    ``optimized_model_path``: onnxruntime also writes the optimized graph
    there (:mod:`elmo_runtime.prepared` makes its copies this way).

    ``provider``: "cpu", "cuda" (ProviderError when CUDA is missing or does
    not attach) or "auto" (CUDA when offered, else the CPU; a warning when CUDA
    is offered but does not attach). ``threads``: intra-op threads (None:
    onnxruntime's default). ``config``: extra session config entries
    (``SessionOptions.add_session_config_entry``), e.g. to load a prepared
    model. Raises ModelError (unreadable, not ONNX), ProviderError, or
    ElmoError for a bad ``threads``. The model is not checked against the
    elmo-edge contract: :func:`open_session` does that.
    """
    if provider not in PROVIDERS:
        raise ProviderError(f"unknown provider {provider!r}; choose one of {', '.join(PROVIDERS)}")
    if isinstance(model, bytes):
        source: str | bytes = model
        where = IN_MEMORY
    else:
        path = Path(model)
        check_model_file(path)  # a directory, a missing file, bilm-tf weights: one line
        if not os.access(path, os.R_OK):
            raise ModelError(f"{path}: cannot read the model file (permission denied)")
        source = where = str(path)
    options = _session_options(threads, config)
    if optimized_model_path is not None:  # not a config entry: onnxruntime ignores that form
        options.optimized_model_filepath = str(optimized_model_path)
    if provider == "cpu" or (provider == "auto" and CUDA not in ort.get_available_providers()):
        return _load(source, where, options, [CPU])
    return _load_cuda(source, where, options, required=provider == "cuda")


def open_session(
    path: str | Path, provider: str = "auto", threads: int | None = None, prepare: bool = True
) -> tuple[ort.InferenceSession, ModelInfo]:
    """Load an elmo-edge model on ``provider`` ("auto", "cpu" or "cuda") and check it.

    Returns the session and the model's :class:`ModelInfo`. Raises what
    :func:`create_session` raises, and ModelError when the metadata or the
    graph's interface (names, dtypes, fixed dims, axis names) does not
    follow the contract. A big model on the CPU loads from its prepared copy
    (:func:`elmo_runtime.prepared.load_path`: pre-packed weights memory-mapped)
    unless ``prepare`` is False (a one-off look such as `elmo info`).
    """
    check_model_file(path)  # before the prepared cache or onnxruntime reads it
    path = Path(path)
    source = prepared.load_path(path, provider) if prepare else path
    try:
        session = create_session(source, provider, threads)
    except ModelError as e:
        if source == path:
            raise
        # e.g. `elmo cache clear` removed the copy between its check and this open
        warnings.warn(f"{path}: its prepared copy could not be opened ({first_line(e)}); "
                      "loading the model as it is", UserWarning, stacklevel=2)
        session = create_session(path, provider, threads)
    return session, check_contract(session, str(path))


def _session_options(threads: int | None, config: Mapping[str, str] | None) -> ort.SessionOptions:
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)):
        raise ElmoError(f"threads must be a positive integer, found {threads!r}")
    if threads is not None and threads <= 0:
        raise ElmoError(f"threads must be a positive integer, found {threads}")
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    return options


def _create(source: str | bytes, options: ort.SessionOptions,
            providers: list[str]) -> ort.InferenceSession:
    with warnings.catch_warnings():
        # onnxruntime warns about providers it lacks; create_session reports those itself.
        warnings.simplefilter("ignore")
        return ort.InferenceSession(
            source,
            sess_options=options,
            providers=providers,
            disabled_optimizers=DISABLED_OPTIMIZERS,
        )


def _load(source: str | bytes, where: str, options: ort.SessionOptions,
          providers: list[str]) -> ort.InferenceSession:
    try:
        return _create(source, options, providers)
    except Exception as e:  # onnxruntime raises its own pybind11 exception types
        raise ModelError(
            f"{where}: not a readable ONNX model (truncated or not ONNX): {first_line(e)}"
        ) from e


def _load_cuda(source: str | bytes, where: str, options: ort.SessionOptions,
               required: bool) -> ort.InferenceSession:
    """A session on CUDA; when CUDA fails, ProviderError if ``required``, else CPU + warning."""
    available = ort.get_available_providers()
    if CUDA not in available:
        raise ProviderError(
            f"provider 'cuda' is not available in this onnxruntime build "
            f"(available: {', '.join(available)}); install the GPU build: {GPU_HINT}"
        )
    try:
        session = _create(source, options, [CUDA, CPU])
    except Exception as e:  # CUDA failed, or the file is bad: the CPU load below tells which
        session, reason = None, first_line(e)
    else:
        if CUDA in session.get_providers():
            return session
        reason = "the CUDA provider did not attach"
    if session is None:
        session = _load(source, where, options, [CPU])
    message = f"CUDA is offered but unusable ({reason}); check the CUDA/cuDNN install or {GPU_HINT}"
    if required:
        raise ProviderError(message)
    warnings.warn(f"{message}; running on the CPU", UserWarning, stacklevel=4)
    return session


def _args(args: list[ort.NodeArg]) -> dict[str, tuple[str, list[int | str | None]]]:
    return {a.name: (a.type, list(a.shape)) for a in args}


def check_contract(session: ort.InferenceSession, where: str) -> ModelInfo:
    """The model's metadata, after checking its graph against the contract table.

    Raises one ModelError that lists every mismatch (``where`` names the model).
    """
    info = contract.parse_metadata(session.get_modelmeta().custom_metadata_map, where)
    problems = contract.check_graph(
        _args(session.get_inputs()),
        _args(session.get_overridable_initializers()),
        _args(session.get_outputs()),
        info.options,
    )
    if problems:
        raise ModelError(
            f"{where}: the graph's inputs/outputs do not match the elmo-edge contract "
            f"(format {contract.FORMAT_VERSION}): " + "; ".join(problems)
        )
    return info


def _describe_args(args: list[ort.NodeArg], optional: bool = False) -> list[dict[str, Any]]:
    return [
        {"name": a.name, "type": a.type, "shape": list(a.shape), "optional": optional} for a in args
    ]


def _contract_order(name: str, names: tuple[str, ...]) -> int:
    return names.index(name) if name in names else len(names)


def _vocabulary_summary(info: contract.ModelInfo) -> dict[str, Any]:
    """The char-id scheme and vocabulary sizes (`elmo info`)."""
    vocab = info.vocabulary
    if vocab is None:
        return {"char_ids": info.char_scheme, "chars": "UTF-8 bytes", "words": 0}
    return {"char_ids": info.char_scheme, "chars": len(vocab.chars),
            "words": len(vocab.words) if vocab.words is not None else 0}


def describe_model(path: str | Path) -> dict[str, Any]:
    """Everything `elmo info` reports about a model, as JSON-ready values."""
    import onnx  # only `elmo info` needs it

    path = Path(path)
    session, info = open_session(path, "cpu", threads=1, prepare=False)  # no cache side effect
    proto = onnx.load(str(path), load_external_data=False)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    return {
        "path": str(path),
        "file_size": path.stat().st_size,
        "format": contract.FORMAT_NAME,
        "format_version": (contract.FORMAT_VERSION if info.vocabulary is None
                           else contract.CODEPOINT_FORMAT_VERSION),
        "producer": info.producer_version,
        "family": "bilm-tf" if info.vocabulary is None else "elmoformanylangs",
        "vocabulary": _vocabulary_summary(info),
        "source": info.source,
        "options": info.options.to_dict(),
        "n_parameters": info.options.n_parameters(),
        "opset": opset,
        "ir_version": proto.ir_version,
        "inputs": sorted(
            _describe_args(session.get_inputs())
            + _describe_args(session.get_overridable_initializers(), optional=True),
            key=lambda a: _contract_order(a["name"], contract.INPUTS),
        ),
        "outputs": _describe_args(session.get_outputs()),
        "contract": contract.tensor_table(),
        "quantization": info.quantization,
        "parity": info.parity,
    }
