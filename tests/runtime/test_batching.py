"""Length bucketing: every index once, small padding, token cap, input order restored."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from elmo_runtime.batching import bucketed, chunks, in_order, plan_batches


def padded_steps(lengths: np.ndarray, batches: list[np.ndarray]) -> int:
    return sum(len(b) * int(lengths[b].max()) for b in batches)


def test_plan_covers_every_index_once_within_batch_size() -> None:
    lengths = np.random.default_rng(0).integers(1, 80, size=1000)
    batches = plan_batches(lengths, batch_size=32, max_batch_tokens=None)
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    assert all(1 <= len(b) <= 32 for b in batches)
    assert len(batches) == 32  # ceil(1000 / 32): no needless small batches


def test_plan_sorts_by_length_so_padding_is_small() -> None:
    lengths = np.random.default_rng(1).integers(1, 100, size=640)
    batches = plan_batches(lengths, batch_size=64, max_batch_tokens=None)
    in_order_batches = [np.arange(i, i + 64) for i in range(0, 640, 64)]
    flat = [lengths[b] for b in batches]
    assert all(np.all(np.diff(x) >= 0) for x in flat)
    assert all(a.max() <= b.min() for a, b in itertools.pairwise(flat))
    assert padded_steps(lengths, batches) < 0.6 * padded_steps(lengths, in_order_batches)


def test_equal_lengths_keep_input_order() -> None:
    batches = plan_batches([5, 5, 5, 5, 5], batch_size=2, max_batch_tokens=None)
    assert [b.tolist() for b in batches] == [[0, 1], [2, 3], [4]]


def test_a_very_long_sentence_gets_a_batch_of_its_own() -> None:
    lengths = [10] * 30 + [5002] + [10] * 33
    batches = plan_batches(lengths, batch_size=64, max_batch_tokens=64 * 100)
    assert [b.tolist() for b in batches] == [
        [i for i in range(64) if i != 30],
        [30],
    ]
    one_batch = plan_batches(lengths, batch_size=64, max_batch_tokens=None)
    assert len(one_batch) == 1


def test_token_cap_bounds_every_multi_row_batch() -> None:
    lengths = np.random.default_rng(2).integers(1, 500, size=300)
    batches = plan_batches(lengths, batch_size=64, max_batch_tokens=1000)
    assert sorted(np.concatenate(batches).tolist()) == list(range(300))
    for b in batches:
        assert len(b) == 1 or len(b) * lengths[b].max() <= 1000
    assert any(len(b) > 1 for b in batches)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_invalid_sizes(bad: object) -> None:
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        plan_batches([1, 2], batch_size=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_batch_tokens must be a positive integer"):
        plan_batches([1, 2], batch_size=2, max_batch_tokens=bad)  # type: ignore[arg-type]


def test_empty_plan() -> None:
    assert plan_batches([], batch_size=4) == []


def test_chunks() -> None:
    assert list(chunks(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(chunks([], 3)) == []


def test_bucketed_sorts_within_windows_only() -> None:
    items = ["x" * n for n in (9, 8, 7, 6, 5, 4, 3, 2)]
    batches = list(bucketed(items, len, batch_size=2, max_batch_tokens=None, window=4))
    assert [[i for i, _ in b] for b in batches] == [[3, 2], [1, 0], [7, 6], [5, 4]]
    assert all(item == items[i] for b in batches for i, item in b)


def test_bucketed_reads_lazily_one_window_at_a_time() -> None:
    consumed = []

    def source():
        for i in itertools.count():
            consumed.append(i)
            yield [0] * (i % 7)

    first = next(bucketed(source(), len, batch_size=4, max_batch_tokens=None, window=16))
    assert len(first) == 4
    assert len(consumed) == 16


def test_in_order_restores_order_as_early_as_possible() -> None:
    pairs = [(2, "c"), (0, "a"), (1, "b"), (4, "e"), (3, "d")]
    seen = []

    def source():
        for p in pairs:
            seen.append(p[0])
            yield p

    out = in_order(source())
    assert next(out) == "a"
    assert seen == [2, 0]  # "a" went out before index 1 was read
    assert list(out) == ["b", "c", "d", "e"]


def test_in_order_detects_a_missing_index() -> None:
    with pytest.raises(ValueError, match="indices missing before 2"):
        list(in_order([(0, "a"), (2, "c")]))
