"""Supersense items from WordNet 3.0: (example sentence, target span, lexicographer class).

Every example sentence of a noun or verb synset becomes an item whose label
is the synset's lexicographer file (its *supersense*: ``noun.person``,
``verb.motion``, … 41 classes with ``noun.Tops``). The target is found in the
example by the synset's lemmas, case-insensitively, in any of their forms:

* the lemma itself, tokenized like the example (``take off`` is two tokens);
* the inflections that WordNet's exception lists give (``noun.exc``,
  ``verb.exc``: ``geese`` for ``goose``, ``took off`` for ``take off``);
* inflections of the head word (the last word of a noun, the first of a
  verb), from the exception lists (``made up`` for ``make up``) or regular:
  nouns ``-s -es -ies -men``, verbs ``-s -es -ies -ed -d -ied -ing``,
  ``e`` → ``-ing`` and a doubled final consonant (``stopped``, ``stopping``).

The longest match wins, then the earliest. An example where no lemma form
occurs is dropped (and counted). Train and test are split by sentence with
:func:`wordnet_corpus.is_heldout` (``recipes/wordnet_corpus.py``, the bundled
model's data split): the test items are the held-out
examples, which the bundled model never saw in training. Pure Python (no torch).
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from elmo_runtime.tokenize import tokenize

RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"  # where wordnet_corpus.py lives
if str(RECIPES_DIR) not in sys.path:
    sys.path.append(str(RECIPES_DIR))

from wordnet_corpus import (  # noqa: E402
    DEFAULT_WORDNET_DIR,
    LEXNAMES,
    WordNetError,
    examples,
)

__all__ = ["DEFAULT_WORDNET_DIR", "SUPERSENSES", "Extraction", "Item", "WordNetError",
           "extract_items", "find_span", "lemma_forms", "polysemous_lemmas", "read_exceptions",
           "regular_inflections"]

SUPERSENSES = tuple(n for n in LEXNAMES if n.startswith(("noun.", "verb.")))
POS_FILES = {"n": "noun", "v": "verb"}
VOWELS = frozenset("aeiou")

Form = tuple[str, ...]  # casefolded tokens


@dataclass(frozen=True)
class Item:
    """One evaluation item: a target span of an example sentence and its supersense."""

    tokens: tuple[str, ...]
    start: int
    end: int  # exclusive
    supersense: str
    lemma: str  # the synset lemma that matched, as in WordNet ("take off")
    synset: str  # "01234567-v"
    heldout: bool  # a test item (the model never trained on this sentence)


@dataclass(frozen=True)
class Extraction:
    """The items of a WordNet installation and how many examples had no findable target."""

    items: tuple[Item, ...]
    n_examples: int
    n_dropped: int


def read_exceptions(wordnet_dir: str | Path, pos: str) -> dict[str, tuple[str, ...]]:
    """Base form → its irregular inflections, from ``<noun|verb>.exc`` (spaces for ``_``)."""
    path = Path(wordnet_dir) / f"{POS_FILES[pos]}.exc"
    if not path.is_file():
        raise WordNetError(f"WordNet 3.0 not found: {path} is missing; install the Debian "
                           "package wordnet-base")
    table: dict[str, list[str]] = defaultdict(list)
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if len(fields) < 2:
                raise WordNetError(f"{path}:{lineno}: expected 'inflected base…', found {line!r}")
            inflected = fields[0].replace("_", " ")
            for base in fields[1:]:
                table[base.replace("_", " ").casefold()].append(inflected)
    return {base: tuple(forms) for base, forms in table.items()}


def regular_inflections(word: str, pos: str) -> set[str]:
    """Regular inflections of one (casefolded) word: plurals of nouns, verb forms."""
    if pos == "n":
        forms = {word + "s", word + "es"}
        if word.endswith("y"):
            forms.add(word[:-1] + "ies")
        if word.endswith("man"):
            forms.add(word[:-3] + "men")
        return forms
    forms = {word + "s", word + "es", word + "ed", word + "ing"}
    if word.endswith("e"):
        forms |= {word + "d", word[:-1] + "ing"}
    if word.endswith("y"):
        forms |= {word[:-1] + "ies", word[:-1] + "ied"}
    if len(word) > 1 and word[-1] not in VOWELS | {"w", "x", "y"} and word[-2] in VOWELS:
        forms |= {word + word[-1] + "ed", word + word[-1] + "ing"}
    return forms


def _fold(text: str) -> Form:
    return tuple(t.casefold() for t in tokenize(text))


def lemma_forms(lemma: str, pos: str, exceptions: dict[str, tuple[str, ...]]) -> set[Form]:
    """Every token sequence (casefolded) that counts as ``lemma`` in an example."""
    base = _fold(lemma)
    if not base:
        return set()
    forms = {base} | {_fold(f) for f in exceptions.get(lemma.casefold(), ())}
    head = len(base) - 1 if pos == "n" else 0
    irregular = (f for f in map(_fold, exceptions.get(base[head], ())) if len(f) == 1)
    for word in regular_inflections(base[head], pos) | {f[0] for f in irregular}:
        forms.add(base[:head] + (word,) + base[head + 1 :])
    forms.discard(())
    return forms


def find_span(tokens: Sequence[str], forms: Iterable[Form]) -> tuple[int, int] | None:
    """(start, end) of the longest, then earliest, occurrence of any form; None if none."""
    folded = [t.casefold() for t in tokens]
    spans = []
    for form in forms:
        n = len(form)
        i = next((i for i in range(len(folded) - n + 1) if tuple(folded[i : i + n]) == form), None)
        if i is not None:
            spans.append((i, i + n))
    return min(spans, key=_longest_first, default=None)


def _longest_first(span: tuple[int, int]) -> tuple[int, int]:
    return span[0] - span[1], span[0]


def extract_items(wordnet_dir: str | Path = DEFAULT_WORDNET_DIR) -> Extraction:
    """The supersense items of every noun and verb example sentence (see the module doc)."""
    exceptions = {pos: read_exceptions(wordnet_dir, pos) for pos in POS_FILES}
    items: list[Item] = []
    n_examples = 0
    for example in examples(wordnet_dir, POS_FILES.values()):
        n_examples += 1
        synset = example.synset
        found = [(span, lemma) for lemma in synset.lemmas
                 if (span := find_span(example.tokens,
                                       lemma_forms(lemma, synset.pos, exceptions[synset.pos])))]
        if found:
            (start, end), lemma = min(found, key=lambda f: _longest_first(f[0]))
            items.append(Item(example.tokens, start, end, synset.lexname, lemma, synset.id,
                              example.heldout))
    return Extraction(tuple(items), n_examples, n_examples - len(items))


def polysemous_lemmas(items: Iterable[Item]) -> set[str]:
    """Lemmas (casefolded) that occur with two or more supersenses among ``items``."""
    senses: dict[str, set[str]] = defaultdict(set)
    for item in items:
        senses[item.lemma.casefold()].add(item.supersense)
    return {lemma for lemma, s in senses.items() if len(s) >= 2}
