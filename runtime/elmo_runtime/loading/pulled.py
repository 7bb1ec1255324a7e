"""Where ``elmo pull NAME`` keeps a published model: ``<cache>/pulled/<NAME>/``.

That folder holds the downloaded files (``options.json`` + ``weights.hdf5``, or
``model.zip``), ``model.onnx`` (the converted model, a hard link into
``<cache>/converted/``) and ``pulled.json`` (URLs, sizes, sha256s). ``<cache>/pulled/trust/``
remembers the size and sha256 of each URL's first download (:mod:`elmo_runtime.compat.pull`
writes all of it). This module only knows the layout, for resolving ``--model NAME``.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ModelError
from .hashes import cache_root

PULLED = "pulled"
MODEL = "model.onnx"


def pulled_dir(name: str, root: Path | None = None) -> Path:
    """The folder of the published model ``name`` in the cache (it may not exist)."""
    return (cache_root() if root is None else root) / PULLED / name


def pulled_model(name: str, root: Path | None = None) -> Path:
    """The converted model of the published model ``name``; ModelError (saying to run
    ``elmo pull NAME``) when it has not been pulled."""
    path = pulled_dir(name, root) / MODEL
    if not path.is_file():
        raise ModelError(f"model {name!r} is published but not pulled yet: run "
                         f"`elmo pull {name}` (downloads it into {path.parent.parent})")
    return path
