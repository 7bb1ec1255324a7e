"""Where ``elmo pull NAME`` keeps a published model: ``<cache>/pulled/<NAME>/``.

That folder holds the downloaded files (``options.json`` + ``weights.hdf5``, or
``model.zip``), ``model.onnx`` (the converted model, a hard link into
``<cache>/converted/``) and ``pulled.json`` (URLs, sizes, sha256s). ``<cache>/pulled/trust/``
remembers the size and sha256 of each URL's first download (:mod:`elmo_runtime.compat.pull`
writes all of it). This module only knows the layout, for resolving ``--model NAME``: a
pulled model is used only from a cache that is the user's (:mod:`.trust`), as a regular
file of the user's in a folder of the user's, never through a link.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ModelError
from .hashes import cache_root
from .trust import UntrustedCache, owned_dir, owned_file, trusted_cache_root

PULLED = "pulled"
MODEL = "model.onnx"


def pulled_dir(name: str, root: Path | None = None) -> Path:
    """The folder of the published model ``name`` in the cache (it may not exist)."""
    return (cache_root() if root is None else root) / PULLED / name


def pulled_model(name: str, root: Path | None = None) -> Path:
    """The converted model of the published model ``name``; ModelError (saying to run
    ``elmo pull NAME``) when it has not been pulled; UntrustedCache (one line) when the
    cache, or the model's folder or file, is not the user's or is a link."""
    path = pulled_dir(name, trusted_cache_root(root, create=False)) / MODEL
    try:
        owned_dir(path.parent.parent)
        owned_dir(path.parent)
        owned_file(path)
        found = True
    except OSError:
        found = False
    except UntrustedCache as e:
        raise UntrustedCache(f"{e}; not used (pull it again into a cache of your own)") from None
    if not found:
        raise ModelError(f"model {name!r} is published but not pulled yet: run "
                         f"`elmo pull {name}` (downloads it into {path.parent.parent})")
    return path
