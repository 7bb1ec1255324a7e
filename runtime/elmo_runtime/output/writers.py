"""Streaming, atomic writers for embedding files.

Every format holds one array per input line: ``(L+1, n, 2P)`` for all
layers, ``(n, 2P)`` when mixed, float32 (or float16 with ``dtype="float16"``).

* hdf5: AllenNLP's ``elmo`` command layout: one dataset per line keyed by its
  line index ("0", "1", …) and a ``sentence_to_index`` (1,) vlen-str dataset
  holding ``json.dumps({line: "index"})``, keyed as AllenNLP keys it: by the
  input line stripped of surrounding whitespace (inner spaces and tabs kept;
  the last occurrence of a repeated line wins). Needs h5py (imported only
  here, only when asked for).
* npz: the same keys as ``.npy`` entries of a zip written one by one (no
  pickle); ``sentence_to_index`` is a 0-d unicode array, so
  ``np.load(path, allow_pickle=False)`` reads every entry and
  ``json.loads(z["sentence_to_index"].item())`` (or ``str(...)``) is the map.
* parquet: one row per line (:data:`PARQUET_COLUMNS`): ``line`` int64,
  ``tokens`` list<string>, ``shape`` list<int32> and ``vectors``, the array
  flattened in C order as list<float|halffloat>; :func:`arrays_from_table`
  reshapes them. Needs pyarrow.

FASTA input (:mod:`..fasta`) is written *keyed* (``open_writer(..., keyed=True)``, hdf5
and npz): one dataset per record named by its id, no ``sentence_to_index``, and in hdf5
each dataset's ``original_id`` attribute holding the id, where bio_embeddings' readers
look for it.

A writer's first key is ``first_index`` (a shard of a large run keys its
lines by their index in the whole input). :func:`open_writer` writes to
``.{name}.partial-{pid}`` next to the output and renames it only when the
``with`` block succeeds (:func:`..files.publish`: fsync, rename); on any
exception (KeyboardInterrupt included) the temp file is removed and the final
name is left untouched.
"""

from __future__ import annotations

import json
import shutil
import sys
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

try:
    import resource
except ImportError:  # Windows: no file-size limit to honour
    resource = None  # type: ignore[assignment]

from ..errors import H5PY_HINT, ElmoError, UsageError
from ..files import check_regular_output, partial_path, publish
from ..format.names import SENTENCE_TO_INDEX
from .arrow import (
    PARQUET_OPTIONS,
    PARQUET_ROWS_PER_BATCH,
    PARQUET_VALUES_PER_BATCH,
    arrow_table,
    import_pyarrow,
    parquet_schema,
)
from .values import cast, check_dtype

FORMATS = ("hdf5", "npz", "parquet")
STDOUT = "-"  # the output name that means standard output (npz only)
KEYED_FORMATS = ("hdf5", "npz")  # the formats that key arrays by a record's id
# Dictionary encoding suits the repetitive columns; on vectors it adds ~50% (measured).
# The file extensions each format owns; an OUTPUT ending in another format's is refused.
EXTENSIONS = {"hdf5": (".hdf5", ".h5"), "npz": (".npz",), "parquet": (".parquet", ".pq")}


def format_of(path: str | Path) -> str | None:
    """The format an output name's extension stands for (:data:`EXTENSIONS`), or None."""
    suffix = Path(path).suffix.lower()
    return next((fmt for fmt, exts in EXTENSIONS.items() if suffix in exts), None)


def infer_format(path: str | Path, format: str | None = None) -> str:
    """``format`` if given, else by extension: npz, parquet (.parquet, .pq) or hdf5;
    npz for ``-`` (stdout)."""
    if format is None:
        return "npz" if str(path) == STDOUT else format_of(path) or "hdf5"
    if format not in FORMATS:
        raise ElmoError(f"unknown output format {format!r}; choose one of {', '.join(FORMATS)}")
    return format


def check_extension(path: str | Path, format: str | None) -> None:
    """Refuse an output name that does not say its format: :class:`UsageError` for
    ``--format hdf5`` with ``out.npz`` and the like, and for a name ending in none of
    :data:`EXTENSIONS` without ``format`` (``elmo embed a.txt b.txt`` is two inputs more
    often than a wish for hdf5 in ``b.txt``). OUTPUT ``-`` (stdout) is npz only."""
    if str(path) == STDOUT:
        if format not in (None, "npz"):
            raise UsageError(
                f"OUTPUT - (stdout) is written as npz only ({format} needs a file it can seek "
                "in); name a file or drop --format"
            )
        return
    named = format_of(path)
    if format is not None and named is not None and named != format:
        raise UsageError(
            f"{path}: the extension says {named} but --format is {format}; rename the output "
            f"or drop --format"
        )
    if format is None and named is None:
        exts = ", ".join(e for group in EXTENSIONS.values() for e in group)
        raise UsageError(
            f"{path}: the output name ends in none of {exts}; name the file *.hdf5 (or pass "
            "--format), and give one INPUT (several need --engine ray)"
        )


@contextmanager
def _write_errors(path: Path) -> Iterator[None]:
    """OSError as ElmoError naming ``path``; BrokenPipeError (the reader of standard output
    left) passes through for the CLI to end quietly."""
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as e:
        raise ElmoError(f"{path}: cannot write the output ({e})") from None


HDF5_HEADROOM = 4 << 20  # bytes kept free beyond each array: hdf5 metadata and cache flushes


def check_room(tmp: Path, nbytes: int, path: Path) -> None:
    """ElmoError unless the disk and the process's file-size limit (RLIMIT_FSIZE) leave
    room for ``nbytes`` more bytes in ``tmp`` plus :data:`HDF5_HEADROOM`."""
    need = nbytes + HDF5_HEADROOM
    free = shutil.disk_usage(tmp.parent).free
    if free < need:
        raise ElmoError(
            f"{path}: cannot write the output (no space left on the device: "
            f"{free} bytes free, {need} needed); nothing was written"
        )
    if resource is not None:
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit != resource.RLIM_INFINITY and tmp.stat().st_size + need > limit:
            raise ElmoError(
                f"{path}: cannot write the output (it would pass the file-size limit of "
                f"{limit} bytes, ulimit -f); nothing was written"
            )


class Writer(ABC):
    """Appends one array per sentence, keyed by ``first_index`` + its position."""

    def __init__(self, path: Path, dtype: str = "float32", first_index: int = 0):
        self.path = path  # the final name, for messages
        self.dtype = check_dtype(dtype)
        self.first_index = first_index
        self.count = 0

    def write(self, tokens: Sequence[str], array: np.ndarray, key: str | None = None) -> None:
        """Store ``array`` as the next entry for the sentence ``tokens``.

        ``key`` is the sentence's ``sentence_to_index`` key: its input line,
        stripped (default: the tokens joined by one space).
        """
        index = self.first_index + self.count
        data = cast(array, self.dtype, f"line {index + 1}")
        with _write_errors(self.path):
            self._put(index, tokens, data, " ".join(tokens) if key is None else key)
        self.count += 1

    def finish(self) -> None:
        """Write what remains and close the file."""
        with _write_errors(self.path):
            self._finish()

    @abstractmethod
    def _put(self, index: int, tokens: Sequence[str], array: np.ndarray, key: str) -> None: ...

    @abstractmethod
    def _finish(self) -> None: ...

    @abstractmethod
    def close(self) -> None:
        """Close the file (unfinished, if :meth:`finish` was not called)."""


class AllenNlpWriter(Writer):
    """The hdf5/npz layout: arrays keyed "0", "1", … and a sentence_to_index map; or,
    ``keyed``, each array under its own ``key`` (unique, checked by the caller) and no map."""

    def __init__(self, path: Path, dtype: str = "float32", first_index: int = 0,
                 keyed: bool = False):
        super().__init__(path, dtype, first_index)
        self._index: dict[str, str] = {}
        self.keyed = keyed

    def _put(self, index: int, tokens: Sequence[str], array: np.ndarray, key: str) -> None:
        if self.keyed:
            self._store(key, array)
            return
        self._store(str(index), array)
        self._index[key] = str(index)

    def _finish(self) -> None:
        self._close_with_index(None if self.keyed else json.dumps(self._index))

    @abstractmethod
    def _store(self, key: str, array: np.ndarray) -> None: ...

    @abstractmethod
    def _close_with_index(self, sentence_to_index: str | None) -> None: ...


class Hdf5Writer(AllenNlpWriter):
    """hdf5 output. libhdf5 cannot survive a failed write (h5py prints tracebacks from its
    finalizers, then the process segfaults), so room for each write is checked first
    (:func:`check_room`): a full disk or a file-size limit is one ElmoError, the temp file
    is closed and removed by :func:`open_writer`."""

    def __init__(self, tmp: Path, path: Path, dtype: str = "float32", first_index: int = 0,
                 keyed: bool = False):
        super().__init__(path, dtype, first_index, keyed)
        self._h5py = import_h5py()
        self._tmp = tmp
        with _write_errors(self.path):
            self._file = self._h5py.File(tmp, "w")

    def _store(self, key: str, array: np.ndarray) -> None:
        check_room(self._tmp, array.nbytes, self.path)
        dataset = self._file.create_dataset(key, data=array)
        if self.keyed:
            dataset.attrs["original_id"] = key

    def _close_with_index(self, sentence_to_index: str | None) -> None:
        if sentence_to_index is None:
            self._file.close()
            return
        check_room(self._tmp, len(sentence_to_index.encode("utf-8")), self.path)
        dtype = self._h5py.string_dtype(encoding="utf-8")
        self._file.create_dataset(SENTENCE_TO_INDEX, (1,), dtype=dtype)[0] = sentence_to_index
        self._file.close()

    def close(self) -> None:
        self._file.close()


class NpzWriter(AllenNlpWriter):
    """npz output; ``tmp`` may be a binary stream that cannot seek (stdout)."""

    def __init__(self, tmp: Path | BinaryIO, path: Path, dtype: str = "float32",
                 first_index: int = 0, keyed: bool = False):
        super().__init__(path, dtype, first_index, keyed)
        with _write_errors(self.path):
            self._zip = zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True)

    def _store(self, key: str, array: np.ndarray) -> None:
        with self._zip.open(f"{key}.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array(f, array, allow_pickle=False)

    def _close_with_index(self, sentence_to_index: str | None) -> None:
        if sentence_to_index is not None:
            self._store(SENTENCE_TO_INDEX, np.array(sentence_to_index))
        self._zip.close()

    def close(self) -> None:
        self._zip.close()


class ParquetWriter(Writer):
    """Rows of :data:`PARQUET_COLUMNS`, written a batch of rows at a time."""

    def __init__(self, tmp: Path, path: Path, dtype: str = "float32", first_index: int = 0):
        super().__init__(path, dtype, first_index)
        pa, pq = import_pyarrow()
        self._pa = pa
        with _write_errors(self.path):
            self._file = pq.ParquetWriter(tmp, parquet_schema(self.dtype.name), **PARQUET_OPTIONS)
        self._rows: list[tuple[int, Sequence[str], np.ndarray]] = []
        self._values = 0

    def _put(self, index: int, tokens: Sequence[str], array: np.ndarray, key: str) -> None:
        self._rows.append((index, list(tokens), array))
        self._values += array.size
        if len(self._rows) >= PARQUET_ROWS_PER_BATCH or self._values >= PARQUET_VALUES_PER_BATCH:
            self._flush()

    def _flush(self) -> None:
        lines, tokens, arrays = zip(*self._rows, strict=True)
        self._file.write_table(arrow_table(lines, tokens, arrays, self.dtype.name))
        self._rows, self._values = [], 0

    def _finish(self) -> None:
        if self._rows:
            self._flush()
        self._file.close()

    def close(self) -> None:
        self._file.close()


WRITERS: dict[str, type[Writer]] = {"hdf5": Hdf5Writer, "npz": NpzWriter, "parquet": ParquetWriter}


def import_h5py() -> Any:
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
    check_regular_output(path)  # a device, FIFO or symlink would be replaced by the rename
    return path


@contextmanager
def open_writer(
    path: str | Path, format: str | None = None, dtype: str = "float32", first_index: int = 0,
    keyed: bool = False,
) -> Iterator[Writer]:
    """A writer whose file appears at ``path`` only if the ``with`` block succeeds.

    ``keyed``: each array under the key given to :meth:`Writer.write` (hdf5, npz only).
    ``path`` "-" streams npz to standard output instead (a zip written as it goes,
    readable by ``np.load``; a failed run leaves no complete zip there).
    """
    if str(path) == STDOUT:
        with _stdout_writer(format, dtype, first_index, keyed) as writer:
            yield writer
        return
    path = check_output(path)
    tmp = partial_path(path)  # the steps of files.atomic_path, with write errors as ElmoError
    fmt = infer_format(path, format)
    if keyed and fmt not in KEYED_FORMATS:
        raise UsageError(f"{path}: {fmt} output has no keys by id; write "
                         f"{' or '.join(KEYED_FORMATS)}")
    try:
        kwargs = {"keyed": True} if keyed else {}
        writer = WRITERS[fmt](tmp, path, dtype, first_index, **kwargs)
        try:
            yield writer
            writer.finish()
        except BaseException:
            with suppress(Exception):  # the original error is the one worth reporting
                writer.close()
            raise
        with _write_errors(path):
            publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class _Cuttable:
    """A write-only stream over ``out`` that drops every write once :meth:`cut`: a failed
    run's zip is not finished on stdout (no central directory), so no reader mistakes it
    for a complete npz."""

    def __init__(self, out: BinaryIO):
        self._out = out
        self._cut = False

    def write(self, data: bytes) -> int:
        if not self._cut:
            self._out.write(data)
        return len(data)

    def flush(self) -> None:
        if not self._cut:
            self._out.flush()

    def cut(self) -> None:
        self._cut = True


@contextmanager
def _stdout_writer(format: str | None, dtype: str, first_index: int,
                   keyed: bool) -> Iterator[Writer]:
    check_extension(STDOUT, format)
    if sys.stdout.isatty():
        raise ElmoError("OUTPUT - is a terminal; redirect it (elmo embed in.txt - > out.npz) "
                        "or name a file")
    sys.stdout.flush()
    stream = _Cuttable(sys.stdout.buffer)
    writer = NpzWriter(stream, Path(STDOUT), dtype, first_index,  # type: ignore[arg-type]
                       keyed=keyed)
    try:
        yield writer
        writer.finish()
    except BaseException:
        stream.cut()
        with suppress(Exception):
            writer.close()
        raise
    stream.flush()
