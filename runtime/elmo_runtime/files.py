"""Small file helpers shared by both sides: hashing and the one atomic write.

Every output of elmo-edge (embeddings, shards, manifests, models, checkpoints,
corpora) is written through :func:`atomic_path`: to ``.{name}.partial-{pid}``
beside the final name, flushed to the disk (fsync), renamed over the final
name, and the directory entry flushed too. An error or an interrupt removes
the temp file and leaves the final name untouched. :data:`PARTIAL` is the
marker that tells a temp file of a killed run.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

HASH_BLOCK = 1 << 20
PARTIAL = ".partial-"


def sha256_file(path: str | Path) -> str:
    """The hex sha256 of a file, read a block at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def partial_path(path: str | Path) -> Path:
    """The temp name beside ``path`` that this process writes before renaming."""
    path = Path(path)
    return path.with_name(f".{path.name}{PARTIAL}{os.getpid()}")


def is_partial(path: str | Path) -> bool:
    """Whether ``path`` is the temp file of a (possibly killed) write."""
    name = Path(path).name
    return name.startswith(".") and PARTIAL in name


def fsync_path(path: str | Path) -> None:
    """Flush a file's (or a directory's) data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: str | Path, path: str | Path) -> None:
    """Flush ``tmp``, rename it over ``path`` and flush the directory: the atomic step."""
    fsync_path(tmp)
    os.replace(tmp, path)
    with suppress(OSError):  # some filesystems cannot fsync a directory; the rename is done
        fsync_path(Path(path).parent)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temp path beside ``path``: published over ``path`` when the block succeeds, else removed.

    Whatever happens inside the block (an error, Ctrl-C), no half-written file
    is ever left under the final name, and what is renamed is on the disk.
    """
    path = Path(path)
    tmp = partial_path(path)
    try:
        yield tmp
        publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def format_mib(size: int) -> str:
    """A size in bytes as every command prints one: ``"11.5 MiB"`` (2**20 bytes)."""
    return f"{size / 2**20:.1f} MiB"
