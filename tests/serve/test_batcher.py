"""The cross-request batcher without HTTP: batch forming, routing, failures."""

from __future__ import annotations

import asyncio
import random
import threading

import numpy as np
import pytest
from elmo_runtime.serve.batcher import Batcher, Item, steps, take_batch


def _queue(lengths: list[int]) -> list[Item]:
    loop = asyncio.new_event_loop()
    try:
        return [Item(["w"] * n, loop.create_future(), seq) for seq, n in enumerate(lengths)]
    finally:
        loop.close()


def test_take_batch_keeps_the_oldest_and_similar_lengths_within_budget():
    queue = _queue([10, 50, 11, 9, 30, 12, 10])
    batch = take_batch(queue, max_batch_tokens=4 * 14)  # 4 rows of up to 12 tokens (+2 boundaries)
    assert [len(i.sentence) for i in batch] == [10, 11, 9, 10]  # arrival order, nearest to 10
    assert [i.seq for i in queue] == [1, 4, 5]  # the rest stays queued in arrival order
    assert len(batch) * max(i.steps for i in batch) <= 4 * 14


def test_take_batch_leaves_a_long_sentence_out_of_a_batch_of_short_ones():
    queue = _queue([20, 20, 60, 20, 20])
    assert [i.seq for i in take_batch(queue, max_batch_tokens=10_000)] == [0, 1, 3, 4]
    assert [i.seq for i in queue] == [2]


def test_take_batch_caps_the_rows():
    queue = _queue([5, 5, 9, 5, 5, 6])
    assert [i.seq for i in take_batch(queue, max_batch_tokens=10_000, max_rows=3)] == [0, 1, 3]
    assert [i.seq for i in take_batch(queue, max_batch_tokens=10_000, max_rows=3)] == [2, 4, 5]


def test_take_batch_runs_an_overlong_sentence_alone():
    queue = _queue([500, 3, 3])
    assert [i.seq for i in take_batch(queue, max_batch_tokens=100)] == [0]
    assert [i.seq for i in take_batch(queue, max_batch_tokens=100)] == [1, 2]
    assert queue == []


@pytest.mark.parametrize("seed", range(5))
def test_take_batch_drains_every_item_once_within_budget(seed):
    rng = random.Random(seed)
    queue = _queue([rng.randint(0, 80) for _ in range(200)])
    seen: list[int] = []
    while queue:
        oldest = queue[0].seq
        batch = take_batch(queue, max_batch_tokens=400)
        assert oldest in [i.seq for i in batch]
        assert len(batch) == 1 or len(batch) * max(i.steps for i in batch) <= 400
        seen += [i.seq for i in batch]
    assert sorted(seen) == list(range(200))


def test_batcher_routes_results_of_concurrent_requests_back():
    """Concurrent requests share model runs and each gets its own sentences' results."""
    runs: list[int] = []
    gate = threading.Event()

    def forward(sentences):
        gate.wait(5)  # the first run holds the model, so the next requests queue up together
        runs.append(len(sentences))
        return [np.full((len(s), 2), float(len(s)), np.float32) for s in sentences]

    async def main():
        batcher = Batcher(forward, max_batch_tokens=1000)
        batcher.start()
        first = asyncio.create_task(batcher.embed([["a"]]))
        await asyncio.sleep(0.05)
        requests = [[["t"] * (i % 7 + 1) for i in range(k, k + 3)] for k in range(10)]
        tasks = [asyncio.create_task(batcher.embed(r)) for r in requests]
        await asyncio.sleep(0.05)
        gate.set()
        results = await asyncio.gather(*tasks)
        await first
        await batcher.stop()
        return requests, results

    requests, results = asyncio.run(main())
    for sentences, vectors in zip(requests, results, strict=True):
        assert [v.shape for v in vectors] == [(len(s), 2) for s in sentences]
        assert [float(v[0, 0]) for v in vectors] == [float(len(s)) for s in sentences]
    assert runs[0] == 1 and sum(runs[1:]) == 30
    assert runs[1] > 3  # the next run held the sentences of several requests


def test_batcher_passes_a_model_failure_to_the_requests_of_that_batch():
    def forward(sentences):
        if any("boom" in s for s in sentences):
            raise RuntimeError("model failed")
        return [np.zeros((steps(s),), np.float32) for s in sentences]

    async def main():
        batcher = Batcher(forward, max_batch_tokens=5)  # one sentence a run
        batcher.start()
        bad = asyncio.create_task(batcher.embed([["boom"]]))
        good = asyncio.create_task(batcher.embed([["fine", "words"]]))
        with pytest.raises(RuntimeError, match="model failed"):
            await bad
        vectors = await good
        await batcher.stop()
        return vectors

    assert asyncio.run(main())[0].shape == (4,)


def test_stop_cancels_the_batch_in_progress_instead_of_leaving_it_pending():
    started = threading.Event()
    release = threading.Event()

    def forward(sentences):
        started.set()
        release.wait(5)
        return [np.zeros((steps(s),), np.float32) for s in sentences]

    async def main():
        batcher = Batcher(forward, max_batch_tokens=100)
        batcher.start()
        request = asyncio.create_task(batcher.embed([["slow", "batch"]]))
        while not started.is_set():
            await asyncio.sleep(0.01)
        stopping = asyncio.create_task(batcher.stop())
        await asyncio.sleep(0.05)
        release.set()  # the model thread finishes; stop() waits for it
        await stopping
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(request, timeout=2)

    asyncio.run(main())


def test_a_small_request_goes_before_the_rest_of_large_ones():
    """The fair queue: a one-word request queued behind two large ones is in the next run."""
    runs: list[list[str]] = []
    gate = threading.Event()

    def forward(sentences):
        gate.wait(5)
        runs.append([s[0] for s in sentences])
        return [np.zeros((steps(s),), np.float32) for s in sentences]

    async def main():
        batcher = Batcher(forward, max_batch_tokens=4 * 12, max_batch_size=4)
        batcher.start()
        large = [asyncio.create_task(batcher.embed([[f"L{k}"] * 10] * 20)) for k in range(2)]
        await asyncio.sleep(0.05)  # the first run holds the model
        small = asyncio.create_task(batcher.embed([["small"]]))
        await asyncio.sleep(0.05)
        gate.set()
        await asyncio.gather(small, *large)
        await batcher.stop()

    asyncio.run(main())
    first_with_small = next(i for i, run in enumerate(runs) if "small" in run)
    # L0 and L1 came together (the same start): one run leads with each, then the small one
    # (first in first out, it would have come after all 40 large sentences, in run 10)
    assert first_with_small == 2 and runs[1][0] == "L1", runs[:3]
    assert sum(len(run) for run in runs) == 41


def test_group_bounds_split_by_steps_and_bytes():
    from elmo_runtime.serve.answer import group_bounds

    sentences = [["w"] * n for n in (3, 3, 3, 10, 1)]
    assert group_bounds(sentences, max_steps=12, sentence_bytes=lambda s: 1) == [
        (0, 2), (2, 3), (3, 4), (4, 5)]  # 5+5, 5 (+12 > 12), 12 alone, 3
    assert group_bounds(sentences, max_steps=100, sentence_bytes=len, max_bytes=6) == [
        (0, 2), (2, 3), (3, 4), (4, 5)]
    assert group_bounds([["w"] * 50], max_steps=4, sentence_bytes=len) == [(0, 1)]


def test_a_reduced_group_keeps_only_what_it_answers():
    """A queued group holds the mixed vectors, not every layer (a view of the top layer
    would keep all of them alive), and its rendered items are orjson's output unsliced."""
    import orjson
    from elmo_runtime.mix import all_layers, top_layer
    from elmo_runtime.serve.protocol import reduce_embed, render_embed

    layers = np.arange(3 * 4 * 6, dtype=np.float32).reshape(3, 4, 6).copy()  # owns its data
    top = reduce_embed(layers, top_layer, "none")
    assert top.base is None and top.nbytes == layers.nbytes // 3
    np.testing.assert_array_equal(top, layers[-1])
    assert reduce_embed(layers, all_layers, "none") is layers  # nothing to copy
    assert reduce_embed(layers, top_layer, "mean").shape == (6,)
    items = render_embed([top, top], "float")
    assert isinstance(items, memoryview)
    assert orjson.loads(b"[" + bytes(items) + b"]") == [top.tolist(), top.tolist()]
