"""One embedding answer of `elmo serve`, from its request body to its last byte.

The body is parsed and tokenized in the service's one CPU worker thread (never on
the event loop). The request's sentences go to the batcher in *groups* (at most
half a model run's token budget and :data:`CHUNK_BYTES` of answer each), at most
:data:`DEPTH` groups queued, the next ones only once a chunk is handed to the
connection: a client that does not read its answer holds about a group's vectors
and two rendered chunks (one in the connection's buffer), never the whole answer,
and a large request takes its fair share of model runs, not all of them.
An answer of one group is sent with a ``Content-Length``; a longer one is
streamed (chunked), group by group, as the client reads.

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
    render_embed,
    render_openai,
)

log = logging.getLogger("elmo.serve")

CLIENT_CLOSED = 499  # nginx's "client closed request": counted, never a 5xx or a traceback
STATUS_KEY = "elmo.status"  # scope key: the status the metrics count when it is not the sent one
CHUNK_BYTES = 2 * 2**20  # answer bytes per group (estimated, as --max-response-mb)
DEPTH = 2  # groups of one request queued ahead of the one being sent

T = TypeVar("T")
Render = Callable[[list[np.ndarray], int], bytes]  # a group's vectors, its first index -> items


@dataclass
class Plan:
    """A parsed request: its sentences, how to render a group of their vectors (comma-separated
    JSON items), what comes before the first and after the last item, and the answer bytes
    each sentence takes (for the groups)."""

    sentences: list[list[str]]
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
        lambda vectors, first: render_embed(vectors, mix, parsed.pooling, parsed.encoding),
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
        lambda vectors, first: render_openai(vectors, first, mix, parsed.encoding),
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
    """A request's groups through the batcher, :data:`DEPTH` queued ahead, rendered in order
    in the CPU thread. :meth:`next` gives each group's JSON items (None after the last);
    :meth:`close` drops what is still queued."""

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
        """Queue groups until :data:`DEPTH` are pending (called once a chunk is handed to the
        connection, so a client that does not read stops the queueing)."""
        while self._groups and len(self._pending) < DEPTH:
            start, end = self._groups.popleft()
            work = self._batcher.embed(self.plan.sentences[start:end], self._owner)
            self._pending.append((start, asyncio.ensure_future(work)))

    async def next(self) -> bytes | None:
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


class Streamed(Response):
    """A 200 answer sent group by group (chunked); the slot is released once it is sent.

    A client that leaves mid-way is counted as 499; at the drain deadline or when the
    model fails mid-way the connection is closed without the last chunk (so the client
    sees an incomplete answer, not a short valid one) and one line is logged.
    """

    def __init__(
        self,
        first: bytes,
        stream: Stream,
        gone: asyncio.Future,
        deadline: asyncio.Event,
        done: Callable[[str | None], None],
    ):
        super().__init__(media_type="application/json")
        self.first, self.stream, self.gone, self.deadline, self.done = (
            first, stream, gone, deadline, done)  # fmt: skip
        del self.headers["content-length"]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        outcome = None
        try:
            await send({"type": "http.response.start", "status": 200,
                        "headers": self.raw_headers})
            await send({"type": "http.response.body", "body": self.first, "more_body": True})
            self.stream.fill()
            while self.stream.more:
                chunk = await race(self.stream.next(), self.gone, self.deadline)
                assert chunk is not None
                await send({"type": "http.response.body", "body": b"," + chunk,
                            "more_body": True})
                self.stream.fill()
            await send({"type": "http.response.body", "body": self.stream.plan.tail})
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
            self.stream.close()
            self.done(outcome)
