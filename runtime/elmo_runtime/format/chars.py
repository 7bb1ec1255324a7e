"""Tokens → bilm-tf character ids, and the one packer of the graph's token inputs.

The single source of truth for the char-id scheme (docs/elmo-spec.md, "Character ids"):

* a token is put in NFC (:func:`.bounds.normalize`, as the tokenizer does: composed
  and decomposed text get the same ids), UTF-8 encoded and truncated to
  ``max_chars - 2`` **bytes**;
* its row is ``[BOW, b0, b1, …, EOW, PAD, PAD, …]`` of length ``max_chars``;
* every sentence is wrapped in ``<S>`` and ``</S>`` rows
  (``[BOW, BOS, EOW, PAD…]`` and ``[BOW, EOS, EOW, PAD…]``);
* the literal token strings ``"<S>"`` and ``"</S>"`` *are* those boundary
  rows, not the five or six characters they spell: bilm-tf's
  ``UnicodeCharsVocabulary`` and AllenNLP's ``ELMoCharacterMapper`` map them
  to ``bos_chars`` / ``eos_chars``, so a text containing them gets the
  reference implementations' vectors;
* finally **+1** (``ID_SHIFT``) is added to every id, so an all-zero row means
  "no token".

:func:`pack` turns tokenized sentences into the graph's token inputs
(``token_chars``, ``token_index``; see :mod:`elmo_runtime.format.contract`):
each distinct token is encoded once, ``<S>`` and ``</S>`` are rows 0 and 1,
and each step points at its token's row. The runtime, the token cache and
the training data all build their inputs through it or :func:`tokens_to_ids`.

``n_characters`` of options.json is the size of the char vocabulary:
:data:`CHAR_VOCAB` (261, unshifted ids 0..260, the rows of a weight file's
``char_embed``) in files written for training, :data:`EMBED_ROWS` (262, with
the zero row of shifted id 0) for inference. Both describe the same model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ..errors import InputError
from .bounds import normalize
from .names import INPUT_TOKEN_CHARS, INPUT_TOKEN_INDEX, INPUT_WORD_IDS

BOS_CHAR = 256  # the one "character" of the <S> token
EOS_CHAR = 257  # the one "character" of the </S> token
BOW_CHAR = 258  # begin of word
EOW_CHAR = 259  # end of word
PAD_CHAR = 260  # padding inside a token row
ID_SHIFT = 1  # added to every id; 0 then means "no token"
DEFAULT_MAX_CHARS = 50
BOS_TOKEN = "<S>"  # literal tokens that mean the boundary rows (bilm-tf, AllenNLP)
EOS_TOKEN = "</S>"
CHAR_VOCAB = PAD_CHAR + 1  # 261 unshifted ids: the rows of char_embed in a weight file
EMBED_ROWS = CHAR_VOCAB + ID_SHIFT  # 262: with the zero row of shifted id 0
N_CHARACTERS = (CHAR_VOCAB, EMBED_ROWS)  # accepted values of options.json n_characters
SCHEME_NAME = "bilm-tf-bytes"  # the scheme recorded in a model's metadata
N_BOUNDARY_ROWS = 2  # pack(): token_chars rows 0 and 1 are always <S> and </S>


def scheme() -> dict[str, int | str]:
    """The constants above, as recorded in a model's metadata (``elmo_edge.char_ids``)."""
    return {
        "scheme": SCHEME_NAME,
        "bos_char": BOS_CHAR,
        "eos_char": EOS_CHAR,
        "bow_char": BOW_CHAR,
        "eow_char": EOW_CHAR,
        "pad_char": PAD_CHAR,
        "id_shift": ID_SHIFT,
    }


def boundary_row(char: int, max_chars: int = DEFAULT_MAX_CHARS) -> np.ndarray:
    """Shifted ids of a boundary token (``BOS_CHAR`` or ``EOS_CHAR``): int32 (max_chars,)."""
    row = np.full(max_chars, PAD_CHAR, dtype=np.int32)
    row[:3] = (BOW_CHAR, char, EOW_CHAR)
    return row + ID_SHIFT


def boundary_rows(max_chars: int = DEFAULT_MAX_CHARS) -> np.ndarray:
    """The ``<S>`` and ``</S>`` rows: int32 (2, max_chars)."""
    return np.stack([boundary_row(BOS_CHAR, max_chars), boundary_row(EOS_CHAR, max_chars)])


def _encode(token: str, index: int, where: Callable[[int], str] | None) -> bytes:
    try:
        return normalize(token).encode("utf-8")
    except UnicodeEncodeError as e:
        place = where(index) if where else f"token {index}"
        raise InputError(
            f"{place} {token!r} cannot be encoded as UTF-8 ({e.reason} at character "
            f"{e.start}); decode the input with errors='replace'"
        ) from None


def tokens_to_ids(
    tokens: Sequence[str],
    max_chars: int = DEFAULT_MAX_CHARS,
    where: Callable[[int], str] | None = None,
) -> np.ndarray:
    """Shifted char ids of ``tokens`` (no boundaries added): int32 (len(tokens), max_chars).

    ``"<S>"`` and ``"</S>"`` give the boundary rows. Raises InputError for a
    token that is not encodable as UTF-8 (``where(i)`` names token ``i``).
    """
    n = len(tokens)
    width = max_chars - 2
    ids = np.full((n, max_chars), PAD_CHAR + ID_SHIFT, dtype=np.int32)
    if n == 0:
        return ids
    encoded = [_encode(t, i, where)[:width] for i, t in enumerate(tokens)]
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
    for i, t in enumerate(tokens):
        if t in (BOS_TOKEN, EOS_TOKEN):
            ids[i] = boundary_row(BOS_CHAR if t == BOS_TOKEN else EOS_CHAR, max_chars)
    return ids


@dataclass(frozen=True)
class Packed:
    """The token inputs of one graph run (see :mod:`elmo_runtime.format.contract`).

    ``token_chars`` int32 (N, C): ``<S>``, ``</S>``, then each distinct token to
    encode, in order of first use. ``token_index`` int32 (B, T), T = longest
    sentence + 2: the row of ``concat(token_chars, cached)`` at each step, -1
    past a sentence's ``</S>``. ``lengths`` int64 (B,): tokens + 2 per sentence.
    ``new_tokens``: the strings of ``token_chars[2:]``. ``cached``: for each
    token found by ``pack(..., cached=…)``, what that lookup returned; its k-th
    entry is row ``N + k`` of the table.
    """

    token_chars: np.ndarray
    token_index: np.ndarray
    lengths: np.ndarray
    new_tokens: list[str]
    cached: list[int] = field(default_factory=list)
    word_ids: np.ndarray | None = None  # int32 (N,): models with a word branch only

    def feed(self) -> dict[str, np.ndarray]:
        """``{"token_chars": …, "token_index": …}`` (only valid without ``cached`` rows)."""
        if self.cached:
            raise ValueError("a packing with cached rows needs cached_vectors in its feed")
        feed = {INPUT_TOKEN_CHARS: self.token_chars, INPUT_TOKEN_INDEX: self.token_index}
        if self.word_ids is not None:
            feed[INPUT_WORD_IDS] = self.word_ids
        return feed

    def char_ids(self) -> np.ndarray:
        """The padded (B, T, C) grid of shifted ids (zero rows = padding), without cached rows."""
        if self.cached:
            raise ValueError("cached tokens have no char ids in this packing")
        grid = np.zeros((*self.token_index.shape, self.token_chars.shape[1]), dtype=np.int32)
        real = self.token_index >= 0
        grid[real] = self.token_chars[self.token_index[real]]
        return grid


def pack(
    sentences: Sequence[Sequence[str]],
    max_chars: int = DEFAULT_MAX_CHARS,
    cached: Callable[[str], int | None] | None = None,
    scheme: TokenScheme | None = None,
) -> Packed:
    """The graph's token inputs for tokenized ``sentences``, boundaries added.

    ``cached(token)``: an optional lookup (a token cache); a token for which it
    returns a value is not encoded but pointed past the encoded rows (see
    :class:`Packed`). Literal ``"<S>"`` / ``"</S>"`` tokens point at rows 0 / 1.
    Raises InputError naming the sentence and token of a string that is not
    encodable as UTF-8. ``scheme``: a model's learned vocabulary instead of
    bilm-tf bytes (:class:`TokenScheme`; its own boundary tokens, e.g.
    ``<bos>``/``<eos>``, are rows 0 / 1, its own max_chars applies, and
    ``Packed.word_ids`` is set for a model with a word branch).
    """
    bos, eos = (BOS_TOKEN, EOS_TOKEN) if scheme is None else scheme.boundary_tokens()
    codes: dict[str, int] = {bos: 0, eos: 1}  # >= 0 encoded row, <= -1 cached
    new_tokens: list[str] = []
    new_at: list[tuple[int, int]] = []  # (sentence, token) of each new token, for errors
    hits: list[int] = []
    flat: list[int] = []
    for s, sentence in enumerate(sentences):
        for j, token in enumerate(sentence):
            code = codes.get(token)
            if code is None:
                slot = cached(token) if cached is not None else None
                if slot is None:
                    code = N_BOUNDARY_ROWS + len(new_tokens)
                    new_tokens.append(token)
                    new_at.append((s, j))
                else:
                    code = -1 - len(hits)
                    hits.append(slot)
                codes[token] = code
            flat.append(code)
    n_encoded = N_BOUNDARY_ROWS + len(new_tokens)
    codes_arr = np.asarray(flat, dtype=np.int64)
    codes_arr = np.where(codes_arr < 0, n_encoded - 1 - codes_arr, codes_arr)

    lengths = np.array([len(s) + 2 for s in sentences], dtype=np.int64)
    batch = len(sentences)
    steps = int(lengths.max(initial=2))
    index = np.full((batch, steps), -1, dtype=np.int32)
    n_tokens = lengths - 2
    rows = np.repeat(np.arange(batch), n_tokens)
    starts = np.cumsum(n_tokens) - n_tokens
    cols = np.arange(len(flat)) - np.repeat(starts, n_tokens) + 1
    index[rows, cols] = codes_arr
    index[:, 0] = 0
    index[np.arange(batch), lengths - 1] = 1

    def where(i: int) -> str:
        return f"sentence {new_at[i][0]}: token {new_at[i][1]}"

    if scheme is not None:  # a learned vocabulary (ELMoForManyLangs): spec.codepoints
        rows = [bos, eos, *new_tokens]
        word_ids = scheme.word_ids(rows) if scheme.has_words else None
        return Packed(scheme.char_ids(rows), index, lengths, new_tokens, hits, word_ids)
    token_chars = np.concatenate(
        [boundary_rows(max_chars), tokens_to_ids(new_tokens, max_chars, where)]
    )
    return Packed(token_chars, index, lengths, new_tokens, hits)


class TokenScheme(Protocol):
    """Another char-id scheme for :func:`pack` (:class:`.codepoints.CodepointScheme`)."""

    has_words: bool

    def boundary_tokens(self) -> tuple[str, str]: ...

    def char_ids(self, tokens: Sequence[str]) -> np.ndarray: ...

    def word_ids(self, tokens: Sequence[str]) -> np.ndarray: ...


def batch_to_ids(
    sentences: Sequence[Sequence[str]], max_chars: int = DEFAULT_MAX_CHARS
) -> tuple[np.ndarray, np.ndarray]:
    """Shifted char ids for a batch as a padded grid, with ``<S>``/``</S>`` added.

    Returns ``(ids, lengths)``: ids is int32 (batch, max_len + 2, max_chars),
    zero past each sentence's end; lengths counts the boundaries (n + 2).
    The grid form of :func:`pack`, for callers that want (B, T, C).
    """
    packed = pack(sentences, max_chars)
    return packed.char_ids(), packed.lengths


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
