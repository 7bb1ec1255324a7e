"""The Parquet/Arrow table layout of ``elmo embed`` (one row per input line: its line
index, tokens, shape and flattened vectors), written by the file writer and the Ray engine and
read back by the shard engine; pyarrow is imported only when used."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import PYARROW_HINT, ElmoError
from .values import check_dtype

PARQUET_COLUMNS = ("line", "tokens", "shape", "vectors")
PARQUET_ROWS_PER_BATCH = 256  # a row group holds at most this many rows …
PARQUET_VALUES_PER_BATCH = 1 << 25  # … or about this many floats, whichever comes first
PARQUET_OPTIONS = {"use_dictionary": ["path", "tokens.list.element"]}


def import_pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ElmoError(PYARROW_HINT) from None
    return pa, pq


def parquet_schema(dtype: str = "float32") -> Any:
    """The pyarrow schema of Parquet output (extra columns, e.g. ``path``, may precede it)."""
    pa, _ = import_pyarrow()
    value = pa.float16() if check_dtype(dtype) == np.float16 else pa.float32()
    types = [pa.int64(), pa.list_(pa.string()), pa.list_(pa.int32()), pa.list_(value)]
    return pa.schema(list(zip(PARQUET_COLUMNS, types, strict=True)))


def arrow_columns(
    tokens: Sequence[Sequence[str]], arrays: Sequence[np.ndarray], dtype: str = "float32"
) -> dict[str, Any]:
    """The ``tokens``, ``shape`` and ``vectors`` columns (pyarrow arrays) of sentences."""
    pa, _ = import_pyarrow()
    schema = parquet_schema(dtype)
    np_dtype = check_dtype(dtype)
    sizes = np.fromiter((a.size for a in arrays), dtype=np.int64, count=len(arrays))
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32)
    values = (
        np.concatenate([a.reshape(-1) for a in arrays]).astype(np_dtype, copy=False)
        if arrays
        else np.zeros(0, np_dtype)
    )
    return {
        "tokens": pa.array(tokens, schema.field("tokens").type),
        "shape": pa.array([a.shape for a in arrays], schema.field("shape").type),
        "vectors": pa.ListArray.from_arrays(pa.array(offsets), pa.array(values)),
    }


def arrow_table(
    lines: Sequence[int],
    tokens: Sequence[Sequence[str]],
    arrays: Sequence[np.ndarray],
    dtype: str = "float32",
) -> Any:
    """A pyarrow Table of :data:`PARQUET_COLUMNS`, one row per sentence."""
    pa, _ = import_pyarrow()
    columns = {"line": pa.array(lines, pa.int64()), **arrow_columns(tokens, arrays, dtype)}
    return pa.Table.from_pydict(columns, schema=parquet_schema(dtype))


def arrays_from_table(table: Any) -> list[np.ndarray]:
    """The arrays of a Parquet output table (:func:`arrow_table`), one per row."""
    shapes = table.column("shape").to_pylist()
    vectors = table.column("vectors").combine_chunks()
    offsets = vectors.offsets.to_numpy()
    values = vectors.values.to_numpy(zero_copy_only=False)
    return [values[offsets[i] : offsets[i + 1]].reshape(shape) for i, shape in enumerate(shapes)]
