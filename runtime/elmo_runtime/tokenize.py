"""The default tokenizer for raw text (``--tokenize``): one regular expression, case kept.

ELMo is case-sensitive, so tokens keep their case. The text is first put in
Unicode NFC (:func:`.format.bounds.normalize`: composed and decomposed input give
the same tokens; the char-id packers normalize the same way), and a *word
character* is a letter or digit together with the marks that follow it:
combining marks (Unicode Mn, Mc, Me: accents, Indic vowel signs and viramas,
variation selectors) and the joiners ZWJ/ZWNJ (U+200D, U+200C), so
``हिन्दी``, ``می‌خواهم`` and NFD ``café`` are one token each. Rules, tried in
this order at each position (whitespace separates and is dropped):

* abbreviations with inner periods stay whole: ``U.S.``, ``e.g.``;
* numbers stay whole, with inner ``.``/``,``/``:`` and a letter suffix:
  ``3.14``, ``1,000``, ``9:30``, ``1990s``;
* English clitics are split off as in the Penn Treebank: ``don't`` →
  ``do n't``, ``she's`` → ``she 's`` (also ``'re 've 'll 'd 'm``);
* words are word characters joined by inner hyphens or apostrophes:
  ``know-how``, ``O'Brien``;
* anything else is punctuation, one token per run of the same character
  (with its marks): ``(``, ``"``, ``...``, ``--``, ``❤️``.

The bundled model was trained on text tokenized by this function, so text
given to it should be tokenized the same way. ``web/src/tokenize.mjs`` is the
same rules in JavaScript (tests/web compare the two).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from itertools import islice

from .format.bounds import normalize

JOINERS = "\u200c\u200d"  # ZWNJ, ZWJ: inside words of Indic and Arabic-script text
# Unicode assigns marks only in planes 0, 1 and 14 (a test checks this Python's data)
_MARK_PLANES = (range(0x300, 0x20000), range(0xE0000, 0xE1000))


@functools.cache
def mark_class() -> str:
    """The body of a regex character class of every mark (Mn, Mc, Me) and the joiners.

    Python's ``re`` has no ``\\p{M}``: built from :mod:`unicodedata` on first use (~0.1 s).
    """
    cat = unicodedata.category
    marks = [cp for plane in _MARK_PLANES for cp in plane if cat(chr(cp))[0] == "M"]
    marks += map(ord, JOINERS)
    marks.sort()
    ranges: list[list[int]] = []
    for cp in marks:
        if ranges and cp == ranges[-1][1] + 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    return "".join(f"\\U{a:08x}" if a == b else f"\\U{a:08x}-\\U{b:08x}" for a, b in ranges)


@functools.cache
def token_pattern() -> re.Pattern[str]:
    """The compiled token pattern (see the module docstring for the rules)."""
    mark = f"[{mark_class()}]"
    word = rf"(?:[^\W_]|{mark})"  # a letter or digit, or a mark that goes with one
    end = rf"(?![\w{mark_class()}])"  # no word character follows
    clitic = r"(?i:s|re|ve|ll|d|m)"
    return re.compile(
        rf"""
          (?:[^\W\d_]{mark}*\.){{2,}}          # abbreviation: U.S., e.g.
        | \d+(?:[.,:]\d+)*{word}*              # number: 3.14, 1,000, 9:30, 1990s
        | {word}+(?=(?i:n't){end})             # the "do" of "don't"
        | (?i:n't){end}                        # the "n't" of "don't"
        | '{clitic}{end}                       # 's 're 've 'll 'd 'm
        | {word}+(?:-{word}+|'(?!(?:{clitic}|(?i:t)){end}){word}+)*   # know-how, O'Brien
        | ((?:[^\w\s]|_){mark}*)\1*            # punctuation: one run of one character
        """,
        re.VERBOSE,
    )


def tokenize(text: str, limit: int | None = None) -> list[str]:
    """The tokens of ``text`` in NFC (see the module docstring for the rules); with ``limit``,
    at most ``limit + 1`` of them (more than ``limit`` says "too long" without reading the
    rest)."""
    matches = token_pattern().finditer(normalize(text))
    if limit is not None:
        matches = islice(matches, limit + 1)
    return [m.group(0) for m in matches]
