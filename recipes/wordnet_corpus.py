"""WordNet 3.0 as text: synsets, their glosses and examples, and a fixed held-out split.

The data of the bundled model, not a library feature: ``build_default.py``
(beside this file) writes the bundled model's training corpus with it, and
the evaluation (``bench/supersense_items.py``, ``bench/supersense.py``)
takes its test sentences from the same split, so that the bundled model
never trains on what it is tested on. It sits here, outside the installed
packages, because no user of ``elmo_export`` needs WordNet to train a biLM.

Reads the Princeton data files ``data.{noun,verb,adj,adv}`` (Debian package
``wordnet-base`` installs them in ``/usr/share/wordnet``). Pure Python: the
evaluation code reuses this module where torch is not installed.

Each synset's gloss is split into a definition and its example sentences:
the examples start at the first double quote that follows ``;`` or ``:``
(``dog: … ; occurs in many breeds; "the dog barked all night"``); each is the
text between its quotes, and text after a closing quote (an attribution such
as ``- Shakespeare``) is dropped. About twenty WordNet glosses have unbalanced
quotes; they are parsed on a best-effort basis.

**Held-out split, by sentence.** An example sentence is held out when the
SHA-1 of its normalized text (tokens joined by one space, case-folded) is,
as a big-endian integer of its first 8 bytes, ``< HELDOUT_PERCENT`` modulo
100. Equal sentences (also in other synsets) therefore land on the same side.
The training corpus is every definition plus every example that is not held
out, leaving out any line whose normalized text equals a held-out example;
its example sentences alone are the fine-tuning corpus.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from elmo_runtime.errors import ElmoError
from elmo_runtime.files import atomic_path
from elmo_runtime.tokenize import tokenize

DEFAULT_WORDNET_DIR = Path("/usr/share/wordnet")
POS_FILES = ("noun", "verb", "adj", "adv")
HELDOUT_PERCENT = 15

# The 45 lexicographer files of WordNet 3.0, by number (the 2nd field of a data line).
LEXNAMES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal",
    "noun.artifact", "noun.attribute", "noun.body", "noun.cognition", "noun.communication",
    "noun.event", "noun.feeling", "noun.food", "noun.group", "noun.location", "noun.motive",
    "noun.object", "noun.person", "noun.phenomenon", "noun.plant", "noun.possession",
    "noun.process", "noun.quantity", "noun.relation", "noun.shape", "noun.state",
    "noun.substance", "noun.time", "verb.body", "verb.change", "verb.cognition",
    "verb.communication", "verb.competition", "verb.consumption", "verb.contact",
    "verb.creation", "verb.emotion", "verb.motion", "verb.perception", "verb.possession",
    "verb.social", "verb.stative", "verb.weather", "adj.ppl",
)  # fmt: skip
# Which lexname prefix each synset type (ss_type) must have; "s" is an adjective satellite.
_LEXNAME_PREFIX = {"n": "noun.", "v": "verb.", "a": "adj.", "s": "adj.", "r": "adv."}
_ADJ_MARKER = re.compile(r"\((?:a|p|ip)\)$")  # syntactic marker after some adjectives
_EXAMPLES_START = re.compile(r'[;:]\s*"')
_EXAMPLE_SEPARATOR = re.compile(r'(?:"[^";]*)?;\s*"')  # closing quote, attribution, ';', quote


class WordNetError(ElmoError):
    """WordNet data files that are missing or not in the WordNet 3.0 format."""


@dataclass(frozen=True)
class Synset:
    """One synset of a data file."""

    offset: int  # byte offset in data.<pos>: with pos, the WordNet 3.0 synset id
    pos: str  # ss_type: n, v, a, s (adjective satellite) or r
    lexname: str  # lexicographer file, e.g. "noun.animal" (the supersense of nouns and verbs)
    lemmas: tuple[str, ...]  # as in WordNet, underscores turned into spaces: "domestic dog"
    definition: str
    examples: tuple[str, ...]

    @property
    def id(self) -> str:
        """``"02084071-n"``: offset and synset type, as NLTK and the WordNet tools print it."""
        return f"{self.offset:08d}-{self.pos}"


@dataclass(frozen=True)
class Example:
    """An example sentence of a synset, tokenized, and which side of the split it is on."""

    text: str
    tokens: tuple[str, ...]
    synset: Synset
    heldout: bool


def split_gloss(gloss: str) -> tuple[str, tuple[str, ...]]:
    """(definition, example sentences) of a gloss (see the module docstring)."""
    start = _EXAMPLES_START.search(gloss)
    if start is None:
        return gloss.strip().rstrip(";").strip(), ()
    definition = gloss[: start.start()].strip()
    tail = gloss[start.end() :]
    parts = _EXAMPLE_SEPARATOR.split(tail)
    last = parts[-1]
    if '"' in last:
        parts[-1] = last[: last.rindex('"')]
    examples = tuple(p.strip() for p in parts if p.strip())
    return definition, examples


def normalize(text: str) -> str:
    """The text that decides a sentence's side of the split: tokens, one space, case-folded."""
    return " ".join(tokenize(text)).casefold()


def is_heldout(text: str, percent: int = HELDOUT_PERCENT) -> bool:
    """Whether an example sentence is held out (never used for training)."""
    digest = hashlib.sha1(normalize(text).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 100 < percent


def _data_files(wordnet_dir: str | Path, pos_files: Iterable[str]) -> list[Path]:
    wordnet_dir = Path(wordnet_dir)
    paths = [wordnet_dir / f"data.{p}" for p in pos_files]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        where = f"{wordnet_dir} does not exist" if not wordnet_dir.is_dir() else (
            f"{wordnet_dir} has no {', '.join(missing)}")
        raise WordNetError(f"WordNet 3.0 not found: {where}; install the Debian package "
                           "wordnet-base (apt-get install wordnet-base) or give the directory "
                           "that holds data.noun, data.verb, data.adj and data.adv")
    return paths


def _parse_line(line: str, where: str) -> Synset:
    try:
        fields, gloss = line.split(" | ", 1)
        head = fields.split()
        offset, lexfile, pos, n_words = int(head[0]), int(head[1]), head[2], int(head[3], 16)
        words = head[4 : 4 + 2 * n_words : 2]
        lexname = LEXNAMES[lexfile]
    except (ValueError, IndexError):
        raise WordNetError(f"{where}: not a WordNet 3.0 data line") from None
    if len(words) != n_words or not lexname.startswith(_LEXNAME_PREFIX.get(pos, "?")):
        raise WordNetError(f"{where}: not a WordNet 3.0 data line (synset type {pos!r}, "
                           f"lexicographer file {lexfile:02d}, {len(words)}/{n_words} words)")
    lemmas = tuple(_ADJ_MARKER.sub("", w).replace("_", " ") for w in words)
    definition, examples = split_gloss(gloss)
    return Synset(offset, pos, lexname, lemmas, definition, examples)


def read_synsets(wordnet_dir: str | Path = DEFAULT_WORDNET_DIR,
                 pos_files: Iterable[str] = POS_FILES) -> Iterator[Synset]:
    """Every synset of ``data.<pos>`` for each of ``pos_files``, in file order.

    Raises WordNetError when a file is missing (naming the Debian package) or
    a line is not in the WordNet 3.0 format (naming file and line).
    """
    for path in _data_files(wordnet_dir, pos_files):
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if line.startswith("  "):  # the license header
                    continue
                yield _parse_line(line.rstrip("\n"), f"{path}:{lineno}")


def examples(wordnet_dir: str | Path = DEFAULT_WORDNET_DIR,
             pos_files: Iterable[str] = POS_FILES) -> Iterator[Example]:
    """Every example sentence with its synset and its side of the split."""
    for synset in read_synsets(wordnet_dir, pos_files):
        for text in synset.examples:
            yield Example(text, tuple(tokenize(text)), synset, is_heldout(text))


def heldout_examples(wordnet_dir: str | Path = DEFAULT_WORDNET_DIR,
                     pos_files: Iterable[str] = POS_FILES) -> Iterator[Example]:
    """The held-out example sentences: never seen by the bundled model in training."""
    return (e for e in examples(wordnet_dir, pos_files) if e.heldout)


def _training_lines(wordnet_dir: str | Path) -> Iterator[tuple[list[str], bool]]:
    """Each training line's tokens and whether it is an example sentence.

    Definitions and examples not held out, in WordNet's order; lines whose
    normalized text equals a held-out example are left out.
    """
    synsets = list(read_synsets(wordnet_dir))
    heldout = {normalize(t) for s in synsets for t in s.examples if is_heldout(t)}
    for synset in synsets:
        for i, text in enumerate((synset.definition, *synset.examples)):
            tokens = tokenize(text)
            if tokens and " ".join(tokens).casefold() not in heldout:
                yield tokens, i > 0


def training_sentences(wordnet_dir: str | Path = DEFAULT_WORDNET_DIR) -> Iterator[list[str]]:
    """The tokens of every training line: definitions and examples not held out."""
    return (tokens for tokens, _ in _training_lines(wordnet_dir))


def training_examples(wordnet_dir: str | Path = DEFAULT_WORDNET_DIR) -> Iterator[list[str]]:
    """The example sentences among the training lines (no definitions)."""
    return (tokens for tokens, example in _training_lines(wordnet_dir) if example)


@dataclass(frozen=True)
class CorpusFiles:
    """What :func:`write_corpus` wrote."""

    train: Path
    heldout: Path
    examples: Path
    train_sentences: int
    train_tokens: int
    heldout_sentences: int
    heldout_tokens: int
    examples_sentences: int
    examples_tokens: int


def _write_lines(path: Path, sentences: Iterable[Iterable[str]]) -> tuple[int, int]:
    """Write one space-joined sentence a line, atomically; (sentences, tokens) written."""
    n_sentences = n_tokens = 0
    with atomic_path(path) as partial, open(partial, "w", encoding="utf-8", newline="\n") as f:
        for tokens in sentences:
            tokens = list(tokens)
            f.write(" ".join(tokens) + "\n")
            n_sentences += 1
            n_tokens += len(tokens)
    return n_sentences, n_tokens


def write_corpus(out_dir: str | Path,
                 wordnet_dir: str | Path = DEFAULT_WORDNET_DIR) -> CorpusFiles:
    """Write ``train.txt``, ``heldout.txt`` and ``examples.txt`` in ``out_dir``.

    One tokenized sentence a line; ``examples.txt`` is the example sentences of
    ``train.txt`` (the text the bundled model is fine-tuned on).
    """
    out_dir = Path(out_dir)
    _data_files(wordnet_dir, POS_FILES)  # fail before creating anything
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ElmoError(f"{out_dir}: cannot create the corpus directory ({e.strerror})") from None
    train, heldout = out_dir / "train.txt", out_dir / "heldout.txt"
    examples_txt = out_dir / "examples.txt"
    n_train = _write_lines(train, training_sentences(wordnet_dir))
    n_heldout = _write_lines(heldout, (e.tokens for e in heldout_examples(wordnet_dir)))
    n_examples = _write_lines(examples_txt, training_examples(wordnet_dir))
    return CorpusFiles(train, heldout, examples_txt, *n_train, *n_heldout, *n_examples)
