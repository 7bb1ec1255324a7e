"""Length bucketing: group sentences of similar length so padding stays small.

A batch costs ``rows x longest`` steps, so sentences are sorted by length
before they are cut into batches, and a batch closes early when it would
exceed ``max_batch_tokens`` padded steps (one 5,000-token line runs alone instead
of padding 63 short ones to its length). Streams are bucketed a window at a
time, so memory stays bounded however long the input is, and
:func:`in_order` puts the results back in input order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from typing import TypeVar

import numpy as np

T = TypeVar("T")

DEFAULT_BATCH_SIZE = 64
DEFAULT_MAX_TOKENS = 64 * 100  # padded steps (rows x longest) per batch
# Activation memory a batch may take for one hoisted LSTM input projection
# (steps x 4 x lstm_dim float32): large models get fewer padded steps per batch.
# 32 MiB caps the original ELMo at 512 steps (the bundled model at 4,096, was 6,400):
# its peak RSS at batch 32 fell from 2.08x to 1.57x the model's bytes at no
# measurable speed cost (bench/RESULTS.md).
ACTIVATION_BUDGET = 32 * 2**20


def max_tokens_for(lstm_dim: int) -> int:
    """Default cap on padded steps per batch for a model with this LSTM width."""
    return max(256, min(DEFAULT_MAX_TOKENS, ACTIVATION_BUDGET // (16 * lstm_dim)))


WINDOW_BATCHES = 16  # a stream is sorted this many batches at a time


def plan_batches(
    lengths: Sequence[int] | np.ndarray,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_batch_tokens: int | None = DEFAULT_MAX_TOKENS,
) -> list[np.ndarray]:
    """Cut indices of ``lengths`` into batches of similar length.

    Each batch has at most ``batch_size`` indices and, unless it holds a
    single item, at most ``max_batch_tokens`` padded steps (``len(batch) x
    longest``). Indices are sorted by length (stable), shortest batch first.
    """
    _check_positive(batch_size, "batch_size")
    if max_batch_tokens is not None:
        _check_positive(max_batch_tokens, "max_batch_tokens")
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(lengths, kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    for i in range(1, len(order) + 1):
        rows = i - start
        full = rows == batch_size or i == len(order)
        too_long = (
            max_batch_tokens is not None and not full
            and (rows + 1) * lengths[order[i]] > max_batch_tokens
        )
        if full or too_long:
            batches.append(order[start:i])
            start = i
    return batches


def _check_positive(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, found {value!r}")


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of ``size`` items (the last may be shorter)."""
    _check_positive(size, "size")
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def bucketed(
    items: Iterable[T],
    length: Callable[[T], int],
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_batch_tokens: int | None = DEFAULT_MAX_TOKENS,
    window: int | None = None,
) -> Iterator[list[tuple[int, T]]]:
    """Batches of ``(input index, item)``, bucketed by ``length`` a window at a time.

    ``window`` (default ``batch_size * 16``) items are read, sorted and cut
    with :func:`plan_batches` before the next window is read.
    """
    window = window if window is not None else batch_size * WINDOW_BATCHES
    offset = 0
    for chunk in chunks(items, window):
        plan = plan_batches([length(x) for x in chunk], batch_size, max_batch_tokens)
        for batch in plan:
            yield [(offset + int(i), chunk[i]) for i in batch]
        offset += len(chunk)


def in_order(pairs: Iterable[tuple[int, T]]) -> Iterator[T]:
    """Values of ``(index, value)`` pairs in index order, each as soon as it can go.

    The indices must be 0, 1, 2, … in any order, each exactly once.
    """
    pending: dict[int, T] = {}
    following = 0
    for index, value in pairs:
        pending[index] = value
        while following in pending:
            yield pending.pop(following)
            following += 1
    if pending:
        raise ValueError(f"indices missing before {min(pending)}")
