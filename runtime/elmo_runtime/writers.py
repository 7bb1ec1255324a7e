"""Streaming, atomic writers for embedding files.

Both formats hold one float32 array per input line under the keys "0", "1",
… (``(L+1, n, 2P)`` for all layers, ``(n, 2P)`` when mixed) and a
``sentence_to_index`` entry: ``json.dumps({"tok tok tok": "index"})`` (the
last occurrence of a repeated sentence wins), as AllenNLP's ``elmo`` command
writes them.

* hdf5: AllenNLP's layout; ``sentence_to_index`` is a (1,) vlen-str dataset.
  Needs h5py (imported only here, only when asked for).
* npz: a zip of ``.npy`` entries written one by one (no pickle);
  ``sentence_to_index`` is a 0-d unicode array, so
  ``np.load(path, allow_pickle=False)`` reads every entry.

:func:`open_writer` writes to ``.{name}.partial-{pid}`` next to the output
and renames it only when the ``with`` block succeeds; on any exception
(KeyboardInterrupt included) the temp file is removed and the final name is
left untouched.
"""

from __future__ import annotations

import json
import os
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ElmoError

FORMATS = ("hdf5", "npz")
SENTENCE_TO_INDEX = "sentence_to_index"
H5PY_HINT = "hdf5 output needs h5py: pip install 'elmo-edge[hdf5]' (or use --format npz)"


def infer_format(path: str | Path, format: str | None = None) -> str:
    """``format`` if given, else "npz" for a ``.npz`` path and "hdf5" otherwise."""
    if format is None:
        return "npz" if Path(path).suffix.lower() == ".npz" else "hdf5"
    if format not in FORMATS:
        raise ElmoError(f"unknown output format {format!r}; choose one of {', '.join(FORMATS)}")
    return format


@contextmanager
def _write_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as e:
        raise ElmoError(f"{path}: cannot write the output ({e})") from None


class Writer(ABC):
    """Appends one array per sentence, keyed by its position; tracks sentence_to_index."""

    def __init__(self, path: Path):
        self.path = path  # the final name, for messages
        self.count = 0
        self._index: dict[str, str] = {}

    def write(self, tokens: Sequence[str], array: np.ndarray) -> None:
        """Store ``array`` as the next entry ("0", "1", …) for the sentence ``tokens``."""
        key = str(self.count)
        with _write_errors(self.path):
            self._put(key, np.ascontiguousarray(array, dtype=np.float32))
        self._index[" ".join(tokens)] = key
        self.count += 1

    def finish(self) -> None:
        """Write sentence_to_index and close the file."""
        with _write_errors(self.path):
            self._finish(json.dumps(self._index))

    @abstractmethod
    def _put(self, key: str, array: np.ndarray) -> None: ...

    @abstractmethod
    def _finish(self, sentence_to_index: str) -> None: ...

    @abstractmethod
    def close(self) -> None:
        """Close the file (unfinished, if :meth:`finish` was not called)."""


class Hdf5Writer(Writer):
    def __init__(self, tmp: Path, path: Path):
        super().__init__(path)
        self._h5py = _h5py()
        with _write_errors(self.path):
            self._file = self._h5py.File(tmp, "w")

    def _put(self, key: str, array: np.ndarray) -> None:
        self._file.create_dataset(key, data=array)

    def _finish(self, sentence_to_index: str) -> None:
        dtype = self._h5py.string_dtype(encoding="utf-8")
        self._file.create_dataset(SENTENCE_TO_INDEX, (1,), dtype=dtype)[0] = sentence_to_index
        self._file.close()

    def close(self) -> None:
        self._file.close()


class NpzWriter(Writer):
    def __init__(self, tmp: Path, path: Path):
        super().__init__(path)
        with _write_errors(self.path):
            self._zip = zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True)

    def _put(self, key: str, array: np.ndarray) -> None:
        with self._zip.open(f"{key}.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array(f, array, allow_pickle=False)

    def _finish(self, sentence_to_index: str) -> None:
        self._put(SENTENCE_TO_INDEX, np.array(sentence_to_index))
        self._zip.close()

    def close(self) -> None:
        self._zip.close()


WRITERS: dict[str, type[Writer]] = {"hdf5": Hdf5Writer, "npz": NpzWriter}


def _h5py() -> Any:
    try:
        import h5py
    except ImportError:
        raise ElmoError(H5PY_HINT) from None
    return h5py


def check_output(path: str | Path) -> Path:
    """Raise ElmoError unless ``path`` can become an output file (its directory exists)."""
    path = Path(path)
    directory = path.parent
    if not directory.is_dir():
        raise ElmoError(f"{path}: directory {directory} does not exist")
    if path.is_dir():
        raise ElmoError(f"{path}: is a directory; give a file name for the output")
    return path


@contextmanager
def open_writer(path: str | Path, format: str | None = None) -> Iterator[Writer]:
    """A writer whose file appears at ``path`` only if the ``with`` block succeeds."""
    path = check_output(path)
    tmp = path.parent / f".{path.name}.partial-{os.getpid()}"
    try:
        writer = WRITERS[infer_format(path, format)](tmp, path)
        try:
            yield writer
            writer.finish()
        except BaseException:
            with suppress(Exception):  # the original error is the one worth reporting
                writer.close()
            raise
        with _write_errors(path):
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
