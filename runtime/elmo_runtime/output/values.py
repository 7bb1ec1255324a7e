"""The value types an output file may store (``--dtype``): checked once, cast safely."""

from __future__ import annotations

import numpy as np

from ..errors import ElmoError

DTYPES = ("float32", "float16")


def check_dtype(dtype: str) -> np.dtype:
    """The NumPy dtype for a ``--dtype`` name ("float32" or "float16")."""
    if dtype not in DTYPES:
        raise ElmoError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    return np.dtype(dtype)


def cast(array: np.ndarray, dtype: np.dtype, where: str) -> np.ndarray:
    """``array`` as ``dtype``; ElmoError if float16 would turn a finite value into inf."""
    out = np.ascontiguousarray(array, dtype=dtype)
    if dtype == np.float16 and not np.isfinite(out).all() and np.isfinite(array).all():
        raise ElmoError(f"{where}: a value exceeds the float16 range; use --dtype float32")
    return out
