"""The token cache: exact (vs. the uncached path), bounded, and the inputs it builds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from elmo_runtime import Embedder
from elmo_runtime.format import chars
from elmo_runtime.token_cache import TokenCache, capacity_for

LONG_A = "a" * 60 + "x"  # > 48 bytes: only the first 48 reach the char CNN
LONG_B = "a" * 60 + "y"  # same 48-byte prefix as LONG_A, a different string
WORDS = ["the", "cat", "sat", "on", "mat", "héllo", "中文", "😀", LONG_A, LONG_B, "x" * 200]


def sentences(n: int, seed: int, vocab: list[str] = WORDS) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    return [[str(w) for w in rng.choice(vocab, size=rng.integers(1, 12))] for _ in range(n)]


def test_plan_deduplicates_and_points_every_step_at_its_token() -> None:
    cache = TokenCache(max_chars=50, dim=4, capacity=0)
    batch = [["a", "b", "a"], ["b"]]
    plan = cache.plan(batch)
    assert plan.new_tokens == ["a", "b"]
    assert plan.cached_vectors.shape == (0, 4)
    # rows: <S>, </S>, a, b
    want = chars.batch_to_ids([[], ["a", "b"]], 50)[0]
    np.testing.assert_array_equal(plan.token_chars[:2], want[0, :2])
    np.testing.assert_array_equal(plan.token_chars[2:], want[1, 1:3])
    np.testing.assert_array_equal(plan.token_index, [[0, 2, 3, 2, 1], [0, 3, 1, -1, -1]])


def test_index_char_ids_matches_the_padded_batch() -> None:
    ids, _ = chars.batch_to_ids([["a", "b", "a"], ["b"], []], 50)
    token_chars, index = chars.index_char_ids(ids)
    assert (index >= 0).sum() == 5 + 3 + 2
    real = index >= 0
    np.testing.assert_array_equal(token_chars[index[real]], ids[real])
    assert not ids[~real].any()


def test_store_then_hit_feeds_cached_rows_after_the_encoded_ones() -> None:
    cache = TokenCache(max_chars=50, dim=2, capacity=10)
    first = cache.plan([["a", "b"]])
    cache.store(first, np.arange(8, dtype=np.float32).reshape(4, 2))  # <S>, </S>, a, b
    second = cache.plan([["c", "b", "a"]])
    assert second.new_tokens == ["c"]
    np.testing.assert_array_equal(second.cached_vectors, [[6, 7], [4, 5]])  # b, then a
    # encoded: <S>, </S>, c (rows 0-2); cached: b (3), a (4)
    np.testing.assert_array_equal(second.token_index, [[0, 2, 3, 4, 1]])
    assert cache.hits == 2 and cache.misses == 3


def test_lru_is_bounded_and_evicts_the_least_recently_used() -> None:
    cache = TokenCache(max_chars=50, dim=3, capacity=2)
    for batch in (["a"], ["b"], ["a"], ["c"]):  # "a" was used after "b": "b" goes
        plan = cache.plan([batch])
        cache.store(plan, np.ones((2 + len(plan.new_tokens), 3), np.float32))
    assert len(cache) == 2 and "a" in cache and "c" in cache and "b" not in cache
    assert cache.nbytes == 2 * 3 * 4
    plan = cache.plan([["d", "e", "f"]])  # more new tokens than fit: the last ones stay
    cache.store(plan, np.ones((5, 3), np.float32))
    assert len(cache) == 2 and "e" in cache and "f" in cache


def test_sizes_and_bad_arguments() -> None:
    assert capacity_for(1, 128) == 2048
    assert capacity_for(0, 128) == 0
    with pytest.raises(ValueError, match=">= 0 MiB"):
        capacity_for(-1, 128)
    with pytest.raises(ValueError, match="capacity"):
        TokenCache(50, 4, -1)
    cache = TokenCache(50, 4, 4)
    plan = cache.plan([["a"]])
    with pytest.raises(ValueError, match="expected"):
        cache.store(plan, np.ones((2, 4), np.float32))


@pytest.mark.parametrize("stateful", [False, True])
def test_cached_equals_uncached_on_a_real_model(tiny_model_path: Path, stateful: bool) -> None:
    """Three passes over repeating text: the cache serves most tokens by the last one."""
    plain = Embedder(tiny_model_path, provider="cpu", threads=1, stateful=stateful,
                     token_cache_mb=0)
    cached = Embedder(tiny_model_path, provider="cpu", threads=1, stateful=stateful)
    assert plain.token_cache.capacity == 0 and cached.token_cache.capacity > 0
    unseen = [["zebra", "quokka", LONG_B + "z"]]
    for seed in (0, 1, 2):
        text = sentences(40, seed) + (unseen if seed == 2 else [])
        want = list(plain.embed_sentences(text, batch_size=8))
        got = list(cached.embed_sentences(text, batch_size=8))
        for w, g in zip(want, got, strict=True):
            assert g.shape == w.shape
            assert np.abs(g - w).max() <= 1e-6
    assert cached.token_cache.hits > 3 * cached.token_cache.misses
    assert LONG_A in cached.token_cache and LONG_B in cached.token_cache


def test_a_tiny_cache_stays_exact_while_it_evicts(tiny_model_path: Path) -> None:
    plain = Embedder(tiny_model_path, provider="cpu", threads=1, token_cache_mb=0)
    tiny = Embedder(tiny_model_path, provider="cpu", threads=1)
    dim = tiny.info.options.projection_dim
    tiny.token_cache = TokenCache(tiny.info.max_chars, dim, capacity=3)
    text = sentences(30, 5)
    for w, g in zip(plain.embed_sentences(text, 4), tiny.embed_sentences(text, 4), strict=True):
        assert np.abs(g - w).max() <= 1e-6
    assert len(tiny.token_cache) == 3 and tiny.token_cache.nbytes == 3 * dim * 4


# ------------------------------------------------------ literal <S> and </S> (issue 12)
# The rows docs/elmo-spec.md gives for the boundaries, written out: [BOW, BOS|EOS, EOW, PAD…] + 1.
SPEC_BOS_ROW = [259, 257, 260] + [261] * 47
SPEC_EOS_ROW = [259, 258, 260] + [261] * 47


def test_literal_boundary_tokens_are_the_boundary_rows() -> None:
    """bilm-tf and AllenNLP map the strings "<S>" / "</S>" to the boundary char rows."""
    ids = chars.tokens_to_ids(["<S>", "</S>", "<s>", "<S>x", "S"], 50)
    np.testing.assert_array_equal(ids[0], SPEC_BOS_ROW)
    np.testing.assert_array_equal(ids[1], SPEC_EOS_ROW)
    # anything else is spelled out byte by byte, "<s>" included
    np.testing.assert_array_equal(ids[2, :5], [259, ord("<") + 1, ord("s") + 1, ord(">") + 1, 260])
    np.testing.assert_array_equal(ids[3, :6], [259, 61, 84, 63, ord("x") + 1, 260])
    np.testing.assert_array_equal(chars.boundary_rows(50), [SPEC_BOS_ROW, SPEC_EOS_ROW])


def test_pack_points_literal_boundaries_at_rows_0_and_1() -> None:
    packed = chars.pack([["<S>", "a", "</S>"], ["a", "<S>"]], 50)
    assert packed.new_tokens == ["a"]
    np.testing.assert_array_equal(packed.token_index, [[0, 0, 2, 1, 1], [0, 2, 0, 1, -1]])
    np.testing.assert_array_equal(packed.lengths, [5, 4])
    np.testing.assert_array_equal(packed.token_chars[:2], [SPEC_BOS_ROW, SPEC_EOS_ROW])


def test_literal_boundaries_never_enter_the_cache() -> None:
    cache = TokenCache(max_chars=50, dim=2, capacity=10)
    plan = cache.plan([["<S>", "a"]])
    cache.store(plan, np.zeros((3, 2), np.float32))
    assert "<S>" not in cache and "a" in cache
    again = cache.plan([["<S>", "a", "</S>"]])
    np.testing.assert_array_equal(again.token_index, [[0, 0, 2, 1, 1]])


def test_unencodable_token_is_an_input_error_naming_sentence_and_token() -> None:
    from elmo_runtime.errors import InputError

    with pytest.raises(InputError, match=r"sentence 1: token 2 '\\udc80' cannot be encoded"):
        chars.pack([["ok"], ["a", "b", "\udc80"]], 50)


def test_pack_grid_is_batch_to_ids() -> None:
    batch = [["a", "b", "a"], [], ["中文", "x" * 60]]
    ids, lengths = chars.batch_to_ids(batch, 50)
    packed = chars.pack(batch, 50)
    np.testing.assert_array_equal(packed.char_ids(), ids)
    np.testing.assert_array_equal(packed.lengths, lengths)
    np.testing.assert_array_equal(packed.token_chars[packed.token_index[packed.token_index >= 0]],
                                  ids[ids.any(axis=2)])
