"""Embedder: the public entry point (tokens in, ELMo vectors out).

>>> emb = Embedder("model.onnx")
>>> emb.embed_sentence(["The", "cat", "sat"]).shape  # (L+1, 3, 2P)

Sentences are lists of tokens; the runtime adds ``<S>``/``</S>`` and strips
them from the outputs. By default every sentence starts from a zero LSTM
state (stateless), so its vectors do not depend on what ran before. With
``stateful=True`` the state carries over between calls by **batch row**, as
bilm-tf and AllenNLP do it (docs/elmo-spec.md, "State across batches").
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from .batching import DEFAULT_BATCH_SIZE, bucketed, chunks, in_order, max_tokens_for
from .corpus import MAX_TOKENS
from .errors import ElmoError, InputError, first_line
from .format import contract
from .loading.loaded import open_model
from .loading.model_file import ModelFile, resolve_model
from .mix import Mix, ScalarMix, check_mix, load_mix, make_mix, mix_spec
from .states import RowStates
from .token_cache import DEFAULT_CACHE_MB, TokenCache, capacity_for

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
    that says so).
    ``stateful``: carry LSTM states across calls by batch row (bilm-tf style).
    ``provider``: "auto", "cpu" or "cuda"; ``threads``: intra-op threads (None: the
    CPUs this process may use: its affinity and cgroup quota, :mod:`elmo_runtime.cpus`).
    ``mix``: None or "all" (every layer, ``(L+1, n, 2P)``), "top", "average",
    a :class:`ScalarMix` or the path of a mix JSON file (``(n, 2P)``).
    ``max_tokens_per_batch``: cap on padded steps (rows x (longest + 2)) per batch in
    :meth:`embed_sentences`; by default 6,400, less for wide LSTMs so that one
    layer's hoisted input projection stays within 128 MiB (2,048 steps for the
    original ELMo size).
    ``token_cache_mb``: memory for the vectors of tokens seen before (LRU), so the
    char CNN runs once per distinct token string; 0 turns the cache off (tokens
    are still encoded once per batch). Results do not depend on it.
    ``max_sentence_tokens``: the most tokens a sentence may have (default 10,000,
    :data:`~elmo_runtime.corpus.MAX_TOKENS`; InputError beyond). Memory grows with a
    sentence's length: a sentence longer than the batch cap runs alone, and the original
    ELMo size needs about 0.5 MB per token for its outputs plus the LSTM's input
    projection (bench/RESULTS.md, "Long sequences").

    Attributes: ``model_path`` (Path of the .onnx file), ``info``
    (:class:`~elmo_runtime.format.contract.ModelInfo` from its metadata), ``mix``
    (the resolved mix: None for all layers, "top" or a :class:`ScalarMix`),
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
        mix: str | os.PathLike | ScalarMix | None = None,
        max_tokens_per_batch: int | None = None,
        token_cache_mb: float = DEFAULT_CACHE_MB,
        max_sentence_tokens: int = MAX_TOKENS,
    ):
        if (isinstance(max_sentence_tokens, bool) or not isinstance(max_sentence_tokens, int)
                or max_sentence_tokens <= 0):
            raise ValueError(f"max_sentence_tokens must be a positive integer, found "
                             f"{max_sentence_tokens!r}")
        self.max_sentence_tokens = max_sentence_tokens
        loaded = open_model(model, provider, threads)  # None: the default; a bundled name
        self.model_path, self._session, self.info = loaded.path, loaded.session, loaded.info
        self.stateful = stateful
        opts = self.info.options
        self.max_tokens_per_batch = max_tokens_per_batch or max_tokens_for(opts.lstm_dim)
        self._mix = self._resolve_mix(mix)
        self._zero_c = np.zeros((2, opts.n_layers, 1, opts.lstm_dim), dtype=np.float32)
        self._zero_h = np.zeros((2, opts.n_layers, 1, opts.projection_dim), dtype=np.float32)
        self._states = RowStates(opts.n_layers, opts.lstm_dim, opts.projection_dim)
        self.token_cache = TokenCache(
            opts.max_characters_per_token,
            opts.projection_dim,
            capacity_for(token_cache_mb, opts.projection_dim),
            scheme=self.info.vocabulary,
        )

    def _resolve_mix(self, mix: str | os.PathLike | ScalarMix | None) -> Mix | None:
        n_layers = self.info.options.n_output_layers
        if mix is None or mix == "all":
            return None
        if isinstance(mix, str):
            return make_mix(mix, n_layers)
        if isinstance(mix, os.PathLike):
            return load_mix(mix, n_layers)
        if isinstance(mix, ScalarMix):
            return check_mix(mix, n_layers)
        raise TypeError(
            f"mix must be None, 'all', 'top', 'average', a ScalarMix or a path, not {mix!r}"
        )

    @property
    def mix(self) -> str | ScalarMix | None:
        """The resolved layer mix: None (every layer, ``(L+1, n, 2P)``), "top" or a ScalarMix.

        "average" resolves to the :class:`ScalarMix` of equal weights, a mix
        file to its ScalarMix. Engines and writers read this
        (:func:`elmo_runtime.mix.mix_spec`) instead of re-parsing the
        ``mix`` argument.
        """
        if self._mix is None or isinstance(self._mix, ScalarMix):
            return self._mix
        return mix_spec(self._mix)

    def __repr__(self) -> str:
        mix = self.mix if isinstance(self.mix, ScalarMix) else repr(mix_spec(self.mix))
        return (f"Embedder({str(self.model_path)!r}, mix={mix}, stateful={self.stateful}, "
                f"providers={self.providers})")

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
        """Vectors of each sentence, in input order, from one forward pass."""
        sentences = list(sentences)
        for i, sentence in enumerate(sentences):
            check_sentence(sentence, i, self.max_sentence_tokens)
        return self._forward(sentences)

    def embed_sentences(
        self, sentences: Iterable[Sentence], batch_size: int = DEFAULT_BATCH_SIZE
    ) -> Iterator[np.ndarray]:
        """Vectors of each sentence of a (possibly huge) iterable, in input order.

        Stateless: sentences are bucketed by length a window at a time.
        Stateful: consecutive batches of ``batch_size`` in input order, since
        a sentence's row decides which state it continues.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, found {batch_size!r}")
        checked = (_checked(s, i, self.max_sentence_tokens) for i, s in enumerate(sentences))
        if self.stateful:
            return (out for chunk in chunks(checked, batch_size) for out in self._forward(chunk))
        batches = bucketed(checked, _steps, batch_size, self.max_tokens_per_batch)
        return in_order(self._forward_indexed(batches))

    def _forward_indexed(
        self, batches: Iterable[list[tuple[int, Sentence]]]
    ) -> Iterator[tuple[int, np.ndarray]]:
        for batch in batches:
            indices = [i for i, _ in batch]
            yield from zip(indices, self._forward([s for _, s in batch]), strict=True)

    def _forward(self, sentences: Sequence[Sentence]) -> list[np.ndarray]:
        """One model run over checked sentences; per-sentence arrays, boundaries removed."""
        if not sentences:
            return []
        plan = self.token_cache.plan(sentences)
        state_c, state_h = self._initial_state(len(sentences))
        feed = {
            contract.INPUT_TOKEN_CHARS: plan.token_chars,
            contract.INPUT_TOKEN_INDEX: plan.token_index,
            contract.INPUT_STATE_C: state_c,
            contract.INPUT_STATE_H: state_h,
        }
        if len(plan.cached_vectors):
            feed[contract.INPUT_CACHED_VECTORS] = plan.cached_vectors
        if plan.word_ids is not None:
            feed[contract.INPUT_WORD_IDS] = plan.word_ids
        fetch = [contract.OUTPUT_LAYERS]
        if self.stateful:
            fetch += [contract.OUTPUT_STATE_C, contract.OUTPUT_STATE_H]
        if self.token_cache.capacity:
            fetch.append(contract.OUTPUT_TOKEN_VECTORS)
        try:
            outputs = self._session.run(fetch, feed)
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

    def _finish(self, layers: np.ndarray) -> np.ndarray:
        out = np.array(layers, dtype=np.float32)  # a copy: never keep the whole batch alive
        return out if self._mix is None else self._mix(out)

    def _initial_state(self, rows: int) -> tuple[np.ndarray, np.ndarray]:
        if not self.stateful:
            return self._zero_c, self._zero_h  # the graph broadcasts them to every row
        return self._states.initial(rows)

    def _keep_state(self, final_c: np.ndarray, final_h: np.ndarray) -> None:
        self._states.update(final_c, final_h)


def _steps(sentence: Sentence) -> int:
    """Model steps of a sentence: its tokens plus <S> and </S>."""
    return len(sentence) + 2


def _checked(sentence: Sentence, index: int, max_tokens: int) -> Sentence:
    check_sentence(sentence, index, max_tokens)
    return sentence
