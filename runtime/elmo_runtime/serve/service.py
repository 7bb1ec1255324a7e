"""The state behind `elmo serve`: settings, the loaded model, its batcher and metrics."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from ..embedder import Embedder
from ..errors import ElmoError
from ..mix import MODES, Mix, all_layers
from ..settings import MixSpec
from ..version import __version__
from .batcher import Batcher
from .config import ServeConfig
from .metrics import Metrics
from .protocol import Limits, Tokenizer, tokenizer_for

WARMUP = [["The", "service", "warms", "up", "."]]


class Service:
    """A loaded, warmed-up model and everything the routes share.

    Raises :class:`~elmo_runtime.errors.ElmoError` (one line) when the model
    or the mix cannot be loaded or the model fails on the warm-up sentence.
    """

    def __init__(self, config: ServeConfig, embedder: Embedder | None = None):
        self.config = config
        started = time.perf_counter()
        spec = config.embedder.mix
        if embedder is None:  # every layer: the mix is applied per request
            # onnxruntime's arena, shrunk after each run: freed blocks over 256 KiB go back to
            # the system here (command.return_freed_memory), so malloc'ed tensors would be
            # fresh pages every run (32 clients: 0.8x the throughput); an arena kept whole
            # held +172 MiB for 8 clients that never read, against the 100 MiB bound
            embedder = Embedder.from_settings(
                replace(config.embedder, mix=MixSpec(), cpu_memory_arena=True))
        if embedder.stateful:
            raise ElmoError(
                "elmo serve needs a stateless Embedder (vectors must not depend on batch-mates)"
            )
        self.embedder = embedder
        opts = embedder.info.options
        self.n_layers = opts.n_output_layers
        self.dim = 2 * opts.projection_dim
        self.default_mix = spec.label()  # a mode's name, or the mix file's path
        self._mixes: dict[str, Mix] = {
            mode: MixSpec(mode).build(self.n_layers) or all_layers for mode in MODES}
        self._mixes[self.default_mix] = spec.build(self.n_layers) or all_layers
        # /v1/embeddings needs one vector per token before averaging: "all" becomes "average".
        self.openai_mix = "average" if spec.mode == "all" else self.default_mix
        self.tokenizer: Tokenizer = tokenizer_for(config.tokenize)
        self.limits = Limits(config.max_client_batch_size, config.max_input_tokens)
        budget = config.embedder.max_batch_tokens or embedder.max_batch_tokens
        self.metrics = Metrics()
        self.batcher = Batcher(
            self._forward,
            budget,
            config.max_batch_size,
            self.metrics.observe_batch,
            self.metrics.queue_size.set,
        )
        self._forward(WARMUP)
        self.load_seconds = time.perf_counter() - started
        self.model_name = Path(embedder.model_path).name
        self.in_flight = 0  # requests whose body has arrived (the slots)
        self.reading = 0  # requests still receiving their body
        self.cancelled = 0  # requests answered 503 or cut short at the drain deadline
        self.draining = False
        self.drain_deadline = asyncio.Event()  # set --drain-timeout s after the drain began
        self._loop: asyncio.AbstractEventLoop | None = None

    def started(self) -> None:
        """Called in the server's event loop when it starts (the app's lifespan)."""
        self._loop = asyncio.get_running_loop()

    def begin_drain(self) -> None:
        """Stop taking work; ``drain_timeout`` s later :attr:`drain_deadline` is set, and every
        unfinished request is answered 503. Safe to call from a signal handler."""
        self.draining = True
        loop = self._loop
        if loop is not None and not loop.is_closed():
            timeout = self.config.drain_timeout
            loop.call_soon_threadsafe(loop.call_later, timeout, self.drain_deadline.set)

    def _forward(self, sentences: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """All layers ``(L+1, n, 2P)`` float32 of each sentence (runs in the model thread)."""
        return self.embedder.embed_batch(sentences)

    def mix(self, name: str | None) -> Mix:
        """The mix function for a request's ``mix`` (None: the server's default)."""
        return self._mixes[name or self.default_mix]

    def info(self) -> dict:
        """What ``GET /info`` answers."""
        c = self.config
        return {
            "model": self.model_name,
            "model_size_bytes": os.path.getsize(self.embedder.model_path),
            "options": asdict(self.embedder.info.options),
            "producer": self.embedder.info.producer_version,
            "quantization": self.embedder.info.quantization,
            "layers": self.n_layers,
            "dim": self.dim,
            "mix": self.default_mix,
            "openai_mix": self.openai_mix,
            "tokenize": "elmo_runtime.tokenize" if c.tokenize else "whitespace",
            "providers": self.embedder.providers,
            "limits": {
                "max_batch_tokens": self.batcher.max_batch_tokens,
                "max_batch_size": c.max_batch_size,
                "max_concurrent_requests": c.max_concurrent_requests,
                "max_client_batch_size": c.max_client_batch_size,
                "max_input_tokens": c.max_input_tokens,
                "payload_limit": c.payload_limit,
                "body_timeout": c.body_timeout,
                "max_response_mb": c.max_response_mb,
                **c.connection_limits(),
            },
            "load_seconds": round(self.load_seconds, 3),
            "version": __version__,
        }
