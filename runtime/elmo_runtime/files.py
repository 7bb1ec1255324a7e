"""Small file helpers shared by both sides."""

from __future__ import annotations

import hashlib
from pathlib import Path

HASH_BLOCK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """The hex sha256 of a file, read a block at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()
