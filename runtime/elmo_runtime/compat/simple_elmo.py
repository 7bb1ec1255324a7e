"""simple_elmo's ``ElmoModel`` (0.9.2), drop-in: change the import, keep the code.

>>> from elmo_runtime.compat.simple_elmo import ElmoModel   # was: from simple_elmo import …
>>> model = ElmoModel()
>>> model.load("209.zip")                      # an NLPL ZIP or folder as downloaded
>>> model.get_elmo_vectors([["Hello", "world"]], layers="average").shape   # (1, 2, 1024)

The numbers simple_elmo gives, with its semantics (ORACLES.md §1, docs/switching.md):

* a call splits ``texts`` into consecutive chunks of ``max_batch_size`` (``load``), each
  padded to its longest sentence;
* every call starts from zero LSTM states (simple_elmo re-initialises its variables per
  call); the state then carries from chunk to chunk by batch row;
* ``warmup=True`` (the default) first runs the first chunk once and discards it;
* the result is float64 zeros ``(n, max_len, dim)`` (``(n, 3, max_len, dim)`` for
  ``layers="all"``) filled chunk by chunk; inside a chunk the steps past a sentence's end
  hold what the model computes for padding, which is not zero in layer 0 (the char CNN of
  an all-padding token), so "average" and "all" have non-zero padding rows, "top" not;
* ``get_elmo_vector_average`` averages over the chunk's padded length and L2-normalises.

Deliberate differences: ``get_elmo_vector_average(layers="all")`` returns each layer's own
mean, normalised per layer (simple_elmo reshapes ``(B, 3, T, D)`` to ``(B, T, 3, D)``,
which mixes layers and positions); ``full=True`` (its language-model mode, which loads TF
checkpoints) and ``session=`` are refused; a model with ``n_characters`` 261 is accepted
(both values describe the same model); texts must be lists of tokens (a string is refused
where simple_elmo would split it into characters). No tensorflow.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np

from ..embedder import Embedder
from ..errors import ElmoError, InputError
from ..format import chars, contract
from .converted import model_for

LAYERS = ("average", "top", "all")
LOADED = "The model is now loaded."


class ElmoModel:
    """simple_elmo's ``ElmoModel``: ``load`` once, then ``get_elmo_vectors`` /
    ``get_elmo_vector_average``. Attributes after ``load``: ``batch_size``, ``max_chars``,
    ``vector_size`` (2 x projection_dim), ``n_layers`` (LSTM layers + 1), ``model_path``."""

    def __init__(self) -> None:
        self.logger = logging.getLogger(__name__)
        self._embedder: Embedder | None = None
        self._padding: np.ndarray | None = None

    def load(self, directory: str | os.PathLike, max_batch_size: int = 32, limit: int = 100,
             full: bool = False, *, threads: int | None = None) -> str:
        """Load an NLPL ZIP or folder (options.json, model.hdf5 or the *.hdf5, optional
        vocab.txt(.gz)), a bilm-tf/SeqVec folder or an ``.onnx`` file; converted to ONNX
        once into the user cache. ``limit`` is accepted and unused (the vocabulary only
        pre-computed char ids; elmo-edge's token cache does that for every word).
        Returns "The model is now loaded."; raises ElmoError with one line."""
        if full:
            raise ElmoError("full=True (simple_elmo's language-model mode, which restores "
                            "TensorFlow checkpoints) is not supported by elmo-edge; "
                            "load(..., full=False) gives the ELMo vectors")
        if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int) or \
                max_batch_size <= 0:
            raise ElmoError(f"max_batch_size must be a positive integer, found "
                            f"{max_batch_size!r}")
        self.logger.info("Loading model from %s...", directory)
        path = model_for(directory)
        self._embedder = Embedder(path, stateful=True, provider="cpu", threads=threads)
        if self._embedder.info.vocabulary is not None:
            raise ElmoError(f"{directory}: a model with a learned character vocabulary "
                            "(ELMoForManyLangs), which simple_elmo cannot read either; "
                            "use elmo_runtime.Embedder")
        options = self._embedder.info.options
        self.model_path = path
        self.batch_size = max_batch_size
        self.max_chars = options.max_characters_per_token
        self.vector_size = options.output_dim
        self.n_layers = options.n_output_layers
        self._padding = _padding_vector(self._embedder)
        return LOADED

    def get_elmo_vectors(self, texts: Sequence[Sequence[str]], warmup: bool = True,
                         layers: str = "average", session: None = None) -> np.ndarray:
        """float64 ``(n, max_len, vector_size)``, or ``(n, n_layers, max_len, vector_size)``
        for ``layers="all"`` ("top": the top layer; "average": the mean of all layers)."""
        emb = self._start(texts, layers, session, warmup)
        max_len = max(len(t) for t in texts)
        if layers == "all":
            out = np.zeros((len(texts), self.n_layers, max_len, self.vector_size))
        else:
            out = np.zeros((len(texts), max_len, self.vector_size))
        for start in range(0, len(texts), self.batch_size):
            vectors = _select(self._chunk(emb, texts[start:start + self.batch_size]), layers)
            steps = vectors.shape[-2]
            if layers == "all":
                out[start:start + len(vectors), :, :steps] = vectors
            else:
                out[start:start + len(vectors), :steps] = vectors
        return out

    def get_elmo_vector_average(self, texts: Sequence[Sequence[str]], warmup: bool = True,
                                layers: str = "average", session: None = None) -> np.ndarray:
        """float64 ``(n, vector_size)`` unit vectors, each the mean over its chunk's padded
        length; ``layers="all"``: ``(n, n_layers, vector_size)``, one unit vector per layer."""
        emb = self._start(texts, layers, session, warmup)
        shape = (self.n_layers, self.vector_size) if layers == "all" else (self.vector_size,)
        out = np.zeros((len(texts), *shape))
        for start in range(0, len(texts), self.batch_size):
            vectors = _select(self._chunk(emb, texts[start:start + self.batch_size]), layers)
            vectors = vectors.astype(np.float64)
            mean = vectors.sum(axis=-2) / vectors.shape[-2]
            out[start:start + len(vectors)] = mean / np.linalg.norm(mean, axis=-1,
                                                                    keepdims=True)
        return out

    def _start(self, texts: Sequence[Sequence[str]], layers: str, session: None,
               warmup: bool) -> Embedder:
        """Check a call's arguments, zero the state (a new call), run the warm-up chunk."""
        if self._embedder is None:
            raise ElmoError("no model loaded: call load(directory) first")
        if session is not None:
            raise ElmoError("session= (a TensorFlow session) has no meaning in elmo-edge: "
                            "every call starts from zero states, as simple_elmo's calls "
                            "without a session do")
        if layers not in LAYERS:
            raise ElmoError(f"layers must be one of {', '.join(LAYERS)}, found {layers!r}")
        if isinstance(texts, str) or not len(texts):
            raise InputError("texts must be a non-empty list of sentences (lists of words)")
        self._embedder.reset_states()
        if warmup:
            self.logger.info("Warming up ELMo on %d sentences...", len(texts[:self.batch_size]))
            self._embedder.embed_batch(texts[:self.batch_size])
        return self._embedder

    def _chunk(self, emb: Embedder, chunk: Sequence[Sequence[str]]) -> np.ndarray:
        """All layers of one chunk as the TF graph yields them: float32 (B, L+1, T, 2P),
        T = the chunk's longest sentence; padding steps hold the padding token's layer 0."""
        self.logger.info("Texts in the current batch: %d", len(chunk))
        vectors = emb.embed_batch(chunk)
        steps = max(v.shape[1] for v in vectors)
        out = np.zeros((len(chunk), self.n_layers, steps, self.vector_size), dtype=np.float32)
        for i, v in enumerate(vectors):
            out[i, :, : v.shape[1]] = v
            out[i, 0, v.shape[1]:] = self._padding
        return out


def _select(layers: np.ndarray, which: str) -> np.ndarray:
    """simple_elmo's ``weight_layers``: all, the top, or softmax(0 + 1/L) = 1/L each, in
    float32, summed in layer order (gamma = 1)."""
    if which == "all":
        return layers
    if which == "top":
        return layers[:, -1]
    n = layers.shape[1]
    weight = np.float32(1.0) / np.float32(n)
    total = weight * layers[:, 0]
    for k in range(1, n):
        total = total + weight * layers[:, k]
    return total


def _padding_vector(emb: Embedder) -> np.ndarray:
    """Layer 0 at a padding step, ``[x; x]`` float32 (2P,): x = the char CNN, highway and
    projection of a token whose char ids are all 0 (bilm-tf feeds such rows past a
    sentence's end). The graph's ``token_vectors`` output of one all-zero row."""
    options = emb.info.options
    token_chars = np.concatenate([chars.boundary_rows(options.max_characters_per_token),
                                  np.zeros((1, options.max_characters_per_token), np.int32)])
    feed = {
        contract.INPUT_TOKEN_CHARS: token_chars,
        contract.INPUT_TOKEN_INDEX: np.array([[0, 2, 1]], dtype=np.int32),
        contract.INPUT_STATE_C: np.zeros((2, options.n_layers, 1, options.lstm_dim), np.float32),
        contract.INPUT_STATE_H: np.zeros((2, options.n_layers, 1, options.projection_dim),
                                         np.float32),
    }
    (vectors,) = emb._session.run([contract.OUTPUT_TOKEN_VECTORS], feed)
    return np.concatenate([vectors[2], vectors[2]]).astype(np.float32)


__all__ = ["ElmoModel"]
