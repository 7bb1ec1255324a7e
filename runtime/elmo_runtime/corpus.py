"""Input text: one whitespace-tokenized sentence a line, read the same way by every engine."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from .errors import InputError

BOM = "\ufeff"


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


def read_sentences(
    lines: Iterable[bytes], name: str, errors: str = "strict"
) -> Iterator[list[str]]:
    """Whitespace-tokenized lines of UTF-8 bytes (``str.split()``), one list a line.

    ``lines`` is a binary stream or any iterable of lines; one line is read
    per sentence yielded. ``str.split()`` drops the line end ("\\n" or
    "\\r\\n"); a blank line gives an empty sentence. Control characters that
    are not whitespace stay inside their tokens.
    """
    for lineno, line in enumerate(lines, 1):
        yield decode_line(line, name, lineno, errors).split()
