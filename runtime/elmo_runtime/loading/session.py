"""The one onnxruntime session factory: providers checked and confirmed, threads set.

:func:`create_session` is the only place in elmo-edge that constructs an
``onnxruntime.InferenceSession`` (the embedder, the quantize check, the
prepared copy's child and the export parity check all go through it). It
turns every way a model file or an execution provider can fail into a
one-line :class:`ModelError` or :class:`ProviderError`. :func:`resolve_provider`
is the one place "auto" is decided. :func:`check_contract` is what an
elmo-edge model must offer: its metadata is read and its graph checked
against the contract table (:data:`elmo_runtime.format.contract.TENSORS`),
every mismatch collected into one ModelError. A leaf: it imports nothing of
:mod:`elmo_runtime.loading` but the model file.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import onnxruntime as ort

from ..cpus import available_cpus
from ..errors import GPU_HINT, ElmoError, ModelError, ProviderError, first_line
from ..format import contract
from ..format.contract import ModelInfo
from .model_file import ModelFile, check_model_file

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
PROVIDERS = ("auto", "cpu", "cuda")
IN_MEMORY = "<in-memory model>"  # how errors name a model given as bytes
# onnxruntime 1.32 segfaults creating a CPU session for a float16 model at
# ORT_ENABLE_ALL unless this layout transformer is off; it only re-blocks the
# char CNN's float32 Convs (no gain measured on the small preset, 2 cores).
DISABLED_OPTIMIZERS = ["NchwcTransformer"]


def resolve_provider(provider: str) -> str:
    """"cpu" or "cuda" for ``provider`` ("auto": "cuda" when this onnxruntime offers CUDA).

    Raises ProviderError for a provider that is none of :data:`PROVIDERS`.
    An "auto" that resolves to "cuda" still falls back to the CPU, with a
    warning, when CUDA does not attach (:func:`create_session`).
    """
    if provider not in PROVIDERS:
        raise ProviderError(f"unknown provider {provider!r}; choose one of {', '.join(PROVIDERS)}")
    if provider == "auto":
        return "cuda" if CUDA in ort.get_available_providers() else "cpu"
    return provider


def create_session(
    model: str | Path | bytes | ModelFile,
    provider: str = "cpu",
    threads: int | None = None,
    config: Mapping[str, str] | None = None,
    optimized_model_path: str | Path | None = None,
    cpu_memory_arena: bool = False,
) -> ort.InferenceSession:
    """An onnxruntime session for ``model`` (a path, a checked :class:`ModelFile` or the
    serialized bytes).

    A path is checked first (:func:`~.model_file.check_model_file`); a
    ModelFile was checked when it was located. ``optimized_model_path``:
    onnxruntime also writes the optimized graph there (the prepared copies
    are made this way, :mod:`elmo_runtime.loading.prepared.graph`).

    ``provider``: "cpu", "cuda" (ProviderError when CUDA is missing or does
    not attach) or "auto" (CUDA when offered, else the CPU; a warning when CUDA
    is offered but does not attach). ``threads``: intra-op threads (None: the CPUs
    this process may use, :func:`elmo_runtime.cpus.available_cpus`). ``config``:
    extra session config entries (``SessionOptions.add_session_config_entry``),
    e.g. to load a prepared model. ``cpu_memory_arena``: onnxruntime's CPU arena (off:
    tensors come from malloc and memory follows the run; :func:`_session_options`).
    Raises ModelError (unreadable, not ONNX), ProviderError, or ElmoError for a bad
    ``threads``. The model is not checked against the
    elmo-edge contract: :func:`check_contract` does that (:func:`.loaded.open_model`).
    """
    resolved = resolve_provider(provider)
    if isinstance(model, bytes):
        source: str | bytes = model
        where = IN_MEMORY
    elif isinstance(model, ModelFile):
        source = where = str(model.path)
    else:
        check_model_file(model)  # a directory, a missing file, bilm-tf weights: one line
        source = where = str(model)
    options = _session_options(threads, config, cpu_memory_arena)
    if optimized_model_path is not None:  # not a config entry: onnxruntime ignores that form
        options.optimized_model_filepath = str(optimized_model_path)
    if resolved == "cpu":
        return _load(source, where, options, [CPU])
    return _load_cuda(source, where, options, required=provider == "cuda")


def shrink_options(providers: Sequence[str], cpu_arena: bool = False) -> ort.RunOptions | None:
    """Run options that hand onnxruntime's memory arenas' unused chunks back after every run
    (onnxruntime #20640): the CUDA arena's, and the CPU arena's when the session has one
    (``cpu_arena``; by default it has none: :func:`create_session`),
    so memory follows the current batch, not the largest one ever run. None when there is
    nothing to shrink."""
    devices = (["cpu:0"] if cpu_arena else []) + (
        ["gpu:0"] if "CUDAExecutionProvider" in providers else [])
    if not devices:
        return None
    options = ort.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", ";".join(devices))
    return options


def _session_options(
    threads: int | None, config: Mapping[str, str] | None, cpu_memory_arena: bool = False
) -> ort.SessionOptions:
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)):
        raise ElmoError(f"threads must be a positive integer, found {threads!r}")
    if threads is not None and threads <= 0:
        raise ElmoError(f"threads must be a positive integer, found {threads}")
    options = ort.SessionOptions()
    # onnxruntime's default is one thread per core of the machine, not of the process
    options.intra_op_num_threads = available_cpus() if threads is None else threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # By default tensors come from malloc, not onnxruntime's CPU arena: the arena keeps the
    # peak of the largest run for good (bundled model: +150 MiB after one 4,096-step run,
    # against +45 without it), and handing its chunks back after every run left more in use
    # than it freed on a real workload (bench/threads.py --arena; bench/RESULTS.md). `elmo
    # serve` keeps it: it maps every freed block over 256 KiB back to the system
    # (serve/command.py), which would cost each run's tensors fresh zeroed pages.
    options.enable_cpu_mem_arena = cpu_memory_arena
    # FATAL only: onnxruntime's coloured ERROR lines would come before the one-line error
    # elmo-edge prints for the same failure (a load or a run that fails raises an ElmoError).
    options.log_severity_level = 4
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
