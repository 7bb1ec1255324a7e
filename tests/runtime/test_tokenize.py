"""The raw-text tokenizer: Unicode-aware words, NFC, the same ids for composed and decomposed
text (the rules for English are tested with the bundled model's corpus, tests/export)."""

from __future__ import annotations

import sys
import unicodedata

import numpy as np
import pytest
from elmo_runtime import tokenize as tokenizer
from elmo_runtime.format import chars, codepoints
from elmo_runtime.tokenize import tokenize


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("हिन्दी भाषा", ["हिन्दी", "भाषा"]),  # vowel signs (Mc) and the virama (Mn) stay inside
        ("café crème brûlée", ["café", "crème", "brûlée"]),
        ("می‌خواهم بروم", ["می\u200cخواهم", "بروم"]),  # ZWNJ inside a Persian word
        ("ക്‍ഷ മലയാളം", ["ക്\u200dഷ", "മലയാളം"]),  # ZWJ inside a Malayalam word
        ("தமிழ் நாடு", ["தமிழ்", "நாடு"]),
        ("I ❤️ it!", ["I", "❤️", "it", "!"]),  # a variation selector stays with its symbol
        ("Đà Nẵng, Việt Nam", ["Đà", "Nẵng", ",", "Việt", "Nam"]),
        ("don't Don't", ["do", "n't", "Do", "n't"]),  # case kept, ASCII rules unchanged
    ],
)
def test_marks_and_joiners_stay_inside_words(text: str, tokens: list[str]) -> None:
    assert tokenize(text) == tokens
    assert tokenize(unicodedata.normalize("NFD", text)) == tokens


def test_decomposed_text_gives_composed_tokens() -> None:
    nfd = unicodedata.normalize("NFD", "café crème brûlée")
    assert len(nfd) == 21  # five combining accents
    assert tokenize(nfd) == ["café", "crème", "brûlée"]
    assert all(unicodedata.is_normalized("NFC", t) for t in tokenize(nfd))
    # a mark without a base is a token of its own, not lost
    assert tokenize("a \u0301 b") == ["a", "\u0301", "b"]


@pytest.mark.parametrize("form", ["NFD", "NFKC", "NFKD"])
def test_every_normal_form_of_a_text_tokenizes_like_nfc(form: str) -> None:
    text = "Ångström's naïve café — Ελληνικά, हिन्दी, 한국어 (ḍ̣) Zürich."
    nfc = tokenize(text)
    assert tokenize(unicodedata.normalize("NFD", text)) == nfc
    if form != "NFD":  # compatibility forms may change letters, never where words end
        assert len(tokenize(unicodedata.normalize(form, text))) == len(nfc)


def test_char_ids_of_composed_and_decomposed_tokens_are_equal() -> None:
    nfc = ["café", "Ångström", "हिन्दी", "<S>"]
    nfd = [unicodedata.normalize("NFD", t) for t in nfc]
    assert nfd != nfc
    np.testing.assert_array_equal(chars.tokens_to_ids(nfd), chars.tokens_to_ids(nfc))
    np.testing.assert_array_equal(chars.pack([nfd]).token_chars, chars.pack([nfc]).token_chars)
    letters = {c: i for i, c in enumerate(["é", "e", "Å", *codepoints.CHAR_SPECIALS])}
    scheme = codepoints.CodepointScheme(letters, 8, {"café": 9, "<oov>": 0, "<bos>": 1,
                                                     "<eos>": 2, "<pad>": 3})
    np.testing.assert_array_equal(scheme.char_ids(nfd), scheme.char_ids(nfc))
    assert scheme.word_ids(["cafe\u0301"]).tolist() == [9]


def test_ascii_ids_are_unchanged_by_normalization() -> None:
    """bilm-tf's fixtures are ASCII: NFC is the identity there, ids are raw UTF-8 bytes + 1."""
    ids = chars.tokens_to_ids(["The", "U.S."], 50)
    assert ids[0, :5].tolist() == [259, ord("T") + 1, ord("h") + 1, ord("e") + 1, 260]


def test_the_mark_class_covers_every_mark_of_this_python() -> None:
    """Marks are searched in planes 0, 1 and 14 only; this Python's data has none elsewhere."""
    cat = unicodedata.category
    every = {cp for cp in range(sys.maxunicode + 1) if cat(chr(cp))[0] == "M"}
    searched = {cp for plane in tokenizer._MARK_PLANES for cp in plane if cat(chr(cp))[0] == "M"}
    assert every == searched and len(every) > 2000
    pattern = tokenizer.token_pattern()
    for cp in sorted(every)[::37]:  # a mark after a letter stays in the word
        assert pattern.fullmatch("a" + chr(cp)) is not None, hex(cp)
