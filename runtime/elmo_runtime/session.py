"""The one onnxruntime session factory: providers checked and confirmed, threads set.

:func:`open_session` is the only place that creates an
``onnxruntime.InferenceSession``. It turns every way a model file or an
execution provider can fail into a one-line :class:`ModelError` or
:class:`ProviderError`, reads the model's metadata and checks that the graph
has the inputs and outputs of the elmo-edge contract.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import onnxruntime as ort

from .errors import ElmoError, ModelError, ProviderError
from .spec import contract
from .spec.contract import ModelInfo

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
PROVIDERS = ("auto", "cpu", "cuda")
GPU_HINT = "pip install 'elmo-edge[gpu]'"
# onnxruntime 1.32 segfaults creating a CPU session for a float16 model at
# ORT_ENABLE_ALL unless this layout transformer is off; it only re-blocks the
# char CNN's float32 Convs (no gain measured on the small preset, 2 cores).
DISABLED_OPTIMIZERS = ["NchwcTransformer"]


def open_session(
    path: str | Path, provider: str = "auto", threads: int | None = None
) -> tuple[ort.InferenceSession, ModelInfo]:
    """Load an elmo-edge model on ``provider`` ("auto", "cpu" or "cuda").

    "auto" uses CUDA when this onnxruntime build offers it and falls back to
    the CPU, with a warning, if CUDA is offered but does not attach.
    """
    path = Path(path)
    if provider not in PROVIDERS:
        raise ProviderError(f"unknown provider {provider!r}; choose one of {', '.join(PROVIDERS)}")
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    if not os.access(path, os.R_OK):
        raise ModelError(f"{path}: cannot read the model file (permission denied)")
    options = _session_options(threads)
    if provider == "cpu" or (provider == "auto" and CUDA not in ort.get_available_providers()):
        session = _load(path, options, [CPU])
    else:
        session = _load_cuda(path, options, required=provider == "cuda")
    return session, _check_contract(session, path)


def _session_options(threads: int | None) -> ort.SessionOptions:
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
    return options


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _create(path: Path, options: ort.SessionOptions, providers: list[str]) -> ort.InferenceSession:
    with warnings.catch_warnings():
        # onnxruntime warns about providers it lacks; open_session reports those itself.
        warnings.simplefilter("ignore")
        return ort.InferenceSession(
            str(path),
            sess_options=options,
            providers=providers,
            disabled_optimizers=DISABLED_OPTIMIZERS,
        )


def _load(path: Path, options: ort.SessionOptions, providers: list[str]) -> ort.InferenceSession:
    try:
        return _create(path, options, providers)
    except Exception as e:  # onnxruntime raises its own pybind11 exception types
        raise ModelError(
            f"{path}: not a readable ONNX model (truncated or not ONNX): {_first_line(e)}"
        ) from e


def _load_cuda(path: Path, options: ort.SessionOptions, required: bool) -> ort.InferenceSession:
    """A session on CUDA; when CUDA fails, ProviderError if ``required``, else CPU + warning."""
    available = ort.get_available_providers()
    if CUDA not in available:
        raise ProviderError(
            f"provider 'cuda' is not available in this onnxruntime build "
            f"(available: {', '.join(available)}); install the GPU build: {GPU_HINT}"
        )
    try:
        session = _create(path, options, [CUDA, CPU])
    except Exception as e:  # CUDA failed, or the file is bad: the CPU load below tells which
        session, reason = None, _first_line(e)
    else:
        if CUDA in session.get_providers():
            return session
        reason = "the CUDA provider did not attach"
    if session is None:
        session = _load(path, options, [CPU])
    message = f"CUDA is offered but unusable ({reason}); check the CUDA/cuDNN install or {GPU_HINT}"
    if required:
        raise ProviderError(message)
    warnings.warn(f"{message}; running on the CPU", UserWarning, stacklevel=3)
    return session


def _names(args: list[ort.NodeArg]) -> set[str]:
    return {a.name for a in args}


def _check_contract(session: ort.InferenceSession, path: Path) -> ModelInfo:
    info = contract.parse_metadata(session.get_modelmeta().custom_metadata_map, str(path))
    required = _names(session.get_inputs())
    offered = required | _names(session.get_overridable_initializers())
    outputs = _names(session.get_outputs())
    if (not set(contract.REQUIRED_INPUTS) <= required <= set(contract.INPUTS)
            or not set(contract.INPUTS) <= offered):
        raise ModelError(
            f"{path}: model inputs {sorted(offered)} do not match the elmo-edge contract "
            f"{list(contract.INPUTS)}"
        )
    if not set(contract.OUTPUTS) <= outputs:
        raise ModelError(
            f"{path}: model outputs {sorted(outputs)} lack the elmo-edge contract's "
            f"{sorted(set(contract.OUTPUTS) - outputs)}"
        )
    _check_dims(session, info, path)
    return info


def _check_dims(session: ort.InferenceSession, info: ModelInfo, path: Path) -> None:
    """The graph's fixed dimensions must be the ones its metadata's options imply."""
    o = info.options
    expected = {
        contract.INPUT_TOKEN_CHARS: [None, o.max_characters_per_token],
        contract.INPUT_CACHED_VECTORS: [None, o.projection_dim],
        contract.INPUT_TOKEN_INDEX: [None, None],
        contract.OUTPUT_TOKEN_VECTORS: [None, o.projection_dim],
        contract.OUTPUT_LAYERS: [None, o.n_output_layers, None, o.output_dim],
        contract.OUTPUT_STATE_C: [2, o.n_layers, None, o.lstm_dim],
        contract.OUTPUT_STATE_H: [2, o.n_layers, None, o.projection_dim],
    }
    for arg in [*session.get_inputs(), *session.get_outputs()]:
        want = expected.get(arg.name)
        if want is None:
            continue
        have = [d if isinstance(d, int) else None for d in arg.shape]
        ok = len(have) == len(want) and all(
            w is None or h is None or h == w for h, w in zip(have, want, strict=True)
        )
        if not ok:
            raise ModelError(
                f"{path}: {arg.name} has shape {list(arg.shape)}, but the model's options "
                f"imply {['?' if w is None else w for w in want]}"
            )


def _describe_args(args: list[ort.NodeArg], optional: bool = False) -> list[dict[str, Any]]:
    return [
        {"name": a.name, "type": a.type, "shape": list(a.shape), "optional": optional} for a in args
    ]


def _contract_order(name: str, names: tuple[str, ...]) -> int:
    return names.index(name) if name in names else len(names)


def describe_model(path: str | Path) -> dict[str, Any]:
    """Everything `elmo info` reports about a model, as JSON-ready values."""
    import onnx  # only `elmo info` needs it

    path = Path(path)
    session, info = open_session(path, "cpu", threads=1)
    proto = onnx.load(str(path), load_external_data=False)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    return {
        "path": str(path),
        "file_size": path.stat().st_size,
        "format": contract.FORMAT_NAME,
        "format_version": contract.FORMAT_VERSION,
        "producer": info.producer_version,
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
        "quantization": info.quantization,
        "parity": info.parity,
    }
