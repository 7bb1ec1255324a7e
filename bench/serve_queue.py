"""The serve batcher's queue policies replayed without a model: model work per token and a
one-word request's wait, deterministic (no timing).

    python bench/serve_queue.py

Model work is the batcher's own cost model, ``longest x (rows + ROW_OVERHEAD)`` steps per
run. Two scenarios over bench/serve.py's seeded sentences: (1) 32 clients, each with one
4-sentence request outstanding, a new one as soon as its last sentence ran (tokens per
unit of work, higher is better); (2) four 64-sentence requests queued, one run taken, then
a one-word request: the work run until it is served, its own run included. Policies: FIFO
(the service before the fair queue), ``finish`` tags (self-clocked fair queueing, what
the service does), ``start`` tags (start-time fair queueing) and ``call`` (one finish tag
for all the sentences of one batcher call, i.e. per group).
"""

from __future__ import annotations

import asyncio

from elmo_runtime.serve import batcher as B
from serve import make_sentences

POLICIES = ("fifo", "finish", "start", "call")


class _Queue:
    def __init__(self, policy: str):
        self.policy, self.items, self.seq, self.clock = policy, [], 0, 0.0
        self.loop = asyncio.new_event_loop()

    def add_call(self, sentences: list[list[str]], owner: list[float], client: int = -1) -> list:
        """One embed() call (a group): under "call" its sentences share the call's finish tag."""
        if self.policy != "call":
            return [self.add(s, owner, client) for s in sentences]
        owner[0] = max(owner[0], self.clock) + sum(B.steps(s) for s in sentences)
        return [self.add(s, owner, client, tag=owner[0]) for s in sentences]

    def add(self, sentence: list[str], owner: list[float], client: int = -1,
            tag: float | None = None) -> B.Item:
        start = max(owner[0], self.clock)
        if tag is None:
            owner[0] = start + B.steps(sentence)
            tag = {"fifo": 0.0, "finish": owner[0], "start": start}[self.policy]
        item = B.Item(sentence, self.loop.create_future(), self.seq, tag=tag)
        item.client = client  # type: ignore[attr-defined]
        self.seq += 1
        self.items.append(item)
        return item

    def take(self, budget: int, rows: int) -> tuple[list[B.Item], float]:
        batch = B.take_batch(self.items, budget, rows)
        self.clock = max(self.clock, min(i.tag for i in batch))
        return batch, max(i.steps for i in batch) * (len(batch) + B.ROW_OVERHEAD)


def clients(policy: str, count: int = 32, per: int = 4, budget: int = 4096) -> float:
    sentences = make_sentences(1200)
    shares = [sentences[k::count] for k in range(count)]
    queue, left, done = _Queue(policy), [0] * count, [0] * count

    def submit(k: int) -> None:
        chunk = shares[k][done[k] : done[k] + per]
        done[k] += per
        queue.add_call(chunk, [0.0], k)
        left[k] = len(chunk)

    for k in range(count):
        submit(k)
    tokens = work = 0.0
    while queue.items:
        batch, cost = queue.take(budget, 64)
        tokens += sum(len(i.sentence) for i in batch)
        work += cost
        for item in batch:
            left[item.client] -= 1
            if left[item.client] == 0:
                submit(item.client)
    return tokens / work


def one_word_wait(policy: str, large: int = 4, per: int = 64, budget: int = 4096) -> float:
    sentences = make_sentences(1200)
    queue = _Queue(policy)
    for k in range(large):
        owner, group, steps = [0.0], [], 0
        for s in sentences[k * per : (k + 1) * per]:  # the service's groups: half a budget
            if group and steps + B.steps(s) > budget // 2:
                queue.add_call(group, owner)
                group, steps = [], 0
            group.append(s)
            steps += B.steps(s)
        queue.add_call(group, owner)
    queue.take(budget, 64)
    small = queue.add_call([["word"]], [0.0])[0]
    waited = 0.0
    while True:
        batch, cost = queue.take(budget, 64)
        waited += cost
        if small in batch:
            return waited


if __name__ == "__main__":
    print("| policy | 32 clients: tokens / work | one word behind 4 x 64 sentences: work |")
    print("| --- | ---: | ---: |")
    for policy in POLICIES:
        print(f"| {policy} | {clients(policy):.4f} | {one_word_wait(policy):,.0f} |")
