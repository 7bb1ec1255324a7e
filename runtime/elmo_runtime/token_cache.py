"""Token vectors computed once per distinct token, and reused across batches.

ELMo's first stage (char CNN, highway, projection) depends on the token's
characters only, so the graph encodes each *distinct* token of a batch once
(``token_chars``) and a step points at its row (``token_index``), see
:mod:`elmo_runtime.format.contract`. :class:`TokenCache` builds those inputs from
token strings with the one packer, :func:`elmo_runtime.format.chars.pack`, and
keeps the vectors the graph returns (``token_vectors``) in a
least-recently-used cache of fixed capacity, fed back as
``cached_vectors``: a token seen before skips the char CNN entirely. The
vectors are the graph's own outputs, so cached and uncached runs agree to
float32 rounding (the tests hold them to 1e-6).

Memory is bounded: ``capacity`` vectors of ``P`` float32 in one preallocated
array (pages are touched only when used) plus one dict entry per token.

Threads: one lock guards the cache. :meth:`TokenCache.plan` looks tokens up
and copies their vectors under it, :meth:`TokenCache.store` assigns slots
under it, and a token another thread stored meanwhile keeps its one slot, so
an :class:`~elmo_runtime.embedder.Embedder` shared by threads gives the
vectors each thread would get alone (the graph runs outside the lock).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .format import chars

DEFAULT_CACHE_MB = 32.0  # vectors only; 65,536 tokens for P = 128, 16,384 for P = 512
N_BOUNDARY_ROWS = chars.N_BOUNDARY_ROWS  # token_chars rows 0 and 1 are always <S> and </S>


def capacity_for(megabytes: float, dim: int) -> int:
    """How many ``dim``-wide float32 vectors fit in ``megabytes`` MiB."""
    if megabytes < 0:
        raise ValueError(f"token cache size must be >= 0 MiB, found {megabytes}")
    return int(megabytes * 2**20) // (4 * dim)


@dataclass(frozen=True)
class TokenPlan:
    """The token inputs of one graph run, and which tokens it encodes."""

    token_chars: np.ndarray  # int32 (N, C): <S>, </S>, then the tokens not cached
    cached_vectors: np.ndarray  # float32 (M, P): cached tokens of this batch
    token_index: np.ndarray  # int32 (B, T): row of concat(encoded, cached); -1 = padding
    new_tokens: list[str]  # the strings of token_chars[2:], in order
    word_ids: np.ndarray | None = None  # int32 (N,): models with a word branch only


class TokenCache:
    """Graph token inputs from sentences, with an LRU cache of ``capacity`` token vectors.

    ``capacity`` 0 still deduplicates within each batch but keeps nothing.
    """

    def __init__(self, max_chars: int, dim: int, capacity: int,
                 scheme: chars.TokenScheme | None = None) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, found {capacity}")
        self.scheme = scheme  # a learned vocabulary (ModelInfo.vocabulary); None: bilm-tf bytes
        self.max_chars = max_chars
        self.dim = dim
        self.capacity = capacity
        self._slots: OrderedDict[str, int] = OrderedDict()  # token → row of _vectors, LRU first
        self._vectors: np.ndarray | None = None  # allocated on first store
        self._lock = threading.Lock()  # _slots, _vectors and the counters
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, token: object) -> bool:
        return token in self._slots

    @property
    def nbytes(self) -> int:
        """Bytes reserved for cached vectors (at most ``capacity × dim × 4``)."""
        return 0 if self._vectors is None else self._vectors.nbytes

    def clear(self) -> None:
        with self._lock:
            self._slots.clear()
            self._vectors = None

    def __getstate__(self) -> dict:
        """Pickled empty (a cache is this process's memory), without its lock."""
        state = {k: v for k, v in self.__dict__.items() if k != "_lock"}
        state.update(_slots=OrderedDict(), _vectors=None, hits=0, misses=0)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def plan(self, sentences: Sequence[Sequence[str]]) -> TokenPlan:
        """Inputs for a batch of tokenized sentences (boundaries are added here).

        Raises InputError for a token that is not encodable as UTF-8.
        """
        with self._lock:
            return self._plan(sentences)

    def _plan(self, sentences: Sequence[Sequence[str]]) -> TokenPlan:
        slots = self._slots

        def lookup(token: str) -> int | None:
            slot = slots.get(token)
            if slot is not None:
                slots.move_to_end(token)
            return slot

        packed = chars.pack(sentences, self.max_chars, lookup if slots else None, self.scheme)
        real = packed.token_index[packed.token_index >= 0]
        n_steps = len(real) - N_BOUNDARY_ROWS * len(sentences)
        hits = int((real >= len(packed.token_chars)).sum())
        self.hits += hits
        self.misses += n_steps - hits
        if packed.cached:
            assert self._vectors is not None
            cached = self._vectors[np.asarray(packed.cached)]
        else:
            cached = np.zeros((0, self.dim), dtype=np.float32)
        return TokenPlan(packed.token_chars, cached, packed.token_index, packed.new_tokens,
                         packed.word_ids)

    def store(self, plan: TokenPlan, token_vectors: np.ndarray) -> None:
        """Keep the vectors the graph returned for ``plan``'s new tokens (LRU eviction)."""
        if self.capacity == 0 or not plan.new_tokens:
            return
        expected = (N_BOUNDARY_ROWS + len(plan.new_tokens), self.dim)
        if token_vectors.shape != expected:
            raise ValueError(f"token_vectors has shape {token_vectors.shape}, expected {expected}")
        with self._lock:
            if self._vectors is None:
                self._vectors = np.empty((self.capacity, self.dim), dtype=np.float32)
            # The most recent tokens win when a batch brings more than fit.
            start = max(0, len(plan.new_tokens) - self.capacity)
            for token, vector in zip(plan.new_tokens[start:],
                                     token_vectors[N_BOUNDARY_ROWS + start:], strict=True):
                slot = self._slots.get(token)  # stored by another thread since plan()
                if slot is not None:
                    self._slots.move_to_end(token)
                    continue  # its one slot already holds its vector
                if len(self._slots) < self.capacity:
                    slot = len(self._slots)
                else:
                    _, slot = self._slots.popitem(last=False)
                self._slots[token] = slot
                self._vectors[slot] = vector
