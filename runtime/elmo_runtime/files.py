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
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from .errors import ElmoError

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


def check_not_an_input(output: str | os.PathLike, inputs: Iterable[str | os.PathLike]) -> None:
    """ElmoError if ``output`` is one of ``inputs`` (same path, a symlink or a hard link).

    The one same-file check of every command that writes (``elmo embed``,
    ``elmo convert``): called before anything is written. "-" (stdin) and
    URLs are never the same file; an ``output`` that does not exist yet is none.
    """
    try:
        out = os.stat(output)
    except OSError:
        return  # not there yet: it cannot be an input
    for path in inputs:
        if str(path) == "-" or "://" in str(path):
            continue
        try:
            same = os.path.samestat(out, os.stat(path))
        except OSError:
            continue
        if same:
            raise ElmoError(
                f"{output}: is the input {path} (the same file); choose another output, "
                "nothing was written"
            )
