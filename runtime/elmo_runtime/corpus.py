"""Input text: one sentence a line, read the same way by every engine.

* Lines end at ``"\\n"``, ``"\\r\\n"`` or a lone ``"\\r"`` (old Mac files), as
  Python's universal newlines (and so AllenNLP's ``elmo`` command) read them;
  ``"\\x0b"``, ``"\\x1c"``, ``"\\x85"``, ``"\\u2028"`` … do not end a line.
* Each line is UTF-8 (a BOM on line 1 is dropped); invalid bytes stop with the
  line and column, or become U+FFFD with ``errors="replace"`` (that includes
  UTF-8-encoded surrogates such as ``b"\\xed\\xb2\\x80"``: three U+FFFD).
* A line's key (AllenNLP's ``sentence_to_index``) is the line stripped of
  surrounding whitespace; its tokens are ``str.split()`` of it, or
  :func:`.tokenize.tokenize` of it with ``tokenize=True`` (raw text).
* Memory is bounded per line too: a line longer than :data:`MAX_LINE_BYTES`
  is refused while it is read (``/dev/zero`` is one endless line), and one of
  more than :data:`MAX_TOKENS` tokens is refused (the model's memory grows
  with a sentence's length), each with ``NAME:LINE`` in one line.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

from .errors import InputError
from .format.bounds import MAX_SENTENCE_TOKENS

BOM = "\ufeff"
_LONE_CR = re.compile(rb"(?<=\r)(?!\n)")

Tokenizer = Callable[[str], list[str]]
MAX_TOKENS = MAX_SENTENCE_TOKENS  # tokens a sentence may have (the Python API and JS too)
MAX_LINE_BYTES = 8 << 20  # bytes a line may have (8 MiB)


class Line(NamedTuple):
    """One input line: its stripped text (the sentence_to_index key) and its tokens."""

    key: str
    tokens: list[str]


def line_too_long(name: str, lineno: int) -> InputError:
    """The error of every line reader (this one, the Ray engine's) for line ``lineno``
    (1-based) of ``name`` when it is longer than :data:`MAX_LINE_BYTES` bytes."""
    return InputError(
        f"{name}:{lineno}: a line longer than {MAX_LINE_BYTES} "
        "bytes; is this a text file, one sentence a line?"
    )


def too_many_tokens(name: str, lineno: int, count: int, max_tokens: int = MAX_TOKENS) -> InputError:
    """The error of every line reader for line ``lineno`` of ``name`` with ``count`` tokens,
    more than ``max_tokens``."""
    return InputError(
        f"{name}:{lineno}: {count} tokens, more than {max_tokens} (the most a "
        "sentence may have); split the line"
    )


def split_cr(line: bytes) -> list[bytes]:
    """``line`` cut after every ``"\\r"`` that no ``"\\n"`` follows (a lone CR ends a line)."""
    if b"\r" not in line:
        return [line]
    pieces = _LONE_CR.split(line)
    return pieces[:-1] if pieces[-1] == b"" else pieces


def iter_lines(stream: Iterable[bytes], name: str = "input") -> Iterator[bytes]:
    """The lines of a binary stream, ending at ``"\\n"``, ``"\\r\\n"`` or a lone ``"\\r"``.

    A stream with ``readline`` (a file, stdin) is read at most
    :data:`MAX_LINE_BYTES` + 1 bytes at a time: a longer line raises InputError
    (``NAME:LINE: a line longer than ...``) instead of filling the memory.
    """
    read = getattr(stream, "readline", None)
    if read is None:  # lines already in memory
        for raw in stream:
            yield from split_cr(raw)
        return
    lineno, carry = 0, b""
    while raw := carry + read(MAX_LINE_BYTES + 1 - len(carry)):
        carry = b""
        pieces = split_cr(raw)
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            *pieces, carry = pieces  # the last piece has not ended yet
            if len(carry) > MAX_LINE_BYTES:
                raise line_too_long(name, lineno + len(pieces) + 1)
        lineno += len(pieces)
        yield from pieces


def decode_line(line: bytes, name: str, lineno: int, errors: str = "strict") -> str:
    """The text of line ``lineno`` (1-based) of ``name``; a BOM on line 1 is dropped.

    ``errors="replace"`` turns invalid UTF-8 into U+FFFD instead of raising
    InputError naming the line and column.
    """
    try:
        text = line.decode("utf-8", errors)
    except UnicodeDecodeError as e:
        raise InputError(
            f"{name}:{lineno}: invalid UTF-8 (byte 0x{line[e.start]:02x} at column "
            f"{e.start + 1}); fix the file or pass --errors replace"
        ) from None
    return text.removeprefix(BOM) if lineno == 1 else text


def tokenizer(tokenize: bool) -> Tokenizer:
    """``str.split`` (pre-tokenized input), or the bundled model's tokenizer for raw text."""
    if not tokenize:
        return str.split
    from .tokenize import tokenize as raw_text

    return raw_text


def read_lines(
    lines: Iterable[bytes],
    name: str,
    errors: str = "strict",
    tokenize: bool = False,
    max_tokens: int = MAX_TOKENS,
) -> Iterator[Line]:
    """:class:`Line` (key, tokens) of each line of UTF-8 bytes, read one line per line yielded.

    ``lines`` is a binary stream or any iterable of byte lines (already
    split or not: a lone CR still ends a line). A blank line gives an empty
    key and no tokens. Control characters that are not whitespace stay
    inside their tokens. InputError (naming ``name:line``) for a line over
    :data:`MAX_LINE_BYTES` bytes or ``max_tokens`` tokens.
    """
    split = tokenizer(tokenize)
    for lineno, line in enumerate(iter_lines(lines, name), 1):
        key = decode_line(line, name, lineno, errors).strip()
        tokens = split(key)
        if len(tokens) > max_tokens:
            raise too_many_tokens(name, lineno, len(tokens), max_tokens)
        yield Line(key, tokens)


def read_sentences(
    lines: Iterable[bytes], name: str, errors: str = "strict", tokenize: bool = False
) -> Iterator[list[str]]:
    """The tokens of each line (see :func:`read_lines`), one list a line."""
    for line in read_lines(lines, name, errors, tokenize):
        yield line.tokens
