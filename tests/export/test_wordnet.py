"""WordNet 3.0 reading, the held-out split (recipes/wordnet_corpus.py), the default tokenizer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from elmo_runtime.tokenize import tokenize
from support import REPO

RECIPES_DIR = REPO / "recipes"
sys.path.append(str(RECIPES_DIR))

import wordnet_corpus as wordnet  # noqa: E402
from wordnet_corpus import (  # noqa: E402
    LEXNAMES,
    Synset,
    WordNetError,
    is_heldout,
    split_gloss,
)

# A tiny WordNet in the data-file format: the license header, then one synset a line.
FAKE = {
    "noun": "  1 This file is part of a fake WordNet.\n"
    "00000010 05 n 02 dog 0 domestic_dog 0 000 | a domesticated canid; "
    '"the dog barked all night"; "Dogs bark"\n'
    "00000020 04 n 01 race 0 000 | a contest of speed; \"they won the race\" - Anonymous\n",
    "verb": '00000010 38 v 01 run 0 000 | Dogs bark; "DOGS  bark"; "we ran home"\n',
    "adj": '00000010 00 s 01 ready_to_hand(p) 0 000 | easy to reach; "a handy spot"\n',
    "adv": "00000010 02 r 01 a_cappella 0 000 | without musical accompaniment\n",
}


@pytest.fixture
def fake_wordnet(tmp_path: Path) -> Path:
    for pos, text in FAKE.items():
        (tmp_path / f"data.{pos}").write_text(text, encoding="utf-8")
    return tmp_path


@pytest.fixture(scope="module")
def synsets() -> dict[str, Synset]:
    if not (wordnet.DEFAULT_WORDNET_DIR / "data.noun").is_file():
        pytest.skip(f"WordNet 3.0 not installed in {wordnet.DEFAULT_WORDNET_DIR} "
                    "(Debian package wordnet-base)")
    return {s.id: s for s in wordnet.read_synsets()}


def test_no_torch_needed() -> None:
    """The evaluation code reuses this module where torch is not installed."""
    code = "import sys; sys.modules['torch'] = None; import wordnet_corpus"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=RECIPES_DIR)


# ---------------------------------------------------------------------------- tokenizer


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("Don't stop, she's here!", ["Do", "n't", "stop", ",", "she", "'s", "here", "!"]),
        ("The U.S. grew 3.5% in the 1990s...",
         ["The", "U.S.", "grew", "3.5", "%", "in", "the", "1990s", "..."]),
        ("O'Brien's know-how -- \"hi\"", ["O'Brien", "'s", "know-how", "--", '"', "hi", '"']),
        ("can't I'm we'll", ["ca", "n't", "I", "'m", "we", "'ll"]),
        ("(usually followed by `to')", ["(", "usually", "followed", "by", "`", "to", "'", ")"]),
        ("Café naïve 9:30 1,000", ["Café", "naïve", "9:30", "1,000"]),
        ("  \t\n", []),
    ],
)
def test_tokenize(text: str, tokens: list[str]) -> None:
    assert tokenize(text) == tokens


# ---------------------------------------------------------------------------- glosses


@pytest.mark.parametrize(
    ("gloss", "definition", "examples"),
    [
        ("a domesticated canid", "a domesticated canid", ()),
        ('a canid; occurs in many breeds; "the dog barked"',
         "a canid; occurs in many breeds", ("the dog barked",)),
        ('revenge; "Vengeance is mine; I will repay"--Romans 12:19; "he swore vengeance"',
         "revenge", ("Vengeance is mine; I will repay", "he swore vengeance")),
        ('a change of units: "conversion from Fahrenheit"', "a change of units",
         ("conversion from Fahrenheit",)),
        ('reward as in "carrot and stick"; "used the carrot";',
         'reward as in "carrot and stick"', ("used the carrot",)),
        ('a notice; "an obituary notice"; "a notice of sale', "a notice",
         ("an obituary notice", "a notice of sale")),
    ],
)
def test_split_gloss(gloss: str, definition: str, examples: tuple[str, ...]) -> None:
    assert split_gloss(gloss) == (definition, examples)


def test_lexnames() -> None:
    assert len(LEXNAMES) == 45
    assert (LEXNAMES[3], LEXNAMES[18], LEXNAMES[29], LEXNAMES[43], LEXNAMES[44]) == (
        "noun.Tops", "noun.person", "verb.body", "verb.weather", "adj.ppl")
    assert sum(n.startswith(("noun.", "verb.")) for n in LEXNAMES) == 41


# ---------------------------------------------------------------------------- WordNet 3.0


def test_noun_synset(synsets: dict[str, Synset]) -> None:
    dog = synsets["02084071-n"]
    assert dog.lexname == "noun.animal"
    assert dog.lemmas == ("dog", "domestic dog", "Canis familiaris")
    assert dog.definition == (
        "a member of the genus Canis (probably descended from the common wolf) that has been "
        "domesticated by man since prehistoric times; occurs in many breeds")
    assert dog.examples == ("the dog barked all night",)


def test_verb_synset(synsets: dict[str, Synset]) -> None:
    stimulate = synsets["00022686-v"]
    assert stimulate.lexname == "verb.body"
    assert stimulate.lemmas == ("stimulate", "arouse", "brace", "energize", "energise", "perk up")
    assert stimulate.definition == "cause to be alert and energetic"
    assert stimulate.examples == ("Coffee and tea stimulate me",
                                  "This herbal infusion doesn't stimulate")


def test_attributions_and_markers(synsets: dict[str, Synset]) -> None:
    vengeance = synsets["01235463-n"]
    assert vengeance.lexname == "noun.act"
    assert vengeance.examples == (
        "Vengeance is mine; I will repay, saith the Lord",
        "For vengeance I would do nothing. This nation is too great to look for mere revenge",
        "he swore vengeance on the man who betrayed him",
        "the swiftness of divine retribution",
    )
    used_to = synsets["00024619-s"]  # adjective satellite, lemmas marked "(p)" in the file
    assert (used_to.lexname, used_to.lemmas) == ("adj.all", ("used to", "wont to"))
    assert synsets["00001740-r"].lexname == "adv.all"


def test_all_synsets_read(synsets: dict[str, Synset]) -> None:
    assert len(synsets) == 117659  # WordNet 3.0: 82115 + 13767 + 18156 + 3621
    assert {s.lexname for s in synsets.values()} == set(LEXNAMES)


def test_heldout_split_is_pinned(synsets: dict[str, Synset]) -> None:
    """The split must never change silently: the bundled model's held-out data depends on it."""
    texts = [t for s in synsets.values() for t in s.examples]
    assert len(texts) == 48274
    assert sum(map(is_heldout, texts)) == 7190
    assert is_heldout("the oceans are teeming with life")
    assert not is_heldout("the dog barked all night")


# ---------------------------------------------------------------------------- the split


def test_split_is_by_normalized_sentence() -> None:
    sentences = [f"sentence number {i} ." for i in range(2000)]
    held = [s for s in sentences if is_heldout(s)]
    assert 0.12 < len(held) / len(sentences) < 0.18  # HELDOUT_PERCENT = 15
    assert all(is_heldout(s.upper().replace(" ", "  ")) for s in held)  # case, spacing
    assert held == [s for s in sentences if is_heldout(s)]  # deterministic
    assert not any(is_heldout(s, percent=0) for s in sentences)


def test_corpus_is_disjoint_from_heldout(fake_wordnet: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # Hold out the sentences that normalize to "dogs bark": both examples, not the definition.
    monkeypatch.setattr(wordnet, "is_heldout",
                        lambda text, percent=15: wordnet.normalize(text) == "dogs bark")
    files = wordnet.write_corpus(tmp_path / "corpus", fake_wordnet)
    train = files.train.read_text(encoding="utf-8").splitlines()
    heldout = files.heldout.read_text(encoding="utf-8").splitlines()
    assert heldout == ["Dogs bark", "DOGS bark"]
    assert train == ["a domesticated canid", "the dog barked all night", "a contest of speed",
                     "they won the race", "we ran home", "easy to reach", "a handy spot",
                     "without musical accompaniment"]
    assert (files.train_sentences, files.train_tokens) == (8, 28)
    assert (files.heldout_sentences, files.heldout_tokens) == (2, 4)
    examples = files.examples.read_text(encoding="utf-8").splitlines()
    assert examples == ["the dog barked all night", "they won the race", "we ran home",
                        "a handy spot"]
    assert (files.examples_sentences, files.examples_tokens) == (4, 15)
    assert sorted(p.name for p in files.train.parent.iterdir()) == [
        "examples.txt", "heldout.txt", "train.txt"]


def test_heldout_examples_carry_their_synset(fake_wordnet: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wordnet, "is_heldout", lambda text, percent=15: "bark" in text)
    held = list(wordnet.heldout_examples(fake_wordnet))
    assert [(e.tokens, e.synset.id, e.synset.lexname, e.synset.lemmas) for e in held] == [
        (("the", "dog", "barked", "all", "night"), "00000010-n", "noun.animal",
         ("dog", "domestic dog")),
        (("Dogs", "bark"), "00000010-n", "noun.animal", ("dog", "domestic dog")),
        (("DOGS", "bark"), "00000010-v", "verb.motion", ("run",)),
    ]
    assert all(e.heldout for e in held)


# ---------------------------------------------------------------------------- bad input


def test_missing_wordnet_dir(tmp_path: Path) -> None:
    with pytest.raises(WordNetError, match=r"does not exist; install the Debian package "
                                           r"wordnet-base"):
        next(wordnet.read_synsets(tmp_path / "nowhere"))
    with pytest.raises(WordNetError, match="wordnet-base"):
        wordnet.write_corpus(tmp_path / "out", tmp_path / "nowhere")
    assert not (tmp_path / "out").exists()


def test_missing_data_file(fake_wordnet: Path) -> None:
    (fake_wordnet / "data.verb").unlink()
    with pytest.raises(WordNetError, match=r"has no data\.verb"):
        list(wordnet.read_synsets(fake_wordnet))


@pytest.mark.parametrize(
    "line",
    ["not a data line | gloss", "00000010 05 n 03 dog 0 000 | too few words",
     "00000010 29 n 01 dog 0 000 | a verb lexicographer file for a noun",
     "00000010 05 n 01 dog 0 000 no gloss"],
)
def test_malformed_line(fake_wordnet: Path, line: str) -> None:
    (fake_wordnet / "data.adv").write_text(line + "\n", encoding="utf-8")
    with pytest.raises(WordNetError, match=r"data\.adv:1: not a WordNet 3\.0 data line"):
        list(wordnet.read_synsets(fake_wordnet))
