"""Seeded random text for comparing the JavaScript tokenizer and char ids with Python's."""

from __future__ import annotations

import random
import sys
import unicodedata

# Pieces the tokenizer has rules for, and characters where Python's and JavaScript's regex
# classes differ (\s, \w, \d, \b, case-insensitive s).
PIECES = [
    "don't", "DON'T", "she's", "they're", "we've", "I'll", "he'd", "I'm", "can't", "O'Brien",
    "know-how", "U.S.", "e.g.", "3.14", "1,000", "9:30", "1990s", "...", "--", "((", "__", "_",
    "'s", "'S", "'\u017f", "n't", "rock'n'roll", "x'y", "<S>", "</S>", "<s>", "café", "naïve",
    "Straße", "東京", "١٢٣", "٣.١٤", "Ⅻ", "½", "²", "x²", "🙂", "👍🏽", "🇫🇷", "e\u0301", "ǅ",
    "ⓐⒶ", "ſ", "\u200d", "\u00ad", "—", "«»", "¿", "‽", "#", "@user", "https://x.org/a?b=c",
    # marks, joiners and text whose NFC differs from it (tokenize.py: NFC, marks in words)
    "हिन्दी", "भाषा", "می\u200cخواهم", "ക്\u200dഷ", "தமிழ்", "cafe\u0301", "cre\u0300me", "❤️",
    "👨\u200d👩\u200d👧", "\u200c", "\u0301", "Nẵng", "d\u0323\u0307", "x\u0301\u0302-y\u0308",
    "\u1100\u1161\u11a8", "\u212b", "\uf900", "n\u0301't", "U\u0301.S\u0308.", "1\u0301990s",
]
SPACES = [" ", " ", " ", "  ", "\t", "\n", "\u00a0", "\u2003", "\u3000", "\x1c", "\x1f",
          "\x85", "\ufeff", "\u200b", "\u2028"]


def _assigned(rng: random.Random) -> str:
    """A random code point that this Python's Unicode data assigns (no surrogates, no Cn)."""
    while True:
        cp = rng.choice([rng.randrange(0x20, 0x3000), rng.randrange(0x20, 0x30000)])
        ch = chr(cp)
        if unicodedata.category(ch) not in ("Cn", "Cs", "Co"):
            return ch


def texts(n: int, seed: int = 15) -> list[str]:
    """``n`` random strings mixing the pieces, random letters and assigned code points."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randrange(1, 12)):
            kind = rng.random()
            if kind < 0.4:
                parts.append(rng.choice(PIECES))
            elif kind < 0.7:
                k = rng.randrange(1, 8)
                parts.append("".join(rng.choice("abcXYZ'-.,:_019") for _ in range(k)))
            else:
                parts.append("".join(_assigned(rng) for _ in range(rng.randrange(1, 6))))
            parts.append(rng.choice(SPACES))
        out.append("".join(parts))
    return out


def long_tokens(rng: random.Random) -> list[str]:
    """Tokens around the 48-byte cut, some splitting a multibyte character."""
    base = ["a" * 47 + "é", "a" * 46 + "é", "é" * 30, "🙂" * 13, "x" * 48, "x" * 49, "東" * 17,
            "a" * 200]
    return base + ["".join(_assigned(rng) for _ in range(rng.randrange(10, 40))) for _ in range(20)]


if __name__ == "__main__":  # print a few, to look at
    sys.stdout.write("\n".join(map(repr, texts(5))) + "\n")
