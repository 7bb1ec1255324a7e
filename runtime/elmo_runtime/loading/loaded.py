"""One way in: resolve → check → prepared copy → session → contract (:func:`open_model`)."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from ..errors import ModelError, first_line
from ..format.contract import ModelInfo
from .model_file import ModelFile, locate
from .prepared import cache as prepared
from .session import check_contract, create_session


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to run: ``file`` (the checked model file), ``session``, ``info``
    (its metadata, checked against the contract), ``loaded_from`` (the file the
    session read: the model or its prepared copy)."""

    file: ModelFile
    session: ort.InferenceSession
    info: ModelInfo
    loaded_from: Path

    @property
    def path(self) -> Path:
        """The model file's path (never the prepared copy's)."""
        return self.file.path


def open_model(
    model: str | os.PathLike | ModelFile | None,
    provider: str = "auto",
    threads: int | None = None,
    prepare: bool = True,
    cpu_memory_arena: bool = False,
) -> LoadedModel:
    """Load an elmo-edge model on ``provider`` ("auto", "cpu" or "cuda") and check it.

    ``model``: None (the bundled default), a bundled name, a path, or a
    :class:`ModelFile` located before (then neither resolved nor sniffed
    again). A big model on the CPU loads from its prepared copy
    (:func:`.prepared.cache.load_path`: pre-packed weights memory-mapped)
    unless ``prepare`` is False (a one-off look such as `elmo info`); a copy
    that cannot be opened falls back to the model file with a warning.
    ``cpu_memory_arena``: as :func:`.session.create_session` has it.
    Raises ModelError (no such model, not ONNX, metadata or graph not the
    contract's: every mismatch in one line), ProviderError, or ElmoError for
    a bad ``threads``.
    """
    file = locate(model)
    source = prepared.load_path(file.path, provider) if prepare else file.path
    if source == file.path:
        session = create_session(file, provider, threads, cpu_memory_arena=cpu_memory_arena)
    else:
        try:
            session = create_session(ModelFile(source), provider, threads,
                                     cpu_memory_arena=cpu_memory_arena)  # our own copy
        except ModelError as e:
            # e.g. `elmo cache clear` removed the copy between its check and this open
            warnings.warn(f"{file.path}: its prepared copy could not be opened ({first_line(e)}); "
                          "loading the model as it is", UserWarning, stacklevel=2)
            source = file.path
            session = create_session(file, provider, threads, cpu_memory_arena=cpu_memory_arena)
    return LoadedModel(file, session, check_contract(session, str(file.path)), source)
