"""The user cache's root, and a model file's sha256 remembered there (hashed once, not per use).

``<cache>/index/<hash of the real path>.json`` holds a model's path, its
:func:`file_stamp` and its sha256, sealed with the cache's secret
(:func:`.trust.seal`); a file whose stamp is unchanged is not read again. An
entry that is not sealed, a link, or another user's is not believed, and a
cache that is not the user's (:func:`.trust.trusted_cache_root`) is not read
or written: the model is hashed each time. The prepared copies are keyed by that sha256
(:mod:`.prepared.cache`) and run directories record it
(:mod:`elmo_runtime.output.rundir`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

from ..errors import ElmoError
from ..files import sha256_file, write_text_atomic
from .trust import ENV_CACHE as ENV_CACHE  # where the cache is: trust.cache_root
from .trust import UntrustedCache, private_dir, read_owned, seal, sealed, trusted_cache_root
from .trust import cache_root as cache_root

INDEX = "index"


def file_stamp(path: Path) -> dict[str, int]:
    """What tells a file's content unchanged without reading it: size, mtime, ctime, inode.

    ctime: no write can keep it, not even one that resets mtime. Raises OSError.
    """
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
            "ino": st.st_ino}


def model_sha256(model: Path, root: Path | None = None) -> str:
    """sha256 of ``model``, remembered in ``root/index`` by path and :func:`file_stamp`.

    ``root``: the cache (default :func:`cache_root`). A cache that is not the
    user's, or cannot be written, only costs the hash next time. Raises OSError
    when ``model`` cannot be read.
    """
    stamp = file_stamp(model)
    real = str(model.resolve())
    try:
        root = trusted_cache_root(root)
    except (OSError, UntrustedCache):
        return sha256_file(model)
    entry = root / INDEX / (hashlib.sha256(real.encode()).hexdigest()[:32] + ".json")
    with contextlib.suppress(OSError, ValueError, UntrustedCache):
        known = json.loads(read_owned(entry))
        if (isinstance(known, dict) and known.get("stamp") == stamp
                and known.get("path") == real and sealed(root, _record(known),
                                                         known.get("seal"))):
            return str(known["sha256"])
    digest = sha256_file(model)
    with contextlib.suppress(OSError, ElmoError):  # e.g. a link in the entry's place
        private_dir(root / INDEX)
        record = {"path": real, "stamp": stamp, "sha256": digest}
        write_text_atomic(entry, json.dumps({**record, "seal": seal(root, record)}, indent=1))
    return digest


def _record(entry: dict[str, object]) -> dict[str, object]:
    """What an index entry's seal covers."""
    return {k: entry.get(k) for k in ("path", "stamp", "sha256")}
