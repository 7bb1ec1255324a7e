"""Tokens → bilm-tf character ids, vectorized with NumPy.

The single source of truth for the char-id scheme (ELMO_SPEC.md):

* a token is UTF-8 encoded and truncated to ``max_chars - 2`` **bytes**;
* its row is ``[BOW, b0, b1, …, EOW, PAD, PAD, …]`` of length ``max_chars``;
* every sentence is wrapped in ``<S>`` and ``</S>`` rows;
* finally **+1** is added to every id, so an all-zero row means "no token".

The model graph receives these shifted ids with the boundaries already in
place; the runtime removes the boundary positions from the outputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BOS_CHAR = 256  # the one "character" of the <S> token
EOS_CHAR = 257  # the one "character" of the </S> token
BOW_CHAR = 258  # begin of word
EOW_CHAR = 259  # end of word
PAD_CHAR = 260  # padding inside a token row
ID_SHIFT = 1  # added to every id; 0 then means "no token"
DEFAULT_MAX_CHARS = 50


def scheme() -> dict[str, int]:
    """The constants above, as recorded in a model's metadata."""
    return {
        "bos_char": BOS_CHAR,
        "eos_char": EOS_CHAR,
        "bow_char": BOW_CHAR,
        "eow_char": EOW_CHAR,
        "pad_char": PAD_CHAR,
        "id_shift": ID_SHIFT,
    }


def _boundary_row(char: int, max_chars: int) -> np.ndarray:
    row = np.full(max_chars, PAD_CHAR, dtype=np.int32)
    row[:3] = (BOW_CHAR, char, EOW_CHAR)
    return row + ID_SHIFT


def tokens_to_ids(tokens: Sequence[str], max_chars: int = DEFAULT_MAX_CHARS) -> np.ndarray:
    """Shifted char ids of ``tokens`` (no boundaries): int32 (len(tokens), max_chars)."""
    n = len(tokens)
    width = max_chars - 2
    ids = np.full((n, max_chars), PAD_CHAR + ID_SHIFT, dtype=np.int32)
    if n == 0:
        return ids
    encoded = [t.encode("utf-8")[:width] for t in tokens]
    lengths = np.fromiter((len(b) for b in encoded), dtype=np.int64, count=n)
    # Pad every token to `width` bytes; which pad byte is used does not matter
    # because the mask below keeps only the first `length` bytes of each row.
    packed = b"".join(b.ljust(width, b"\0") for b in encoded)
    data = np.frombuffer(packed, dtype=np.uint8).reshape(n, width).astype(np.int32)
    body = ids[:, 1 : width + 1]
    keep = np.arange(width)[None, :] < lengths[:, None]
    body[keep] = data[keep] + ID_SHIFT
    ids[:, 0] = BOW_CHAR + ID_SHIFT
    ids[np.arange(n), lengths + 1] = EOW_CHAR + ID_SHIFT
    return ids


def batch_to_ids(
    sentences: Sequence[Sequence[str]], max_chars: int = DEFAULT_MAX_CHARS
) -> tuple[np.ndarray, np.ndarray]:
    """Shifted char ids for a batch, with ``<S>``/``</S>`` added.

    Returns ``(ids, lengths)``: ids is int32 (batch, max_len + 2, max_chars),
    zero past each sentence's end; lengths counts the boundaries (n + 2).
    """
    lengths = np.array([len(s) + 2 for s in sentences], dtype=np.int64)
    batch = len(sentences)
    steps = int(lengths.max()) if batch else 2
    ids = np.zeros((batch, steps, max_chars), dtype=np.int32)
    flat = [tok for s in sentences for tok in s]
    token_ids = tokens_to_ids(flat, max_chars)
    rows = np.repeat(np.arange(batch), lengths - 2)
    starts = np.cumsum(lengths - 2) - (lengths - 2)
    cols = np.arange(len(flat)) - np.repeat(starts, lengths - 2) + 1
    ids[rows, cols] = token_ids
    ids[:, 0] = _boundary_row(BOS_CHAR, max_chars)
    ids[np.arange(batch), lengths - 1] = _boundary_row(EOS_CHAR, max_chars)
    return ids, lengths


def index_char_ids(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Deduplicate the token rows of a padded batch ``(B, T, C)``.

    Returns ``(token_chars, token_index)``: the distinct non-zero rows
    (int32 ``(N, C)``) and, per step, the row it uses or -1 for padding
    (int32 ``(B, T)``).
    """
    ids = np.asarray(ids, dtype=np.int32)
    batch, steps, width = ids.shape
    flat = ids.reshape(-1, width)
    real = flat.any(axis=1)
    token_chars, inverse = np.unique(flat[real], axis=0, return_inverse=True)
    index = np.full(batch * steps, -1, dtype=np.int32)
    index[real] = inverse.reshape(-1)
    return token_chars.astype(np.int32), index.reshape(batch, steps)
