"""Cross-request batching by token budget, as Hugging Face's text-embeddings-inference does it,
with a fair queue.

Requests put their sentences in one queue. Whenever the model is free, the
next batch is formed from whatever is queued (there is no wait timer): the
sentence first in the fair order and the queued sentences of similar length that make the
run cheapest per token, within the budget of padded steps (``rows x
longest``, boundaries included) and the cap on rows. The fair order is
self-clocked fair queueing over requests: each sentence is tagged with the
steps its request has queued so far, counted from the tag of the sentence
last served (or from the request's previous tag), and the smallest tag goes
first. A one-word request that arrives behind large ones is therefore in the
next batch, while each large request still advances in its own order (TEI's
queue is first-in first-out: there a small request waits for every large one
queued before it). A batch of every queued
sentence would pad them all to the longest one: measured with 32 clients,
half of the model's work was padding that way. The batch runs in the one model thread, so the event
loop keeps answering while the model works, and each sentence's vectors go
back to the request that asked for them. With a stateless
:class:`~elmo_runtime.Embedder` a sentence's vectors do not depend on its
batch-mates, so batching changes the speed and never the result.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

Sentence = Sequence[str]
# A model run costs about longest x (rows + ROW_OVERHEAD) row-steps: each LSTM
# step has a fixed cost besides its rows (bundled model, one thread: 370 us a
# step at 1 row, 140 us a row-step at 64 rows, so the fixed part is ~1.6 rows).
ROW_OVERHEAD = 2.0
WINDOW_BATCHES = 16  # candidates: the first in the fair order and the max_rows x 16 oldest
Forward = Callable[[list[Sentence]], list[np.ndarray]]


def steps(sentence: Sentence) -> int:
    """Model steps of a sentence: its tokens plus ``<S>`` and ``</S>``."""
    return len(sentence) + 2


class Owner:
    """The request a sentence belongs to, for the fair order: the tag of its last queued
    sentence (steps, virtual time)."""

    __slots__ = ("finish",)

    def __init__(self) -> None:
        self.finish = 0.0


@dataclass
class Item:
    """One queued sentence, the future its vectors go to, and its fair-order ``tag``."""

    sentence: Sentence
    future: asyncio.Future
    seq: int
    enqueued: float = field(default_factory=time.perf_counter)
    tag: float = 0.0

    @property
    def steps(self) -> int:
        return steps(self.sentence)


def take_batch(queue: list[Item], max_batch_tokens: int, max_rows: int | None = None) -> list[Item]:
    """Remove and return the next batch from ``queue`` (the first item in the fair order, the
    smallest ``(tag, seq)``, and maybe others).

    That item and the ``max_rows x 16 - 1`` oldest others are the candidates, sorted
    by length; of the runs of consecutive candidates that hold the first item, have at
    most ``max_rows`` rows and at most ``max_batch_tokens`` padded steps (``rows x
    longest``; the first alone may exceed it), the one with the most tokens
    per unit of cost, ``longest x (rows + ROW_OVERHEAD)``, is taken. Every
    batch serves the first item, so none waits for ever. The rest of the queue keeps
    its arrival order.
    """
    first = min(range(len(queue)), key=lambda k: (queue[k].tag, queue[k].seq))
    if first:
        queue.insert(0, queue.pop(first))
    window = len(queue) if max_rows is None else min(len(queue), max_rows * WINDOW_BATCHES)
    order = sorted(range(window), key=lambda i: (queue[i].steps, queue[i].seq))
    lengths = np.array([queue[i].steps for i in order])
    prefix = np.concatenate([[0], np.cumsum(lengths - 2)])  # real tokens, boundaries excluded
    pos = order.index(0)  # queue[0] is the first in the fair order
    cap = window if max_rows is None else max_rows
    lo = np.arange(max(0, pos - cap + 1), pos + 1)[:, None]
    hi = np.arange(pos, min(window, pos + cap))[None, :]
    rows = hi - lo + 1
    longest = lengths[hi]
    allowed = (rows <= cap) & ((rows * longest <= max_batch_tokens) | (rows == 1))
    score = (prefix[hi + 1] - prefix[lo]) / (longest * (rows + ROW_OVERHEAD))
    score = np.where(allowed, score + rows * 1e-9, -1.0)  # a tie goes to more rows
    i, j = np.unravel_index(int(np.argmax(score)), score.shape)
    chosen = set(order[int(lo[i, 0]) : int(hi[0, j]) + 1])
    batch = [queue[k] for k in sorted(chosen)]
    queue[:] = [item for k, item in enumerate(queue) if k not in chosen]
    return batch


@dataclass
class BatchStats:
    """What one model run did: for the metrics."""

    sentences: int
    tokens: int
    padded_steps: int
    queue_times: list[float]
    seconds: float


class Batcher:
    """The queue and the loop that feeds the one model thread.

    ``forward`` embeds a list of token lists in one pass and returns one
    array per sentence (it runs in a dedicated thread); a pass takes at most
    ``max_batch_tokens`` padded steps and ``max_batch_size`` sentences. ``on_batch`` is
    called on the event loop after every run; ``on_queue`` with the number
    of queued sentences whenever it changes.
    """

    def __init__(
        self,
        forward: Forward,
        max_batch_tokens: int,
        max_batch_size: int | None = None,
        on_batch: Callable[[BatchStats], None] = lambda stats: None,
        on_queue: Callable[[int], None] = lambda size: None,
    ):
        self._forward = forward
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self._on_batch = on_batch
        self._on_queue = on_queue
        self._queue: list[Item] = []
        self._seq = itertools.count()
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task | None = None
        self._wake: asyncio.Event | None = None
        self._clock = 0.0  # virtual time: the tag of the sentence that led the last batch

    @property
    def queued(self) -> int:
        """Sentences waiting for the model."""
        return len(self._queue)

    def start(self) -> None:
        """Start the batching loop on the running event loop."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="elmo-model")
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="elmo-batcher")

    async def stop(self) -> None:
        """Stop the loop and the model thread; queued requests and the batch in progress are
        cancelled (the service answers them before it stops: its drain runs first)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for item in self._queue:
            item.future.cancel()
        self._queue.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def embed(
        self, sentences: Sequence[Sentence], owner: Owner | None = None
    ) -> list[np.ndarray]:
        """Vectors of ``sentences``, in order, as the forward function gives them.

        ``owner``: the request they belong to, when it queues its sentences in several
        calls (each call is a request of its own without it). Cancelling the call drops
        its sentences that have not run yet.
        """
        if self._task is None or self._wake is None:
            raise RuntimeError("the batcher is not running")
        loop = asyncio.get_running_loop()
        owner = owner or Owner()
        futures = []
        for sentence in sentences:
            future = loop.create_future()
            owner.finish = max(owner.finish, self._clock) + steps(sentence)
            self._queue.append(Item(sentence, future, next(self._seq), tag=owner.finish))
            futures.append(future)
        self._on_queue(len(self._queue))
        self._wake.set()
        try:
            return list(await asyncio.gather(*futures))
        except BaseException:
            for future in futures:  # a failed or cancelled request frees its queue places
                future.cancel()
            raise

    async def _run(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            self._queue[:] = [item for item in self._queue if not item.future.done()]
            if not self._queue:
                self._on_queue(0)
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = take_batch(self._queue, self.max_batch_tokens, self.max_batch_size)
            self._clock = max(self._clock, min(item.tag for item in batch))
            self._on_queue(len(self._queue))
            started = time.perf_counter()
            try:
                results = await loop.run_in_executor(
                    self._executor, self._forward, [item.sentence for item in batch]
                )
            except asyncio.CancelledError:  # stop(): this batch's requests are not left hanging
                for item in batch:
                    item.future.cancel()
                raise
            except Exception as e:  # the model failed: every request of this batch hears it
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(e)
                continue
            for item, vectors in zip(batch, results, strict=True):
                if not item.future.done():
                    item.future.set_result(vectors)
            self._on_batch(
                BatchStats(
                    sentences=len(batch),
                    tokens=sum(len(item.sentence) for item in batch),
                    padded_steps=len(batch) * max(item.steps for item in batch),
                    queue_times=[started - item.enqueued for item in batch],
                    seconds=time.perf_counter() - started,
                )
            )
