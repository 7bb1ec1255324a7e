"""The user cache's root, and a model file's sha256 remembered there (hashed once, not per use).

``<cache>/index/<hash of the real path>.json`` holds a model's path, its
:func:`file_stamp` and its sha256; a file whose stamp is unchanged is not
read again. The prepared copies are keyed by that sha256
(:mod:`.prepared.cache`) and run directories record it
(:mod:`elmo_runtime.output.rundir`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

from ..files import sha256_file, write_text_atomic

ENV_CACHE = "ELMO_EDGE_CACHE"
INDEX = "index"


def cache_root() -> Path:
    """The elmo-edge cache directory (``$ELMO_EDGE_CACHE``, XDG cache, or ``~/.cache``)."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "elmo-edge"


def file_stamp(path: Path) -> dict[str, int]:
    """What tells a file's content unchanged without reading it: size, mtime, ctime, inode.

    ctime: no write can keep it, not even one that resets mtime. Raises OSError.
    """
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
            "ino": st.st_ino}


def model_sha256(model: Path, root: Path | None = None) -> str:
    """sha256 of ``model``, remembered in ``root/index`` by path and :func:`file_stamp`.

    ``root``: the cache (default :func:`cache_root`). A cache that cannot be
    written only costs the hash next time. Raises OSError when ``model``
    cannot be read.
    """
    root = cache_root() if root is None else root
    stamp = file_stamp(model)
    real = str(model.resolve())
    entry = root / INDEX / (hashlib.sha256(real.encode()).hexdigest()[:32] + ".json")
    with contextlib.suppress(OSError, ValueError):
        known = json.loads(entry.read_text(encoding="utf-8"))
        if (isinstance(known, dict) and known.get("stamp") == stamp
                and known.get("path") == real):
            return str(known["sha256"])
    digest = sha256_file(model)
    with contextlib.suppress(OSError):
        entry.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(entry, json.dumps({"path": real, "stamp": stamp, "sha256": digest},
                                            indent=1))
    return digest
