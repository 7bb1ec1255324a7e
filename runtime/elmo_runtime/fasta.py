"""Protein FASTA input: SeqVec's workflow, one residue per token.

A record is a header line ``>ID description…`` and the sequence lines after it, up to the
next header. What each record becomes (docs/switching.md, "From bio_embeddings / SeqVec"):

* **id**: the header's first whitespace-separated word (Biopython's ``record.id``, which
  bio_embeddings stores as ``original_id``). It keys the record's dataset, so it must be
  an hdf5 name: non-empty, no ``/``, not ``.`` or ``..``, not ``sentence_to_index`` (the
  name readers of AllenNLP's layout take for the sentence map), and unique in the file.
* **residues**: the sequence lines with their whitespace removed, upper-cased (SeqVec was
  trained on upper-case UniRef50; Rostlab's own readers upper-case, bio_embeddings embeds
  lower case as it is and warns that the vectors are nonsense), one token per letter. Any
  ASCII letter is a residue and is embedded as it is, as SeqVec's ``list(seq)`` does:
  X, B, Z, U, O and J get their own char ids like the 20 standard ones (the model learnt
  X/B/Z/U/O from UniRef50; none is mapped to another). One ``*`` at the very end of a
  record (a translated stop codon) is dropped.
* refused, each in one line naming the file, line and record: a ``*`` inside the sequence,
  any other character (gaps ``-``/``.``, digits, …), a record without residues, more than
  ``max_tokens`` residues, text before the first header.

Lines are read as :mod:`.corpus` reads them (bounded, ``\\n``/``\\r\\n``/``\\r``, UTF-8).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from .corpus import MAX_TOKENS, decode_line, iter_lines
from .errors import InputError
from .format.names import SENTENCE_TO_INDEX

INPUT_FORMATS = ("text", "fasta")
SNIFF_BYTES = 64 << 10
STOP = "*"


class Record(NamedTuple):
    """One FASTA record: its id, its residues (one token each) and its header's line."""

    id: str
    residues: list[str]
    line: int


def is_fasta(path: str) -> bool:
    """True when the first non-blank line of the regular file ``path`` starts with ``>``.

    Only the first :data:`SNIFF_BYTES` are read; stdin, pipes and unreadable files are
    not FASTA (``--input-format fasta`` says so explicitly).
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with open(path, "rb") as f:
            head = f.read(SNIFF_BYTES)
    except OSError:
        return False
    return head.removeprefix(b"\xef\xbb\xbf").lstrip()[:1] == b">"


def check_id(record_id: str, name: str, lineno: int) -> None:
    """InputError unless ``record_id`` can name an hdf5 dataset (see the module doc)."""
    where = f"{name}:{lineno}"
    if not record_id:
        raise InputError(f"{where}: a header without an id ('>' alone); give every record "
                         "an id")
    if "/" in record_id:
        raise InputError(f"{where}: record id {record_id!r} holds '/', which an hdf5 key "
                         "cannot hold (it separates groups); rename the record")
    if record_id in (".", ".."):
        raise InputError(f"{where}: record id {record_id!r} cannot be an hdf5 key; rename "
                         "the record")
    if record_id == SENTENCE_TO_INDEX:
        raise InputError(f"{where}: record id {record_id!r} is the key readers of AllenNLP's "
                         "layout take for the sentence map; rename the record")


def _residues(text: str, record_id: str, name: str, lineno: int, last: bool) -> str:
    """The residues of one sequence line (whitespace removed, upper-cased), checked."""
    seq = "".join(text.split()).upper()
    if last and seq.endswith(STOP):
        seq = seq[:-1]
    for column, ch in enumerate(seq, 1):
        if not ("A" <= ch <= "Z"):
            what = ("a stop '*' inside the sequence" if ch == STOP
                    else f"{ch!r}, not a residue letter")
            raise InputError(f"{name}:{lineno}: record {record_id!r}: {what} (residue "
                             f"{column} of the line); only the letters A-Z are residues")
    return seq


def read_fasta(lines: Iterable[bytes], name: str, errors: str = "strict",
               max_tokens: int = MAX_TOKENS) -> Iterator[Record]:
    """The :class:`Record` of each FASTA record of a binary stream, one at a time.

    Raises InputError (``NAME:LINE: …``) for what the module doc lists, and for a
    repeated id (naming the line of its first use).
    """
    seen: dict[str, int] = {}
    record_id: str | None = None
    header = 0
    parts: list[str] = []
    count = 0

    def finish() -> Record:
        if not parts:
            raise InputError(f"{name}:{header}: record {record_id!r} has no residues; remove "
                             "it or give its sequence")
        return Record(record_id, list("".join(parts)), header)  # type: ignore[arg-type]

    pending: tuple[str, int] | None = None  # the previous sequence line, checked one late

    def flush(last: bool) -> None:
        nonlocal pending, count
        if pending is None:
            return
        seq = _residues(pending[0], record_id or "", name, pending[1], last)
        count += len(seq)
        if count > max_tokens:
            raise InputError(f"{name}:{header}: record {record_id!r} has more than "
                             f"{max_tokens} residues (the most a sequence may have); raise "
                             "--max-sentence-tokens")
        if seq:
            parts.append(seq)
        pending = None

    for lineno, raw in enumerate(iter_lines(lines, name), 1):
        text = decode_line(raw, name, lineno, errors)
        if text.startswith(">"):
            flush(last=True)
            if record_id is not None:
                yield finish()
            words = text[1:].split(maxsplit=1)
            record_id = words[0] if words else ""
            check_id(record_id, name, lineno)
            if record_id in seen:
                raise InputError(f"{name}:{lineno}: record id {record_id!r} repeats the one "
                                 f"on line {seen[record_id]}; ids key the output, so each "
                                 "must be unique")
            seen[record_id] = header = lineno
            parts, count = [], 0
        elif not text.strip():
            continue
        elif record_id is None:
            raise InputError(f"{name}:{lineno}: text before the first '>' header; is this a "
                             "FASTA file? (--input-format text reads one sentence a line)")
        else:
            flush(last=False)
            pending = (text, lineno)
    flush(last=True)
    if record_id is not None:
        yield finish()
