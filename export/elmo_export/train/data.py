"""Corpus → vocabulary → training batches, streamed from disk.

A corpus is one or more UTF-8 text files, one sentence a line (a BOM at
the start of a file is skipped, as in every text input). One pass
indexes the byte offset of every non-blank line (8 bytes a line in memory;
the text stays on disk), counts tokens and, when no vocabulary is given,
word frequencies. Lines are then read back by offset in a seeded order that
changes every epoch, so shuffling needs no buffer and the data position is
two integers.

Batches follow bilm-tf: each of the ``rows`` rows of a batch is an endless
stream of sentences ``<S> w1 … wn </S>``, cut into windows of ``unroll``
steps; the backward stream holds the same sentences, each reversed
(``</S> wn … w1 <S>``), so both LSTM stacks run forward in their own time and
carry their states from one window to the next. The char ids of a window's
distinct tokens come from the one packer, :func:`elmo_runtime.format.chars.pack`.

A vocabulary file (bilm-tf's format) holds one token a line; a line
``token count`` (a frequency column, as many tools write) is read as the
token with its count ignored. Any other line with whitespace inside is
refused with its file and line: a token never contains whitespace.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np
from elmo_runtime.corpus import BOM
from elmo_runtime.errors import ElmoError
from elmo_runtime.files import read_text, write_text_atomic
from elmo_runtime.format.chars import pack

BOS, EOS, UNK = "<S>", "</S>", "<UNK>"
UTF8_BOM = BOM.encode("utf-8")
SPECIAL_TOKENS = (BOS, EOS, UNK)

Tokenizer = Callable[[str], list[str]]


class DataError(ElmoError):
    """A corpus or vocabulary file that cannot be used for training."""


# ---------------------------------------------------------------------------- vocabulary


class Vocab:
    """Token ↔ id; ``<S>``, ``</S>`` and ``<UNK>`` are always present.

    Raises DataError for a token that is empty or holds whitespace, a token
    listed twice, or missing special tokens.
    """

    def __init__(self, tokens: Sequence[str], where: str = "vocabulary") -> None:
        self.tokens = list(tokens)
        self.index: dict[str, int] = {}
        for i, token in enumerate(self.tokens):
            if not token or any(ch.isspace() for ch in token):
                raise DataError(f"{where}: token {i + 1} {token!r} is empty or holds whitespace; "
                                "a token is one word without spaces")
            if token in self.index:
                raise DataError(f"{where}: token {token!r} appears twice (lines "
                                f"{self.index[token] + 1} and {i + 1})")
            self.index[token] = i
        missing = [t for t in SPECIAL_TOKENS if t not in self.index]
        if missing:
            raise DataError(
                f"{where}: the special tokens {', '.join(missing)} are missing; a bilm-tf "
                f"vocabulary lists {', '.join(SPECIAL_TOKENS)} first, then one token a line"
            )
        self.unk = self.index[UNK]

    def __len__(self) -> int:
        return len(self.tokens)

    def id(self, token: str) -> int:
        return self.index.get(token, self.unk)

    @classmethod
    def from_file(cls, path: str | Path) -> Vocab:
        """A bilm-tf vocabulary file: one token a line, or ``token count`` lines.

        A BOM is skipped; blank lines are ignored. Raises DataError naming
        ``file:line`` for a line that is neither ``token`` nor ``token count``
        (an integer count), and as :class:`Vocab` does.
        """
        path = Path(path)
        text = read_text(path, DataError, "vocabulary file", encoding="utf-8-sig")
        tokens = []
        for lineno, line in enumerate(text.split("\n"), 1):
            fields = line.split()
            if len(fields) == 2 and _is_count(fields[1]):
                fields = fields[:1]
            if len(fields) > 1:
                raise DataError(f"{path}:{lineno}: {line.strip()!r} is not a token: expected one "
                                "token a line, or 'token count' (tokens have no whitespace)")
            tokens.extend(fields)
        return cls(tokens, str(path))

    def write(self, path: str | Path) -> None:
        """One token a line, atomically."""
        write_text_atomic(path, "".join(t + "\n" for t in self.tokens))


def _is_count(field: str) -> bool:
    return field.isascii() and field.isdigit()


def build_vocab(counts: Counter[str], max_size: int | None = None) -> Vocab:
    """Special tokens, then the corpus words by falling frequency (ties alphabetical)."""
    if max_size is not None and max_size <= len(SPECIAL_TOKENS):
        raise DataError(f"--vocab-size must exceed {len(SPECIAL_TOKENS)} (the special tokens), "
                        f"found {max_size}")
    words = sorted((w for w in counts if w not in SPECIAL_TOKENS), key=lambda w: (-counts[w], w))
    if max_size is not None:
        words = words[: max_size - len(SPECIAL_TOKENS)]
    return Vocab([*SPECIAL_TOKENS, *words])


# ---------------------------------------------------------------------------- corpus


@dataclass
class Corpus:
    """Non-blank lines of some text files, indexed by byte offset; read back on demand."""

    paths: list[Path]
    offsets: np.ndarray  # int64 (n_lines,): offset of each line in the concatenated files
    file_starts: np.ndarray  # int64 (n_files,): where each file starts in that concatenation
    n_tokens: int
    tokenizer: Tokenizer

    def __post_init__(self) -> None:
        self._files: dict[int, BinaryIO] = {}

    def __len__(self) -> int:
        return len(self.offsets)

    def sentence(self, i: int) -> list[str]:
        """The tokens of line ``i`` (0-based over the non-blank lines)."""
        offset = int(self.offsets[i])
        k = int(np.searchsorted(self.file_starts, offset, side="right")) - 1
        f = self._files.get(k)
        if f is None:
            f = self._files[k] = open(self.paths[k], "rb")  # noqa: SIM115 (closed in close())
        f.seek(offset - int(self.file_starts[k]))
        return self.tokenizer(f.readline().decode("utf-8"))

    def fingerprint(self) -> dict[str, int]:
        """What a resumed run checks to know it reads the same corpus."""
        return {"lines": len(self), "tokens": self.n_tokens}

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()


def _check_file(path: Path, what: str) -> None:
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a {what} file")
    if not path.is_file():
        raise DataError(f"{path}: no such {what} file")


def scan_corpus(
    paths: Iterable[str | Path],
    tokenizer: Tokenizer = str.split,
    counts: Counter[str] | None = None,
    what: str = "corpus",
) -> Corpus:
    """Index the non-blank lines of ``paths`` (one streaming pass); add words to ``counts``.

    Raises DataError for a missing file, invalid UTF-8 (naming file and line),
    an empty corpus or one with only blank lines.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise DataError(f"no {what} files given")
    offsets = array("q")
    starts = []
    base = n_tokens = n_blank = 0
    for path in paths:
        _check_file(path, what)
        starts.append(base)
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                skip = len(UTF8_BOM) if lineno == 1 and raw.startswith(UTF8_BOM) else 0
                try:
                    tokens = tokenizer(raw[skip:].decode("utf-8"))
                except UnicodeDecodeError as e:
                    raise DataError(f"{path}:{lineno}: invalid UTF-8 (byte 0x{raw[e.start]:02x} "
                                    f"at column {e.start + 1})") from None
                if tokens:
                    offsets.append(base + skip)
                    n_tokens += len(tokens)
                    if counts is not None:
                        counts.update(tokens)
                else:
                    n_blank += 1
                base += len(raw)
    names = ", ".join(str(p) for p in paths)
    if base == 0:
        raise DataError(f"{names}: empty {what} (no lines)")
    if not offsets:
        raise DataError(f"{names}: the {what} has only blank lines ({n_blank}); "
                        "expected one sentence a line")
    return Corpus(paths, np.frombuffer(offsets, dtype=np.int64).copy(),
                  np.array(starts, dtype=np.int64), n_tokens, tokenizer)


# ---------------------------------------------------------------------------- line orders


class ShuffledOrder:
    """This process's share of the lines, in a seeded order that changes every epoch.

    Epoch ``e`` permutes all lines with seed ``(seed, e)``; process ``rank`` of
    ``world`` takes every ``world``-th line of the permutation. The position
    is ``(epoch, cursor)``; nothing else needs saving to resume.
    """

    def __init__(self, n_lines: int, seed: int, rank: int = 0, world: int = 1) -> None:
        if n_lines < world:
            raise DataError(f"the corpus has {n_lines} sentences, fewer than the {world} "
                            "training processes")
        self.n_lines, self.seed, self.rank, self.world = n_lines, seed, rank, world
        self.epoch, self.cursor = 0, 0
        self._shard = self._make_shard()

    def _make_shard(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch])
        return rng.permutation(self.n_lines)[self.rank :: self.world]

    def next(self) -> int:
        if self.cursor == len(self._shard):
            self.epoch, self.cursor = self.epoch + 1, 0
            self._shard = self._make_shard()
        self.cursor += 1
        return int(self._shard[self.cursor - 1])

    def state(self) -> list[int]:
        return [self.epoch, self.cursor]

    def restore(self, state: Sequence[int]) -> None:
        self.epoch, self.cursor = int(state[0]), int(state[1])
        self._shard = self._make_shard()


class SequentialOrder:
    """Every line once, in file order (evaluation)."""

    def __init__(self, n_lines: int) -> None:
        self.n_lines, self.cursor = n_lines, 0

    def next(self) -> int | None:
        if self.cursor == self.n_lines:
            return None
        self.cursor += 1
        return self.cursor - 1


# ---------------------------------------------------------------------------- batches


class Batch(NamedTuple):
    """One window of ``rows`` × ``unroll`` steps of both streams.

    The char CNN runs once per distinct token: ``inputs`` index ``char_ids``.
    """

    char_ids: np.ndarray  # int32 (N, C): shifted char ids; row 0 "no token", 1 <S>, 2 </S>
    inputs: np.ndarray  # int64 (2, B, U): row of char_ids; [0] forward, [1] backward stream
    targets: np.ndarray  # int64 (2, B, U): vocab id of the next token, -1 = nothing to predict
    mask: np.ndarray  # bool (B, U): steps holding a token (the same in both streams)


class Streams:
    """``rows`` sentence streams cut into windows of ``unroll`` steps.

    Step ``t`` predicts the stream's token ``t + 1`` (the first token of the
    next window for the last step). The first token of each sentence (``<S>``
    forward, ``</S>`` backward) always follows the previous sentence's end,
    so it is never a target. With a finite ``order`` (evaluation) rows run
    dry, their steps are masked, and :meth:`next_batch` returns None at the end.
    """

    def __init__(self, corpus: Corpus, vocab: Vocab, order: ShuffledOrder | SequentialOrder,
                 rows: int, unroll: int, max_chars: int) -> None:
        self.corpus, self.vocab, self.order = corpus, vocab, order
        self.rows, self.unroll, self.max_chars = rows, unroll, max_chars
        self.lines = [-1] * rows  # line of each row's current sentence (-1: none yet)
        self.pos = [0] * rows  # next step within it
        self.seqs: list[list[str] | None] = [[] for _ in range(rows)]  # None: row ran dry

    def _advance(self, r: int) -> None:
        line = self.order.next()
        if line is None:
            self.seqs[r] = None
            return
        self.lines[r], self.pos[r] = line, 0
        self.seqs[r] = [BOS, *self.corpus.sentence(line), EOS]

    def _row(self, r: int) -> list[tuple[str, str, bool]]:
        """Up to unroll + 1 (forward token, backward token, starts a sentence) of row r.

        The last one only supplies a target; the row's next window starts there.
        """
        out: list[tuple[str, str, bool]] = []
        next_pos = None
        while len(out) <= self.unroll:
            seq = self.seqs[r]
            if seq is not None and self.pos[r] == len(seq):
                self._advance(r)
                seq = self.seqs[r]
            if seq is None:
                break
            p = self.pos[r]
            if len(out) == self.unroll:
                next_pos = p
            out.append((seq[p], seq[len(seq) - 1 - p], p == 0))
            self.pos[r] = p + 1
        if next_pos is not None:
            self.pos[r] = next_pos
        return out

    def next_batch(self) -> Batch | None:
        rows, unroll = self.rows, self.unroll
        inputs = np.zeros((2, rows, unroll), dtype=np.int64)
        targets = np.full((2, rows, unroll), -1, dtype=np.int64)
        mask = np.zeros((rows, unroll), dtype=bool)
        distinct: dict[str, int] = {BOS: 1, EOS: 2}  # the packer's rows 0 and 1, shifted
        for r in range(rows):
            window = self._row(r)
            for t, (fwd, bwd, _) in enumerate(window[:unroll]):
                mask[r, t] = True
                for d, token in enumerate((fwd, bwd)):
                    inputs[d, r, t] = distinct.setdefault(token, len(distinct) + 1)
            for t, (fwd, bwd, starts) in enumerate(window[1:]):
                if not starts:
                    targets[0, r, t] = self.vocab.id(fwd)
                    targets[1, r, t] = self.vocab.id(bwd)
        if not mask.any():
            return None
        return Batch(self._char_ids(list(distinct)), inputs, targets, mask)

    def _char_ids(self, tokens: list[str]) -> np.ndarray:
        """Row 0 zero ("no token"), then the packer's rows: ``<S>``, ``</S>``, then ``tokens``.

        ``tokens`` (distinct, in order of first use) must start with ``<S>``
        and ``</S>``, which the packer always puts first.
        """
        packed = pack([tokens[2:]], self.max_chars)
        if packed.new_tokens != tokens[2:]:
            raise AssertionError("the packer reordered the window's distinct tokens")
        ids = np.zeros((len(packed.token_chars) + 1, self.max_chars), dtype=np.int32)
        ids[1:] = packed.token_chars
        return ids

    def state(self) -> list[int]:
        """Order position, then (line, step) of every row."""
        assert isinstance(self.order, ShuffledOrder)
        per_row = [v for r in range(self.rows) for v in (self.lines[r], self.pos[r])]
        return [*self.order.state(), *per_row]

    def restore(self, state: Sequence[int]) -> None:
        assert isinstance(self.order, ShuffledOrder)
        if len(state) != 2 + 2 * self.rows:
            raise DataError(f"data position has {len(state)} values, expected {2 + 2 * self.rows}")
        self.order.restore(state[:2])
        for r in range(self.rows):
            line, pos = int(state[2 + 2 * r]), int(state[3 + 2 * r])
            self.lines[r], self.pos[r] = line, pos
            self.seqs[r] = [] if line < 0 else [BOS, *self.corpus.sentence(line), EOS]
