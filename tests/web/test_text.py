"""The JavaScript tokenizer and char-id packer (web/src) equal the Python runtime's."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from elmo_runtime.format import chars
from elmo_runtime.tokenize import tokenize
from support.web import REPO, run_node
from support.web_text import long_tokens, texts

SCRIPT = REPO / "tests" / "web" / "text_io.mjs"
N_TEXTS = 3000


def _js(texts_: list[str], sentences: list[list[str]], max_chars: int = 50) -> dict:
    payload = json.dumps({"texts": texts_, "sentences": sentences, "max_chars": max_chars})
    return json.loads(run_node(SCRIPT, payload))


@pytest.fixture(scope="module")
def corpus() -> tuple[list[str], list[list[str]]]:
    rng = random.Random(7)
    raw = texts(N_TEXTS)
    sentences = [tokenize(t) for t in raw]
    sentences += [long_tokens(rng), [], ["<S>", "x", "</S>", "<S>"], ["a" * 48, "a" * 49]]
    return raw, sentences


def test_tokenizer_matches_python(corpus: tuple[list[str], list[list[str]]]) -> None:
    raw, _ = corpus
    got = _js(raw, [])["tokens"]
    mismatches = [(t, js, tokenize(t)) for t, js in zip(raw, got, strict=True) if js != tokenize(t)]
    assert not mismatches, f"{len(mismatches)} of {len(raw)} differ, first: {mismatches[0]!r}"
    assert sum(map(len, got)) > 10 * len(raw)  # the strings really were tokenized


@pytest.mark.parametrize("max_chars", [50, 7])
def test_packer_matches_python(corpus: tuple[list[str], list[list[str]]], max_chars: int) -> None:
    _, sentences = corpus
    js = _js([], sentences, max_chars)
    packed = chars.pack(sentences, max_chars)
    token_chars = np.array(js["token_chars"], dtype=np.int32).reshape(js["rows"], max_chars)
    token_index = np.array(js["token_index"], dtype=np.int32).reshape(js["shape"])
    np.testing.assert_array_equal(token_chars, packed.token_chars)
    np.testing.assert_array_equal(token_index, packed.token_index)
    # The literal boundary tokens are the boundary rows, and long tokens are cut on bytes.
    assert packed.token_index[-2, [1, 3, 4]].tolist() == [0, 1, 0]


def test_empty_batch_and_empty_sentence() -> None:
    js = _js([""], [[]])
    assert js["tokens"] == [[]]
    packed = chars.pack([[]], 50)
    assert js["shape"] == list(packed.token_index.shape) == [1, 2]
    assert js["token_index"] == packed.token_index.ravel().tolist()
