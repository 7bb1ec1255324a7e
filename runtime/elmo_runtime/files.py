"""Small file helpers shared by both sides."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HASH_BLOCK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """The hex sha256 of a file, read a block at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temp path beside ``path``: renamed over ``path`` when the block succeeds, else removed.

    Whatever happens inside the block (an error, Ctrl-C), no half-written file
    is ever left under the final name.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
