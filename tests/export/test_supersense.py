"""Supersense items: target spans of real WordNet 3.0 entries, checked by hand."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO

BENCH_DIR = REPO / "bench"
sys.path.append(str(BENCH_DIR))

from supersense_items import (  # noqa: E402  (bench/supersense_items.py)
    SUPERSENSES,
    Item,
    extract_items,
    find_span,
    lemma_forms,
    polysemous_lemmas,
    read_exceptions,
    regular_inflections,
)
from wordnet_corpus import DEFAULT_WORDNET_DIR, WordNetError, is_heldout  # noqa: E402

# Real synsets (offsets in data.noun / data.verb) and what their examples should give.
NOUN_OFFSETS = ("00179576", "06369829", "00661091")  # tooth; story; therapy
VERB_OFFSETS = ("01086121", "02014571", "00050454")  # race, run; take off, lift off; take off


@pytest.fixture(scope="module")
def wordnet_dir() -> Path:
    if not (DEFAULT_WORDNET_DIR / "data.noun").is_file():
        pytest.skip(f"WordNet 3.0 not installed in {DEFAULT_WORDNET_DIR} (apt-get install "
                    "wordnet-base)")
    return DEFAULT_WORDNET_DIR


@pytest.fixture(scope="module")
def mini_wordnet(wordnet_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A WordNet directory holding only the synsets above, with the real exception lists."""
    out = tmp_path_factory.mktemp("wordnet")
    for pos, offsets in (("noun", NOUN_OFFSETS), ("verb", VERB_OFFSETS)):
        lines = (wordnet_dir / f"data.{pos}").read_text(encoding="utf-8").splitlines(True)
        picked = {line.split(" ", 1)[0]: line for line in lines if line[:8] in offsets}
        (out / f"data.{pos}").write_text("".join(picked[o] for o in offsets), encoding="utf-8")
        shutil.copy(wordnet_dir / f"{pos}.exc", out)
    return out


def spans(items: tuple[Item, ...]) -> list[tuple[str, str, str, str]]:
    return [(it.synset, " ".join(it.tokens[it.start : it.end]), it.lemma, it.supersense)
            for it in items]


def test_hand_checked_entries(mini_wordnet: Path) -> None:
    extraction = extract_items(mini_wordnet)
    assert spans(extraction.items) == [
        # noun.exc: teeth -> tooth
        ("00179576-n", "teeth", "tooth", "noun.act"),
        # regular plural -ies
        ("06369829-n", "stories", "story", "noun.communication"),
        # "the quarterback is undergoing treatment …", "he tried every treatment …": dropped
        ("00661091-n", "therapy", "therapy", "noun.act"),
        # "he is running the Marathon": doubled consonant + -ing
        ("01086121-v", "running", "run", "verb.competition"),
        ("01086121-v", "race", "race", "verb.competition"),
        # multiword lemma whose head is inflected by verb.exc (took <- take)
        ("02014571-v", "took off", "take off", "verb.motion"),
        # multiword lemma as is
        ("00050454-v", "take off", "take off", "verb.body"),
    ]
    assert (extraction.n_examples, extraction.n_dropped) == (9, 2)
    assert [it.tokens for it in extraction.items][3] == (
        "he", "is", "running", "the", "Marathon", "this", "year")
    for item in extraction.items:
        assert item.heldout == is_heldout(" ".join(item.tokens))


def test_regular_inflections() -> None:
    assert regular_inflections("story", "n") == {"storys", "storyes", "stories"}
    assert {"boxes", "boxs"} == regular_inflections("box", "n")
    assert "firemen" in regular_inflections("fireman", "n")
    verb = regular_inflections("stop", "v")
    assert {"stops", "stopped", "stopping", "stoped", "stoping"} <= verb
    assert {"bakes", "baked", "baking"} <= regular_inflections("bake", "v")
    assert {"carries", "carried", "carrying"} <= regular_inflections("carry", "v")
    assert "snowwed" not in regular_inflections("snow", "v")  # no doubled w, x or y


def test_lemma_forms_inflect_the_head_word() -> None:
    exceptions = {"take": ("took", "taken"), "attorney general": ("attorneys general",)}
    forms = lemma_forms("take off", "v", exceptions)
    assert {("take", "off"), ("took", "off"), ("taken", "off"), ("taking", "off")} <= forms
    assert ("take", "offs") not in forms  # verbs inflect their first word
    nouns = lemma_forms("Attorney General", "n", exceptions)
    assert {("attorney", "general"), ("attorney", "generals"), ("attorneys", "general")} <= nouns


def test_find_span_prefers_the_longest_then_the_earliest_match() -> None:
    tokens = ["The", "bank", "building", "near", "the", "BANK"]
    assert find_span(tokens, {("bank",)}) == (1, 2)
    assert find_span(tokens, {("bank",), ("bank", "building")}) == (1, 3)
    assert find_span(tokens, {("near", "the", "bank")}) == (3, 6)  # case-insensitive
    assert find_span(tokens, {("river",)}) is None


def test_polysemous_lemmas_count_supersenses_across_items() -> None:
    def item(lemma: str, supersense: str) -> Item:
        return Item(("x",), 0, 1, supersense, lemma, "0-n", False)

    items = [item("bank", "noun.group"), item("Bank", "noun.object"), item("bank", "noun.group"),
             item("play", "verb.competition"), item("play", "verb.competition")]
    assert polysemous_lemmas(items) == {"bank"}


def test_missing_exception_list_names_the_package(tmp_path: Path) -> None:
    with pytest.raises(WordNetError, match="noun.exc is missing; install .* wordnet-base"):
        read_exceptions(tmp_path, "n")


@pytest.mark.slow
def test_all_of_wordnet(wordnet_dir: Path) -> None:
    extraction = extract_items(wordnet_dir)
    assert len(SUPERSENSES) == 41 and "noun.Tops" in SUPERSENSES
    assert {it.supersense for it in extraction.items} == set(SUPERSENSES)
    assert extraction.n_dropped < 0.03 * extraction.n_examples
    test = [it for it in extraction.items if it.heldout]
    assert 0.1 < len(test) / len(extraction.items) < 0.2
    train_sentences = {it.tokens for it in extraction.items if not it.heldout}
    assert not train_sentences & {it.tokens for it in test}


def test_evaluation_code_does_not_import_torch() -> None:
    code = ("import sys, supersense_items, elmo_runtime.mix_fit; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False, cwd=BENCH_DIR)
    assert proc.returncode == 0, proc.stderr
