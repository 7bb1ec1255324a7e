"""One embedding answer of `elmo serve`, from its request body to its last byte.

The body is parsed and tokenized in the service's one CPU worker thread (never on
the event loop). The request's sentences go to the batcher in *groups* (at most
half a model run's token budget and :data:`CHUNK_BYTES` of answer each), at most
:data:`DEPTH` groups queued, the next ones only once a group is handed to the
connection. A group's vectors are reduced (mixed, pooled) as soon as they come
back and rendered only when the connection is ready for them, and the rendered
text is handed over :data:`SLICE_BYTES` at a time, each slice only once the
connection's buffer has drained. So a client that does not read its answer holds
one rendered group, one slice and :data:`DEPTH` groups of reduced vectors, never
the whole answer, and a large request takes its fair share of model runs, not
all of them. An answer of one group is sent with a ``Content-Length``; a longer
one is streamed (chunked), group by group, as the client reads.

While the request waits, a watcher reads the connection: a client that hangs up
has its queued sentences dropped before they run and is counted as 499.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ..errors import first_line
from .batcher import Batcher, Owner, steps
from .protocol import (
    BYTES_PER_VALUE,
    EMBED_HEAD,
    EMBED_TAIL,
    OPENAI_HEAD,
    ApiError,
    check_response_size,
    load_json,
    openai_tail,
    parse_embed,
    parse_openai,
    reduce_embed,
    reduce_openai,
    render_embed,
    render_openai,
)

log = logging.getLogger("elmo.serve")

CLIENT_CLOSED = 499  # nginx's "client closed request": counted, never a 5xx or a traceback
STATUS_KEY = "elmo.status"  # scope key: the status the metrics count when it is not the sent one
CHUNK_BYTES = 2 * 2**20  # answer bytes per group (estimated, as --max-response-mb)
DEPTH = 2  # groups of one request queued ahead of the one being sent
SLICE_BYTES = 256 * 2**10  # answer bytes handed to the connection at a time

T = TypeVar("T")
Reduce = Callable[[np.ndarray], np.ndarray]  # a sentence's layers -> the vectors it answers
Render = Callable[[list[np.ndarray], int], memoryview]  # reduced vectors, first index -> items


@dataclass
class Plan:
    """A parsed request: its sentences, how to reduce a sentence's layers to what is answered
    (mix, pooling) and render a group of them (comma-separated JSON items), what comes
    before the first and after the last item, and the answer bytes each sentence takes
    (for the groups)."""

    sentences: list[list[str]]
    reduce: Reduce
    render: Render
    head: bytes
    tail: bytes
    sentence_bytes: Callable[[Sequence[str]], float]


def plan_embed(raw: bytes, service: Any) -> Plan:
    """``POST /embed``: parse, tokenize and check a body (4xx ApiError), in the CPU thread."""
    parsed = parse_embed(load_json(raw), service.tokenizer, service.limits)
    per_token = (service.n_layers if (parsed.mix or service.default_mix) == "all" else 1)
    per_token *= service.dim

    def values(sentence: Sequence[str]) -> int:
        return per_token * (1 if parsed.pooling == "mean" else len(sentence))

    check_response_size(
        [values(s) for s in parsed.sentences], parsed.encoding, service.config.max_response_mb
    )
    mix = service.mix(parsed.mix)
    size = BYTES_PER_VALUE[parsed.encoding]
    return Plan(
        parsed.sentences,
        lambda layers: reduce_embed(layers, mix, parsed.pooling),
        lambda vectors, first: render_embed(vectors, parsed.encoding),
        EMBED_HEAD,
        EMBED_TAIL,
        lambda sentence: values(sentence) * size,
    )


def plan_openai(raw: bytes, service: Any) -> Plan:
    """``POST /v1/embeddings``: parse, tokenize and check a body (4xx ApiError)."""
    parsed = parse_openai(load_json(raw), service.tokenizer, service.limits, service.dim)
    check_response_size(
        [service.dim] * len(parsed.sentences), parsed.encoding, service.config.max_response_mb
    )
    mix = service.mix(service.openai_mix)
    size = service.dim * BYTES_PER_VALUE[parsed.encoding]
    return Plan(
        parsed.sentences,
        lambda layers: reduce_openai(layers, mix),
        lambda vectors, first: render_openai(vectors, first, parsed.encoding),
        OPENAI_HEAD,
        openai_tail(parsed.sentences, service.model_name),
        lambda sentence: size,
    )


def group_bounds(
    sentences: Sequence[Sequence[str]],
    max_steps: int,
    sentence_bytes: Callable[[Sequence[str]], float],
    max_bytes: float = CHUNK_BYTES,
) -> list[tuple[int, int]]:
    """``[(start, end), ...]``: consecutive groups of at most ``max_steps`` model steps and
    ``max_bytes`` of answer (a sentence over either is a group of its own)."""
    bounds, start, total_steps, total_bytes = [], 0, 0, 0.0
    for i, sentence in enumerate(sentences):
        n, size = steps(sentence), sentence_bytes(sentence)
        if i > start and (total_steps + n > max_steps or total_bytes + size > max_bytes):
            bounds.append((start, i))
            start, total_steps, total_bytes = i, 0, 0.0
        total_steps += n
        total_bytes += size
    bounds.append((start, len(sentences)))
    return bounds


class Stream:
    """A request's groups through the batcher, :data:`DEPTH` queued ahead, each reduced when
    its vectors come back and rendered in order when asked for, both in the CPU thread.
    :meth:`next` gives each group's JSON items (None after the last); :meth:`close` drops
    what is still queued."""

    def __init__(self, batcher: Batcher, plan: Plan, cpu: Executor):
        self.plan = plan
        self._batcher = batcher
        self._cpu = cpu
        self._owner = Owner()
        budget = max(1, batcher.max_batch_tokens // 2)
        self._groups = deque(group_bounds(plan.sentences, budget, plan.sentence_bytes))
        self._pending: deque[tuple[int, asyncio.Task]] = deque()
        self.fill()

    @property
    def more(self) -> bool:
        """Whether a group is still to come."""
        return bool(self._pending or self._groups)

    def fill(self) -> None:
        """Queue groups until :data:`DEPTH` are pending (called once a group is handed to the
        connection, so a client that does not read stops the queueing)."""
        while self._groups and len(self._pending) < DEPTH:
            start, end = self._groups.popleft()
            work = self._reduced(self.plan.sentences[start:end])
            self._pending.append((start, asyncio.ensure_future(work)))

    async def _reduced(self, sentences: list[list[str]]) -> list[np.ndarray]:
        layers = await self._batcher.embed(sentences, self._owner)
        reduce = self.plan.reduce
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._cpu, lambda: [reduce(v) for v in layers])

    async def next(self) -> memoryview | None:
        """The next group's JSON items (None after the last)."""
        if not self._pending:
            self.fill()
        if not self._pending:
            return None
        start, task = self._pending[0]
        vectors = await task
        self._pending.popleft()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._cpu, self.plan.render, vectors, start)

    def close(self) -> None:
        for _, task in self._pending:
            task.cancel()
        self._pending.clear()
        self._groups.clear()


class Gone(Exception):
    """The client closed the connection."""


class Deadline(Exception):
    """The drain deadline passed."""


async def watch_disconnect(receive: Receive) -> None:
    """Returns when the client has closed the connection (call once the body is read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def race(
    work: Awaitable[T], gone: asyncio.Future | None, deadline: asyncio.Event
) -> T:
    """``work``'s result; Gone when ``gone`` finishes first, Deadline when ``deadline`` is set
    first (``work`` is cancelled then)."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(deadline.wait())
    watched = {task, stopper} if gone is None else {task, gone, stopper}
    try:
        await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
    if task.done() and not task.cancelled():
        return task.result()
    raise Gone if gone is not None and gone.done() else Deadline


class Answer(Response):
    """A 200 answer: the head, the first group's ``items`` (rendered before the answer
    starts, so an error before it is still a plain 4xx/5xx), then the stream's other
    groups, then the tail. One group: sent with a ``Content-Length``; more: chunked, group
    by group as the client reads. Every part is handed to the connection in
    :data:`SLICE_BYTES` slices, each once the previous one has drained, and dropped once
    handed. ``done`` (the slot's release) is called once it is sent or given up.

    A client that leaves mid-way is counted as 499; at the drain deadline (also while a
    client that does not read holds a send) or when the model fails mid-way the
    connection is closed without the last chunk (so the client sees an incomplete
    answer, not a short valid one) and one line is logged.
    """

    def __init__(
        self,
        items: memoryview | bytes,
        stream: Stream,
        gone: asyncio.Future,
        deadline: asyncio.Event,
        done: Callable[[str | None], None],
    ):
        super().__init__(media_type="application/json")
        self.items, self.stream, self.gone, self.deadline, self.done = (
            items, stream, gone, deadline, done)  # fmt: skip
        plan = stream.plan
        if stream.more:
            del self.headers["content-length"]
        else:
            self.headers["content-length"] = str(len(plan.head) + len(items) + len(plan.tail))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        outcome = None
        stream, plan = self.stream, self.stream.plan

        async def hand(data: memoryview | bytes, more: bool = True) -> None:
            view = memoryview(data)
            for at in range(0, max(1, len(view)), SLICE_BYTES):
                if self.deadline.is_set():  # (a send its client blocks is dropped by the guard)
                    raise Deadline
                if self.gone.done():
                    raise Gone
                last = not more and at + SLICE_BYTES >= len(view)
                await send({"type": "http.response.body", "body": bytes(view[at:at + SLICE_BYTES]),
                            "more_body": not last})

        try:
            await send({"type": "http.response.start", "status": 200,
                        "headers": self.raw_headers})
            await hand(plan.head)
            items, self.items = self.items, b""
            await hand(items)
            del items
            stream.fill()
            while stream.more:
                items = await race(stream.next(), self.gone, self.deadline)
                assert items is not None
                await hand(b",")
                await hand(items)
                del items
                stream.fill()
            await hand(plan.tail, more=False)
        except Gone:
            scope[STATUS_KEY] = CLIENT_CLOSED
        except Deadline:
            outcome = "deadline"
        except ApiError as e:
            log.warning("elmo serve: an answer cut short: %s", e.message)
        except Exception as e:  # the model failed mid-way: the head is sent, close instead
            log.warning("elmo serve: an answer cut short: %s: %s", type(e).__name__,
                        first_line(e))
        finally:
            stream.close()
            self.done(outcome)
