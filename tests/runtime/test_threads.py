"""Issue 24 item 1: one Embedder shared by threads gives every thread the vectors it would
get alone (the token cache was the bug: two threads stored one word in two slots)."""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from elmo_runtime.embedder import Embedder
from elmo_runtime.token_cache import TokenCache

_TEXT = ("the a bank river money interest rate sat on they raised its of in to and was "
         "fire water tree house dog cat run ran walk light dark old new big small red "
         "blue green city road car train ship sea sky sun moon star night day time")
WORDS = _TEXT.split()


def sentences(n: int, seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    return [[rng.choice(WORDS) for _ in range(rng.randint(3, 14))] for _ in range(n)]


def batches(items: list[list[str]], size: int = 8) -> list[list[list[str]]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


@pytest.mark.slow
def test_eight_threads_share_one_embedder() -> None:
    """8 threads x 200 sentences on the bundled model with the default token cache, each
    batch as the single-threaded run gives it: max |diff| <= 1e-6 (a token's vector from
    the cache and from the char CNN agree to float32 rounding, not bit for bit)."""
    work = [sentences(200, seed) for seed in range(8)]
    alone = Embedder()
    expected = [[v for b in batches(w) for v in alone.embed_batch(b)] for w in work]
    shared = Embedder()
    start = threading.Barrier(8)

    def run(w: list[list[str]]) -> list[np.ndarray]:
        start.wait()
        return [v for b in batches(w) for v in shared.embed_batch(b)]

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(run, work))
    worst = max(float(np.abs(a - e).max()) for g, x in zip(got, expected, strict=True)
                for a, e in zip(g, x, strict=True))
    assert worst <= 1e-6, worst
    # and the cache the threads left behind is still right
    after = [v for b in batches(work[0]) for v in shared.embed_batch(b)]
    assert max(float(np.abs(a - e).max()) for a, e in zip(after, expected[0], strict=True)) \
        <= 1e-6
    assert len(set(shared.token_cache._slots.values())) == len(shared.token_cache)


def test_a_token_stored_twice_keeps_one_slot() -> None:
    """Two threads planning the same new word, then both storing it: one slot, not two
    (the second took a fresh slot that the next new word then overwrote)."""
    cache = TokenCache(max_chars=50, dim=2, capacity=4)
    first, second = cache.plan([["cat"]]), cache.plan([["cat"]])  # both miss "cat"
    vectors = np.arange(6, dtype=np.float32).reshape(3, 2)
    cache.store(first, vectors)
    cache.store(second, vectors)
    dog = cache.plan([["dog"]])
    cache.store(dog, vectors + 100)
    assert dict(cache._slots) == {"cat": 0, "dog": 1}
    np.testing.assert_array_equal(cache.plan([["cat"]]).cached_vectors, vectors[2:])


def test_embed_batch_honours_the_token_budget(toy_model_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 24 item 5: embed_batch ran one forward pass whatever its size (100 x 600
    tokens peaked at 1,405 MiB against 405 MiB through embed_sentences). Now it is cut
    by max_batch_tokens, and gives the same arrays."""
    items = sentences(40, seed=3)
    emb = Embedder(toy_model_path, max_batch_tokens=64, token_cache_mb=0)
    runs: list[tuple[int, int]] = []

    def counting(embedder: Embedder) -> None:
        forward = embedder._forward

        def counted(batch):
            runs.append((len(batch), len(batch) * (max(map(len, batch)) + 2)))
            return forward(batch)

        monkeypatch.setattr(embedder, "_forward", counted)

    counting(emb)
    got = emb.embed_batch(items)
    assert len(runs) > 1 and all(steps <= 64 for _, steps in runs)
    whole = Embedder(toy_model_path, max_batch_tokens=10**6, token_cache_mb=0)
    for a, b in zip(got, whole.embed_batch(items), strict=True):
        np.testing.assert_array_equal(a, b)
    stateful = Embedder(toy_model_path, max_batch_tokens=64, stateful=True)
    runs.clear()
    counting(stateful)
    stateful.embed_batch(items)
    assert len(runs) == 1  # a row's state: one pass
