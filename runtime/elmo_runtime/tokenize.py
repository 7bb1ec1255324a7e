"""The default tokenizer for raw text (``--tokenize``): one regular expression, case kept.

ELMo is case-sensitive, so tokens keep their case. Rules, tried in this order
at each position (whitespace separates and is dropped):

* abbreviations with inner periods stay whole: ``U.S.``, ``e.g.``;
* numbers stay whole, with inner ``.``/``,``/``:`` and a letter suffix:
  ``3.14``, ``1,000``, ``9:30``, ``1990s``;
* English clitics are split off as in the Penn Treebank: ``don't`` →
  ``do n't``, ``she's`` → ``she 's`` (also ``'re 've 'll 'd 'm``);
* words are letters/digits joined by inner hyphens or apostrophes:
  ``know-how``, ``O'Brien``;
* anything else is punctuation, one token per run of the same character:
  ``(``, ``"``, ``...``, ``--``.

The bundled model was trained on text tokenized by this function, so text
given to it should be tokenized the same way.
"""

from __future__ import annotations

import re
from itertools import islice

_CLITIC = r"(?i:'(?:s|re|ve|ll|d|m))\b"
TOKEN_PATTERN = re.compile(
    rf"""
      (?:[^\W\d_]\.){{2,}}                 # abbreviation: U.S., e.g.
    | \d+(?:[.,:]\d+)*[^\W_]*              # number: 3.14, 1,000, 9:30, 1990s
    | [^\W_]+(?=(?i:n't)\b)                # the "do" of "don't"
    | (?i:n't)\b                           # the "n't" of "don't"
    | {_CLITIC}                            # 's 're 've 'll 'd 'm
    | [^\W_]+(?:-[^\W_]+|'(?!(?i:s|re|ve|ll|d|m|t)\b)[^\W_]+)*   # word: know-how, O'Brien
    | ([^\w\s]|_)\1*                       # punctuation: one run of one character
    """,
    re.VERBOSE,
)


def tokenize(text: str, limit: int | None = None) -> list[str]:
    """The tokens of ``text`` (see the module docstring for the rules); with ``limit``, at
    most ``limit + 1`` of them (more than ``limit`` says "too long" without reading the rest)."""
    matches = TOKEN_PATTERN.finditer(text)
    if limit is not None:
        matches = islice(matches, limit + 1)
    return [m.group(0) for m in matches]
