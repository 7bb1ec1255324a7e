"""The JavaScript code-point packer (web/src/codepoints.mjs, ELMoForManyLangs models) equals
the Python runtime's (elmo_runtime.format.codepoints through chars.pack)."""

from __future__ import annotations

import json
import random
import subprocess

import numpy as np
import pytest
from elmo_runtime.errors import ModelError
from elmo_runtime.format import chars, codepoints
from elmo_runtime.tokenize import tokenize
from support.efml_random import SAMPLE_CHARS, default_vocabs
from support.web import REPO, node_or_skip, run_node
from support.web_text import long_tokens, texts

SCRIPT = REPO / "tests" / "web" / "codepoints_io.mjs"
N_TEXTS = 2500


def _corpus() -> tuple[list[list[str]], list[str], str]:
    """Sentences, a word list (known words and case variants of them) and extra chars."""
    rng = random.Random(11)
    sentences = [tokenize(t) for t in texts(N_TEXTS, seed=21)]
    seen = list(dict.fromkeys(t for s in sentences for t in s))
    words = rng.sample(seen, 300) + ["Haus", "the", "cat", "東京", "🙂"]
    variants = [w.upper() for w in words[:50]] + [w.capitalize() for w in words[50:100]]
    extra = "".join(rng.sample(sorted({c for t in seen for c in t}), 150)) + "🙂👍🏽é\u0301"
    sentences += [
        long_tokens(rng),
        [],
        ["<bos>", "x", "<eos>", "<bos>", "<BOS>", "<S>", "</S>", "<oov>", "<pad>"],
        ["a" * 9, "a" * 10, "a" * 11, "🙂" * 10, "🙂" * 11, "e\u0301" * 6, "👍🏽" * 6],
        [*words[:40], *variants, "HAUS", "haus", "The", "CAT", "unseen", "Unseen"],
        ["Haus" + "s" * 20, "Haus", "Hausss"],
    ]
    return sentences, words, extra


@pytest.fixture(scope="module")
def corpus() -> tuple[list[list[str]], list[str], str]:
    return _corpus()


def _js(scheme: codepoints.CodepointScheme, sentences: list[list[str]]) -> dict:
    payload = json.dumps({"vocabulary": codepoints.dumps(scheme), "max_chars": scheme.max_chars,
                          "n_words": len(scheme.words) if scheme.words is not None else 0,
                          "sentences": sentences})
    return json.loads(run_node(SCRIPT, payload))


@pytest.mark.parametrize(("max_chars", "with_words"), [(12, True), (50, False), (8, True)])
def test_codepoint_packer_matches_python(corpus: tuple, max_chars: int, with_words: bool) -> None:
    sentences, words, extra = corpus
    char_vocab, word_vocab = default_vocabs(words, SAMPLE_CHARS + extra)
    scheme = codepoints.CodepointScheme(char_vocab, max_chars,
                                        word_vocab if with_words else None)
    js = _js(scheme, sentences)
    packed = chars.pack(sentences, scheme=scheme)
    token_chars = np.array(js["token_chars"], dtype=np.int32).reshape(js["rows"], max_chars)
    np.testing.assert_array_equal(token_chars, packed.token_chars)
    np.testing.assert_array_equal(
        np.array(js["token_index"], dtype=np.int32).reshape(js["shape"]), packed.token_index)
    if with_words:
        np.testing.assert_array_equal(np.array(js["word_ids"], dtype=np.int32), packed.word_ids)
        oov = word_vocab["<oov>"]
        assert (packed.word_ids != oov).sum() > 50 and (packed.word_ids == oov).sum() > 50
    else:
        assert js["word_ids"] is None and packed.word_ids is None
    # the char ids do use the vocabulary: known chars, <oov> chars, the literal <bos> row
    assert len(np.unique(token_chars)) > 100
    literal = sentences.index(["<bos>", "x", "<eos>", "<bos>", "<BOS>", "<S>", "</S>", "<oov>",
                               "<pad>"])
    assert packed.token_index[literal, [1, 3, 4]].tolist() == [0, 1, 0]


def test_missing_specials_are_refused_like_python() -> None:
    char_vocab, word_vocab = default_vocabs(["Haus"])
    del char_vocab["<eow>"]
    meta = {"scheme": codepoints.SCHEME_NAME, "id_shift": 1, "max_chars": 12,
            "chars": char_vocab, "words": word_vocab}
    with pytest.raises(ModelError) as python:
        codepoints.from_metadata(meta, "efml.onnx")
    payload = json.dumps({"vocabulary": json.dumps(meta), "max_chars": 12, "n_words": 5,
                          "sentences": []})
    out = subprocess.run([node_or_skip(), str(SCRIPT)], input=payload, capture_output=True,
                         text=True, encoding="utf-8", timeout=60)
    assert out.returncode != 0
    assert f"Error: {python.value}" in out.stderr
