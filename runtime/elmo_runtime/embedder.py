"""Embedder: the public entry point (tokens in, ELMo vectors out).

>>> emb = Embedder("model.onnx")
>>> emb.embed_sentence(["The", "cat", "sat"]).shape  # (L+1, 3, 2P)

Sentences are lists of tokens; the runtime adds ``<S>``/``</S>`` and strips
them from the outputs. By default every sentence starts from a zero LSTM
state (stateless), so its vectors do not depend on what ran before. With
``stateful=True`` the state carries over between calls by **batch row**, as
bilm-tf and AllenNLP do it (docs/elmo-spec.md, "State across batches").

Threads: one Embedder may be shared. onnxruntime runs concurrent calls on
one session; the token cache is guarded by its lock; a stateless sentence's
vectors are what it gets alone (within 1e-6: a cached token vector against
one just computed). A stateful Embedder's rows are one state: threads sharing
it take turns and continue each other's rows, so give each stream its own.
Processes: an Embedder pickles as its recipe (model and settings) and opens
its own session where it is unpickled (ProcessPoolExecutor, joblib, Ray).
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from .batching import DEFAULT_BATCH_SIZE, bucketed, chunks, in_order, max_tokens_for
from .corpus import MAX_TOKENS
from .errors import ElmoError, InputError, SettingError, first_line
from .format import contract
from .loading.loaded import open_model
from .loading.model_file import ModelFile, locate, resolve_model
from .loading.session import shrink_options
from .mix import ScalarMix, top_layer
from .models import names as model_names
from .settings import EmbedderSettings, MixSpec
from .states import RowStates
from .token_cache import DEFAULT_CACHE_MB, TokenCache, TokenPlan, capacity_for

Sentence = Sequence[str]


def default_model_path() -> Path:
    """The model bundled with this installation (``elmo_runtime/models/default.onnx``)."""
    return resolve_model(None)


def check_sentence(sentence: object, index: int, max_tokens: int = MAX_TOKENS) -> None:
    """Raise InputError unless ``sentence`` is a list/tuple of at most ``max_tokens``
    (default :data:`~elmo_runtime.corpus.MAX_TOKENS`) non-empty strings."""
    if isinstance(sentence, str):
        raise InputError(
            f"sentence {index}: expected a list of tokens, got a str; use text.split()"
        )
    if not isinstance(sentence, (list, tuple)):
        raise InputError(
            f"sentence {index}: expected a list of tokens, got a {type(sentence).__name__}"
        )
    if len(sentence) > max_tokens:
        raise InputError(
            f"sentence {index}: {len(sentence)} tokens, more than {max_tokens} (the most a "
            "sentence may have: memory grows with it); split it"
        )
    for j, token in enumerate(sentence):
        if not isinstance(token, str):
            raise InputError(
                f"sentence {index}: token {j} is a {type(token).__name__}, expected a str"
            )
        if not token:
            raise InputError(f"sentence {index}: token {j} is an empty string")


class Embedder:
    """ELMo vectors from an exported elmo-edge ONNX model.

    ``model``: path of the .onnx file, a bundled model's name (None: the
    bundled default model), or a :class:`~.loading.model_file.ModelFile`
    located before. Every other parameter is keyword-only (AllenNLP's
    ``ElmoEmbedder(options_file, weight_file)`` does not carry over: convert
    those files with ``elmo convert`` first; passing them is a ModelError
    that says so). They are the fields of
    :class:`~elmo_runtime.settings.EmbedderSettings`, checked there, once
    (a value out of range: SettingError, a ValueError):
    ``stateful``: carry LSTM states across calls by batch row (bilm-tf style).
    ``provider``: "auto", "cpu" or "cuda"; ``threads``: intra-op threads (None: the
    CPUs this process may use: its affinity and cgroup quota, :mod:`elmo_runtime.cpus`).
    ``mix``: None or "all" (every layer, ``(L+1, n, 2P)``), "top", "average",
    a :class:`ScalarMix`, a :class:`~elmo_runtime.settings.MixSpec` or the
    path of a mix JSON file (``(n, 2P)``).
    ``max_batch_tokens``: cap on padded steps (rows x (longest + 2)) per batch in
    :meth:`embed_sentences`; by default :func:`~.batching.max_tokens_for` the
    model's LSTM width: 6,400, less for wide LSTMs so that one layer's hoisted
    input projection stays within 32 MiB (4,096 steps for the bundled model,
    512 for the original ELMo size). ``max_tokens_per_batch`` is its former
    name (deprecated: a DeprecationWarning). Zero or negative is refused.
    ``token_cache_mb``: memory for the vectors of tokens seen before (LRU), so the
    char CNN runs once per distinct token string; 0 turns the cache off (tokens
    are still encoded once per batch). Results do not depend on it.
    ``max_sentence_tokens``: the most tokens a sentence may have (default 10,000,
    :data:`~elmo_runtime.corpus.MAX_TOKENS`; InputError beyond). Memory grows with a
    sentence's length: a sentence longer than the batch cap runs alone, and the original
    ELMo size needs about 0.5 MB per token for its outputs plus the LSTM's input
    projection (bench/RESULTS.md, "Long sequences").
    ``batch_size``: the default of :meth:`embed_sentences`.
    :meth:`from_settings` builds one from settings made before.

    Attributes: ``settings`` (the resolved
    :class:`~elmo_runtime.settings.EmbedderSettings`: the model's absolute
    path included), ``model_path`` (Path of the .onnx file), ``info``
    (:class:`~elmo_runtime.format.contract.ModelInfo` from its metadata), ``mix``
    (the resolved mix: None for all layers, "top" or a :class:`ScalarMix`),
    ``max_batch_tokens`` (the cap in force), ``max_sentence_tokens``,
    ``stateful``, ``token_cache``.
    Literal ``"<S>"`` / ``"</S>"`` tokens are the sentence-boundary rows, as in
    bilm-tf and AllenNLP (:mod:`elmo_runtime.format.chars`).
    """

    def __init__(
        self,
        model: str | os.PathLike | ModelFile | None = None,
        *,
        stateful: bool = False,
        provider: str = "auto",
        threads: int | None = None,
        mix: str | os.PathLike | ScalarMix | MixSpec | None = None,
        max_batch_tokens: int | None = None,
        token_cache_mb: float = DEFAULT_CACHE_MB,
        max_sentence_tokens: int = MAX_TOKENS,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_tokens_per_batch: int | None = None,
    ):
        if max_tokens_per_batch is not None:
            warnings.warn("Embedder(max_tokens_per_batch=...) is deprecated: pass "
                          "max_batch_tokens=...", DeprecationWarning, stacklevel=2)
            if max_batch_tokens is not None and max_batch_tokens != max_tokens_per_batch:
                raise SettingError("give max_batch_tokens once (max_tokens_per_batch is its "
                                   "former name)")
            max_batch_tokens = max_tokens_per_batch
        settings = EmbedderSettings(
            model=model,  # type: ignore[arg-type]  (a path or ModelFile: its str)
            stateful=stateful, provider=provider, threads=threads, mix=MixSpec.of(mix),
            max_batch_tokens=max_batch_tokens, token_cache_mb=token_cache_mb,
            max_sentence_tokens=max_sentence_tokens, batch_size=batch_size,
        )
        file = None
        if isinstance(model, ModelFile):
            file = model
        elif isinstance(model, os.PathLike):  # a Path is always a path, never a bundled name
            file = locate(Path(model))
        self._load(settings, file)

    @classmethod
    def from_settings(cls, settings: EmbedderSettings, file: ModelFile | None = None) -> Embedder:
        """The Embedder ``settings`` describe. ``file``: their model, located before (then it
        is neither resolved nor sniffed again); else :meth:`EmbedderSettings.locate`."""
        emb = cls.__new__(cls)
        emb._load(settings, file)
        return emb

    def _load(self, settings: EmbedderSettings, file: ModelFile | None) -> None:
        file = settings.locate() if file is None else file
        self.settings = settings.resolved(file)
        loaded = open_model(file, settings.provider, settings.threads,
                            cpu_memory_arena=settings.cpu_memory_arena)
        self.model_path, self._session, self.info = loaded.path, loaded.session, loaded.info
        self.stateful = settings.stateful
        self.max_sentence_tokens = settings.max_sentence_tokens
        opts = self.info.options
        self.max_batch_tokens = settings.max_batch_tokens or max_tokens_for(opts.lstm_dim)
        self._mix = settings.mix.build(opts.n_output_layers)
        self._zero_c = np.zeros((2, opts.n_layers, 1, opts.lstm_dim), dtype=np.float32)
        self._zero_h = np.zeros((2, opts.n_layers, 1, opts.projection_dim), dtype=np.float32)
        self._states = RowStates(opts.n_layers, opts.lstm_dim, opts.projection_dim)
        self.token_cache = TokenCache(
            opts.max_characters_per_token,
            opts.projection_dim,
            capacity_for(settings.token_cache_mb, opts.projection_dim),
            scheme=self.info.vocabulary,
        )
        self._run_options = shrink_options(self.providers, settings.cpu_memory_arena)
        self._state_lock = threading.Lock()

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickled as its recipe, :attr:`settings` (the mix as data, a bundled model by its
        name, another by its absolute path); unpickling opens a new session (an
        onnxruntime session cannot be pickled). States and the token cache start empty."""
        settings = self.settings
        if settings.model is None or settings.model in model_names():
            settings = replace(settings, path=None)  # found in the receiver's installation
        return Embedder.from_settings, (settings,)

    @property
    def max_tokens_per_batch(self) -> int:
        """The former name of :attr:`max_batch_tokens` (read-only)."""
        return self.max_batch_tokens

    @property
    def mix(self) -> str | ScalarMix | None:
        """The resolved layer mix: None (every layer, ``(L+1, n, 2P)``), "top" or a ScalarMix.

        "average" resolves to the :class:`ScalarMix` of equal weights, a mix
        file to its ScalarMix. ``settings.mix`` is the same mix as data
        (:class:`~elmo_runtime.settings.MixSpec`), what engines record.
        """
        return "top" if self._mix is top_layer else self._mix  # type: ignore[return-value]

    def __repr__(self) -> str:
        return (f"Embedder({str(self.model_path)!r}, mix={self.settings.mix.key()!r}, "
                f"stateful={self.stateful}, providers={self.providers})")

    @property
    def providers(self) -> list[str]:
        """Execution providers of the session, in priority order."""
        return self._session.get_providers()

    def reset_states(self) -> None:
        """Forget the LSTM states of stateful mode (every row starts from zero again)."""
        self._states.reset()

    def embed_sentence(self, sentence: Sentence) -> np.ndarray:
        """Vectors of one sentence: float32 ``(L+1, n, 2P)``, or ``(n, 2P)`` with a mix."""
        return self.embed_batch([sentence])[0]

    def embed_batch(self, sentences: Iterable[Sentence]) -> list[np.ndarray]:
        """Vectors of each sentence, in input order.

        Stateless: forward passes of at most :attr:`max_batch_tokens`
        padded steps, cut as :meth:`embed_sentences` cuts them (a large batch
        is split; the vectors do not depend on it). Stateful: one forward
        pass, since a sentence's row decides which state it continues.
        """
        sentences = list(sentences)
        for i, sentence in enumerate(sentences):
            check_sentence(sentence, i, self.max_sentence_tokens)
        if self.stateful or not sentences:
            return self._forward(sentences)
        out: list[np.ndarray] = [None] * len(sentences)  # type: ignore[list-item]
        batches = bucketed(sentences, _steps, len(sentences), self.max_batch_tokens)
        for index, vectors in self._forward_indexed(batches):
            out[index] = vectors
        return out

    def embed_sentences(
        self, sentences: Iterable[Sentence], batch_size: int | None = None
    ) -> Iterator[np.ndarray]:
        """Vectors of each sentence of a (possibly huge) iterable, in input order.

        Stateless: sentences are bucketed by length a window at a time, at most
        ``batch_size`` (None: ``settings.batch_size``) and :attr:`max_batch_tokens`
        padded steps a batch. Stateful: consecutive batches of ``batch_size`` in
        input order, since a sentence's row decides which state it continues.
        Raises SettingError (a ValueError) for a ``batch_size`` that is not a
        positive integer.
        """
        if batch_size is None:
            batch_size = self.settings.batch_size
        elif batch_size != self.settings.batch_size:
            batch_size = replace(self.settings, batch_size=batch_size).batch_size  # checked
        checked = (_checked(s, i, self.max_sentence_tokens) for i, s in enumerate(sentences))
        if self.stateful:
            return (out for chunk in chunks(checked, batch_size) for out in self._forward(chunk))
        batches = bucketed(checked, _steps, batch_size, self.max_batch_tokens)
        return in_order(self._forward_indexed(batches))

    def _forward_indexed(
        self, batches: Iterable[list[tuple[int, Sentence]]]
    ) -> Iterator[tuple[int, np.ndarray]]:
        for batch in batches:
            indices = [i for i, _ in batch]
            yield from zip(indices, self._forward([s for _, s in batch]), strict=True)

    def _forward(self, sentences: Sequence[Sentence]) -> list[np.ndarray]:
        """One model run over checked sentences; per-sentence arrays, boundaries removed.

        Stateful: the rows' states are read, run and written back under one lock, so
        threads sharing the embedder take turns (each call continues the rows the
        call before it left, whichever thread made it). A single stateless sentence
        longer than the batch cap runs in pieces (:meth:`_forward_long`), so that its
        memory stays that of its output plus a constant.
        """
        if not sentences:
            return []
        if self.stateful:
            with self._state_lock:
                return self._run(sentences)
        if len(sentences) == 1 and _steps(sentences[0]) > self.max_batch_tokens:
            return [self._forward_long(sentences[0])]
        return self._run(sentences)

    def _run(self, sentences: Sequence[Sentence]) -> list[np.ndarray]:
        plan = self.token_cache.plan(sentences)
        feed = _feed(plan, plan.token_index, *self._initial_state(len(sentences)))
        try:
            outputs = self._session.run(self._fetch(self.stateful), feed, self._run_options)
        except Exception as e:  # onnxruntime raises its own pybind11 exception types
            first = first_line(e)
            batch, steps = plan.token_index.shape
            raise ElmoError(
                f"{self.model_path}: onnxruntime failed on a batch of {batch} sentences "
                f"x {steps} steps: {first}"
            ) from e
        if self.token_cache.capacity:
            self.token_cache.store(plan, outputs[-1])
        if self.stateful:
            self._keep_state(outputs[1], outputs[2])
        layers = outputs[0]
        return [self._finish(layers[i, :, 1 : 1 + len(s)]) for i, s in enumerate(sentences)]

    def _forward_long(self, sentence: Sentence) -> np.ndarray:
        """One long sentence in pieces of ``C = max_batch_tokens // 2`` steps, with a
        memory of its output ``(L+1, n, 2P)`` plus what one piece takes.

        The forward LSTMs only look back and the backward ones only ahead, so each call
        runs two rows: row 0 the pieces first to last, carrying the forward state, row 1
        last to first, carrying the backward state (the graph runs both directions on both
        rows; each row's other half is dropped). The steps are those of the whole
        sentence, ``<S>`` and ``</S>`` included, so the vectors are the whole run's
        (tests/runtime/test_long.py holds them to it).
        """
        opts = self.info.options
        p = opts.projection_dim
        tokens = ["<S>", *sentence, "</S>"]  # literal boundaries are the boundary rows
        steps = len(tokens)
        size = max(1, self.max_batch_tokens // 2)
        pieces = [(start, min(start + size, steps)) for start in range(0, steps, size)]
        out = np.empty((opts.n_output_layers, len(sentence), 2 * p), dtype=np.float32)
        c = np.zeros((2, opts.n_layers, 2, opts.lstm_dim), dtype=np.float32)
        h = np.zeros((2, opts.n_layers, 2, p), dtype=np.float32)
        for t in range(len(pieces)):
            spans = (pieces[t], pieces[len(pieces) - 1 - t])  # row 0 forward, row 1 backward
            rows = [tokens[a:b] for a, b in spans]
            plan = self.token_cache.plan(rows)
            width = max(len(r) for r in rows)
            index = plan.token_index[:, 1 : 1 + width].copy()  # without the plan's own <S>
            for i, r in enumerate(rows):
                index[i, len(r):] = -1
            try:
                layers, c_out, h_out, *vectors = self._session.run(
                    self._fetch(states=True), _feed(plan, index, c, h), self._run_options)
            except Exception as e:  # onnxruntime raises its own pybind11 exception types
                raise ElmoError(f"{self.model_path}: onnxruntime failed on a piece of a "
                                f"{len(sentence)}-token sentence: {first_line(e)}") from e
            if vectors:
                self.token_cache.store(plan, vectors[0])
            c, h = c.copy(), h.copy()
            c[0, :, 0], h[0, :, 0] = c_out[0, :, 0], h_out[0, :, 0]
            c[1, :, 1], h[1, :, 1] = c_out[1, :, 1], h_out[1, :, 1]
            for row, (a, b), half in ((0, spans[0], slice(0, p)), (1, spans[1], slice(p, None))):
                lo, hi = max(a, 1), min(b, steps - 1)  # the sentence's own steps
                if lo >= hi:
                    continue
                piece = layers[row, :, lo - a : hi - a]
                if row == 0:
                    out[0, lo - 1 : hi - 1] = piece[0]
                out[1:, lo - 1 : hi - 1, half] = piece[1:, :, half]
        return out if self._mix is None else self._mix(out)

    def _fetch(self, states: bool) -> list[str]:
        """The outputs a run asks for: the layers, the final states if ``states``, and the
        token vectors when the token cache keeps them."""
        fetch = [contract.OUTPUT_LAYERS]
        if states:
            fetch += [contract.OUTPUT_STATE_C, contract.OUTPUT_STATE_H]
        if self.token_cache.capacity:
            fetch.append(contract.OUTPUT_TOKEN_VECTORS)
        return fetch

    def _finish(self, layers: np.ndarray) -> np.ndarray:
        out = np.array(layers, dtype=np.float32)  # a copy: never keep the whole batch alive
        return out if self._mix is None else self._mix(out)

    def _initial_state(self, rows: int) -> tuple[np.ndarray, np.ndarray]:
        if not self.stateful:
            return self._zero_c, self._zero_h  # the graph broadcasts them to every row
        return self._states.initial(rows)

    def _keep_state(self, final_c: np.ndarray, final_h: np.ndarray) -> None:
        self._states.update(final_c, final_h)


def _feed(plan: TokenPlan, token_index: np.ndarray, state_c: np.ndarray,
          state_h: np.ndarray) -> dict[str, np.ndarray]:
    """A run's inputs: the token cache's ``plan`` (its distinct tokens' char ids, their
    cached vectors, word ids), the ``(batch, steps)`` int32 ``token_index`` into them and
    the initial LSTM states."""
    feed = {
        contract.INPUT_TOKEN_CHARS: plan.token_chars,
        contract.INPUT_TOKEN_INDEX: token_index,
        contract.INPUT_STATE_C: state_c,
        contract.INPUT_STATE_H: state_h,
    }
    if len(plan.cached_vectors):
        feed[contract.INPUT_CACHED_VECTORS] = plan.cached_vectors
    if plan.word_ids is not None:
        feed[contract.INPUT_WORD_IDS] = plan.word_ids
    return feed


def _steps(sentence: Sentence) -> int:
    """Model steps of a sentence: its tokens plus <S> and </S>."""
    return len(sentence) + 2


def _checked(sentence: Sentence, index: int, max_tokens: int) -> Sentence:
    check_sentence(sentence, index, max_tokens)
    return sentence
