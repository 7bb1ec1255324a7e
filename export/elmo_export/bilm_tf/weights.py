"""The ELMo hdf5 weight layout (bilm-tf / AllenNLP ``weights.hdf5``): names, shapes, I/O.

Weights travel between modules as a plain ``dict[str, np.ndarray]`` keyed by
the hdf5 dataset names (``char_embed``, ``CNN/W_cnn_0``, …); shapes are those
of :func:`weight_shapes`, the one place that knows the TF variable names.
Torch-free (NumPy; h5py for reading and writing files).

Cells without a projection: bilm-tf builds ``LSTMCell(dim)`` without
``num_proj`` when ``projection_dim == dim``, so such files have no ``W_P_0``
(allenai/allennlp#2062). The cell output is then ``σ(o)·tanh(c)`` itself and
``proj_clip`` does not apply (TF clips only a projected output). A weight dict
without any ``W_P_0`` describes such a model (:func:`has_projection`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from elmo_runtime.errors import ElmoError
from elmo_runtime.files import atomic_path
from elmo_runtime.format.chars import CHAR_VOCAB
from elmo_runtime.format.options import ElmoOptions

Weights = dict[str, np.ndarray]
PROJECTION = "W_P_0"  # the cell projection's dataset in each LSTM cell group
WORD_EMBED = "word_embed"  # the word-embedding table of models with a word branch


def lstm_prefix(direction: int, layer: int) -> str:
    """hdf5 group of one LSTM cell: direction 0 = forward, 1 = backward."""
    return f"RNN_{direction}/RNN/MultiRNNCell/Cell{layer}/LSTMCell"


def weight_shapes(options: ElmoOptions, projection: bool = True) -> dict[str, tuple[int, ...]]:
    """Every dataset of the ELMo hdf5 layout with its expected shape.

    ``projection=False``: the layout without cell projections (no ``W_P_0``),
    possible only when ``projection_dim == dim``.
    """
    e, f, p, d = options.char_embed_dim, options.n_filters, options.projection_dim, options.lstm_dim
    # a learned code-point vocabulary (ELMoForManyLangs) has n_characters - 1 rows
    rows = CHAR_VOCAB if options.char_vocabulary == "bytes" else options.n_characters - 1
    shapes: dict[str, tuple[int, ...]] = {"char_embed": (rows, e)}
    if options.has_word_branch:  # word vectors, concatenated before the char CNN's
        shapes[WORD_EMBED] = (options.n_words, options.word_dim)
    for i, (width, num) in enumerate(options.filters):
        shapes[f"CNN/W_cnn_{i}"] = (1, width, e, num)
        shapes[f"CNN/b_cnn_{i}"] = (num,)
    for k in range(options.n_highway):
        for name in ("carry", "transform"):
            shapes[f"CNN_high_{k}/W_{name}"] = (f, f)
            shapes[f"CNN_high_{k}/b_{name}"] = (f,)
    shapes["CNN_proj/W_proj"] = (options.word_dim + f, p)
    shapes["CNN_proj/b_proj"] = (p,)
    for direction in range(2):
        for layer in range(options.n_layers):
            prefix = lstm_prefix(direction, layer)
            shapes[f"{prefix}/W_0"] = (2 * p, 4 * d)
            shapes[f"{prefix}/B"] = (4 * d,)
            if projection:
                shapes[f"{prefix}/{PROJECTION}"] = (d, p)
    return shapes


def has_projection(weights: Weights, options: ElmoOptions) -> bool:
    """Whether ``weights`` use cell projections (always, unless dim == projection_dim
    and no cell has a ``W_P_0``)."""
    if options.lstm_dim != options.projection_dim:
        return True
    return any(name.endswith("/" + PROJECTION) for name in weights)


class WeightsError(ElmoError):
    """A weight file that is unreadable or does not match its options."""


def check_weights(weights: Weights, options: ElmoOptions, where: str) -> None:
    """Every dataset present, float, finite, with the shape the options imply."""
    expected = weight_shapes(options, has_projection(weights, options))
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
    file_size = path.stat().st_size
    with f:
        for name, shape in weight_shapes(options).items():
            if not _plain_path(f, name, path):
                continue
            ds = f[name]
            if not isinstance(ds, h5py.Dataset):
                raise WeightsError(f"{path}: {name!r} is a group, expected a dataset")
            if ds.dtype not in FLOAT_DTYPES:
                raise WeightsError(f"{path}: dataset {name!r} has dtype {ds.dtype}, expected float")
            _check_declared(path, name, tuple(ds.shape), shape, file_size)
            if ds.external is not None or ds.is_virtual:
                kind = "external raw files" if ds.external is not None else "a virtual dataset"
                raise WeightsError(
                    f"{path}: dataset {name!r} keeps its data in {kind} (other files); refused: "
                    "a weights file must hold its own data"
                )
            weights[name] = np.asarray(ds[...], dtype=np.float32)
    check_weights(weights, options, str(path))
    return weights


FLOAT_DTYPES = tuple(np.dtype(t) for t in ("<f2", ">f2", "<f4", ">f4", "<f8", ">f8"))
# A dataset may declare more than the file holds (hdf5 fill values, compression), but
# beyond this many times the file's size (and MAX_UNBACKED bytes) it is refused unread.
MAX_EXPANSION = 16
MAX_UNBACKED = 64 << 20


def _check_declared(path: Path, name: str, declared: tuple[int, ...],
                    expected: tuple[int, ...], file_size: int) -> None:
    """WeightsError, before a dataset's data is read, when its declared shape is not the
    one the options imply (the projection ``W_P_0`` may be absent, never another shape)
    or when reading it would take far more memory than the file holds."""
    if declared != expected:
        raise WeightsError(f"{path}: dataset {name!r} has shape {declared}, the options "
                           f"expect {expected}; nothing was read")
    need = math.prod(declared) * 4  # float32 in memory
    if need > MAX_UNBACKED and need > MAX_EXPANSION * file_size:
        raise WeightsError(
            f"{path}: dataset {name!r} declares {need / 2**20:,.0f} MiB in a file of "
            f"{file_size / 2**20:,.1f} MiB (unwritten or compressed data); refused unread")


def _plain_path(f: Any, name: str, path: Path) -> bool:
    """Whether ``name`` exists in ``f`` through hard links only (each path part checked
    before anything is opened); external and soft links raise :class:`WeightsError`."""
    import h5py

    parts = name.split("/")
    for i in range(1, len(parts) + 1):
        sub = "/".join(parts[:i])
        link = f.get(sub, getlink=True)
        if link is None:
            return False
        if not isinstance(link, h5py.HardLink):
            kind = "an external link" if isinstance(link, h5py.ExternalLink) else "a soft link"
            raise WeightsError(
                f"{path}: {sub!r} is {kind}; refused: a weights file must hold its own data"
            )
    return True


def write_weights(path: str | Path, weights: Weights, options: ElmoOptions) -> None:
    """Write ``weights`` in the ELMo layout, atomically (temp file + rename)."""
    import h5py

    check_weights(weights, options, "weights to write")
    path = Path(path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for name in weight_shapes(options, has_projection(weights, options)):
            f.create_dataset(name, data=np.asarray(weights[name], dtype=np.float32))


__all__ = [
    "PROJECTION",
    "Weights",
    "WeightsError",
    "check_weights",
    "has_projection",
    "lstm_prefix",
    "read_weights",
    "weight_shapes",
    "write_weights",
]
