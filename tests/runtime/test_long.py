"""A sentence longer than the batch cap runs in pieces (Embedder._forward_long): forward
state carried first to last in one row, backward state last to first in another. Its
vectors are the whole run's; its memory is its output's plus one piece's."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from elmo_runtime.embedder import Embedder


@pytest.mark.parametrize("cap", [3, 4, 7, 16])
@pytest.mark.parametrize("cache", [0, 32])
def test_pieces_give_the_whole_runs_vectors(tiny_model_path: Path, cap: int,
                                            cache: float) -> None:
    rng = random.Random(cap)
    words = ["the", "cat", "sat", "on", "a", "mat", "Zürich", "日本", "x" * 60, "<S>"]
    whole = Embedder(tiny_model_path, max_batch_tokens=10_000, token_cache_mb=0)
    pieces = Embedder(tiny_model_path, max_batch_tokens=cap, token_cache_mb=cache)
    for n in (1, 2, 3, cap, cap + 1, 2 * cap + 3, 41):
        sentence = [rng.choice(words) for _ in range(n)]
        expected = whole.embed_sentence(sentence)
        got = pieces.embed_sentence(sentence)
        assert got.shape == expected.shape and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_pieces_with_a_mix_and_in_a_stream(tiny_model_path: Path) -> None:
    sentences = [["a"] * 3, ["word", "salad"] * 20, ["b"]]
    whole = Embedder(tiny_model_path, mix="average", max_batch_tokens=10_000)
    pieces = Embedder(tiny_model_path, mix="average", max_batch_tokens=8)
    for got, expected in zip(pieces.embed_sentences(sentences),
                             whole.embed_sentences(sentences), strict=True):
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
