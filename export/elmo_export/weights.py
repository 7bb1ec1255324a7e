"""Read and write the ELMo hdf5 weight layout (bilm-tf / AllenNLP ``weights.hdf5``).

Weights travel between modules as a plain ``dict[str, np.ndarray]`` keyed by
the hdf5 dataset names (``char_embed``, ``CNN/W_cnn_0``, …); shapes are those
of :meth:`ElmoOptions.weight_shapes`, the one place that knows them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from elmo_runtime.errors import ElmoError
from elmo_runtime.files import atomic_path
from elmo_runtime.spec.options import ElmoOptions, lstm_prefix

Weights = dict[str, np.ndarray]


class WeightsError(ElmoError):
    """A weight file that is unreadable or does not match its options."""


def check_weights(weights: Weights, options: ElmoOptions, where: str) -> None:
    """Every dataset present, float, finite, with the shape the options imply."""
    expected = options.weight_shapes()
    for name, shape in expected.items():
        if name not in weights:
            raise WeightsError(f"{where}: dataset {name!r} is missing (expected shape {shape})")
        arr = weights[name]
        if tuple(arr.shape) != shape:
            raise WeightsError(
                f"{where}: dataset {name!r} has shape {tuple(arr.shape)}, "
                f"the options expect {shape}"
            )
        if not np.issubdtype(arr.dtype, np.floating):
            raise WeightsError(f"{where}: dataset {name!r} has dtype {arr.dtype}, expected float")
        if not np.isfinite(arr).all():
            raise WeightsError(f"{where}: dataset {name!r} holds NaN or infinite values")


def read_weights(path: str | Path, options: ElmoOptions) -> Weights:
    """Load and validate an ELMo weights.hdf5 against ``options``."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise WeightsError(f"{path}: not a readable HDF5 file ({e})") from None
    weights: Weights = {}
    with f:
        for name in options.weight_shapes():
            if name not in f:
                continue
            ds = f[name]
            if not isinstance(ds, h5py.Dataset):
                raise WeightsError(f"{path}: {name!r} is a group, expected a dataset")
            if not np.issubdtype(ds.dtype, np.floating):
                raise WeightsError(f"{path}: dataset {name!r} has dtype {ds.dtype}, expected float")
            weights[name] = np.asarray(ds[...], dtype=np.float32)
    check_weights(weights, options, str(path))
    return weights


def write_weights(path: str | Path, weights: Weights, options: ElmoOptions) -> None:
    """Write ``weights`` in the ELMo layout, atomically (temp file + rename)."""
    import h5py

    check_weights(weights, options, "weights to write")
    path = Path(path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for name in options.weight_shapes():
            f.create_dataset(name, data=np.asarray(weights[name], dtype=np.float32))


def random_weights(options: ElmoOptions, seed: int = 0, scale: float = 1.0) -> Weights:
    """Seeded weights with 1/sqrt(fan_in) scale (times ``scale``): for tests and benches."""
    rng = np.random.default_rng(seed)
    weights: Weights = {}
    for name, shape in options.weight_shapes().items():
        if name == "char_embed":
            w = rng.standard_normal(shape)
        elif len(shape) == 1:
            w = 0.1 * rng.standard_normal(shape)
        else:
            fan_in = int(np.prod(shape[:-1]))
            w = rng.standard_normal(shape) / np.sqrt(fan_in)
        weights[name] = (scale * w).astype(np.float32)
    return weights


__all__ = [
    "Weights",
    "WeightsError",
    "check_weights",
    "lstm_prefix",
    "random_weights",
    "read_weights",
    "write_weights",
]
