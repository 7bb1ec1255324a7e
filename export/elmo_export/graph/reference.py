"""A float64 NumPy forward of the biLM, written from docs/elmo-spec.md: the torch-free oracle.

``elmo convert`` checks the graph it built against this forward before it
writes anything (PyTorch is not needed). It takes the graph's own inputs
(``token_chars``, ``token_index``, optional states and cached vectors; see
:mod:`elmo_runtime.format.contract`) and returns every output of the contract,
in float64. It is vectorized over the batch (one step at a time over all
rows), independent of the graph builder: no ONNX, no folded biases, the
backward stack run on rows reversed within their lengths.

The test suite holds it to the naive, one-sentence-at-a-time oracle in
``tests/support/reference.py``.
"""

from __future__ import annotations

import numpy as np
from elmo_runtime.format import contract
from elmo_runtime.format.options import FORGET_BIAS, ElmoOptions

from ..bilm_tf.weights import (
    PROJECTION,
    WORD_EMBED,
    Weights,
    check_weights,
    has_projection,
    lstm_prefix,
)


class _Float64:
    """``weights[name]`` as float64, converted on each lookup (nothing kept)."""

    def __init__(self, weights: Weights) -> None:
        self._weights = weights

    def __getitem__(self, name: str) -> np.ndarray:
        return np.asarray(self._weights[name], dtype=np.float64)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # 1 / (1 + exp(-x)) without overflow


class NumpyBiLM:
    """The biLM of docs/elmo-spec.md in float64 NumPy. Raises WeightsError for bad weights.

    The weights are kept as given (float32) and widened to float64 where they are used,
    one LSTM layer at a time: the original size would otherwise hold 0.75 GB of float64
    copies while `elmo convert` checks it.
    """

    def __init__(self, options: ElmoOptions, weights: Weights) -> None:
        check_weights(weights, options, "weights")
        self.options = options
        self.projected = has_projection(weights, options)
        self.w = _Float64(weights)
        e = options.char_embed_dim
        self.embed = np.concatenate([np.zeros((1, e)), self.w["char_embed"]])  # shifted id 0 → 0

    def token_vectors(self, token_chars: np.ndarray, word_ids: np.ndarray | None = None
                      ) -> np.ndarray:
        """Char CNN, highways and projection: (N, C) shifted ids → (N, P) float64."""
        o, w = self.options, self.w
        emb = self.embed[np.asarray(token_chars, dtype=np.int64)]  # (N, C, e)
        n_chars = emb.shape[1]
        pieces = []
        for i, (width, _) in enumerate(o.filters):
            kernel = w[f"CNN/W_cnn_{i}"][0]  # (width, e, n)
            windows = np.stack([emb[:, t : t + width] for t in range(n_chars - width + 1)], 1)
            conv = np.einsum("ntae,aek->ntk", windows, kernel) + w[f"CNN/b_cnn_{i}"]
            best = conv.max(axis=1)  # max over every position, padding included
            pieces.append(np.tanh(best) if o.activation == "tanh" else np.maximum(best, 0.0))
        x = np.concatenate(pieces, axis=1)
        for k in range(o.n_highway):
            gate = _sigmoid(x @ w[f"CNN_high_{k}/W_carry"] + w[f"CNN_high_{k}/b_carry"])
            trans = np.maximum(x @ w[f"CNN_high_{k}/W_transform"] + w[f"CNN_high_{k}/b_transform"],
                               0.0)
            x = gate * trans + (1.0 - gate) * x
        if o.has_word_branch:  # the word vector goes before the char CNN's (ELMoForManyLangs)
            if word_ids is None:
                raise ValueError("this model has a word branch: word_ids are required")
            x = np.concatenate([w[WORD_EMBED][np.asarray(word_ids, dtype=np.int64)], x], axis=1)
        return x @ w["CNN_proj/W_proj"] + w["CNN_proj/b_proj"]

    def _stack(self, direction: int, x: np.ndarray, mask: np.ndarray, c0: np.ndarray,
               h0: np.ndarray) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """One direction over time-ordered x (B, T, P); per-layer outputs, final (L, B, ·)."""
        o = self.options
        d = o.lstm_dim
        outputs, final_c, final_h = [], [], []
        inp = x
        for layer in range(o.n_layers):
            prefix = lstm_prefix(direction, layer)
            w0, bias = self.w[f"{prefix}/W_0"], self.w[f"{prefix}/B"]
            w_proj = self.w[f"{prefix}/{PROJECTION}"] if self.projected else None
            c, h = c0[layer].copy(), h0[layer].copy()
            out = np.zeros((*inp.shape[:2], o.projection_dim))
            for t in range(inp.shape[1]):
                z = np.concatenate([inp[:, t], h], axis=1) @ w0 + bias
                i, j, f, g = z[:, :d], z[:, d : 2 * d], z[:, 2 * d : 3 * d], z[:, 3 * d :]
                c_new = _sigmoid(f + FORGET_BIAS) * c + _sigmoid(i) * np.tanh(j)
                if o.cell_clip is not None:
                    c_new = np.clip(c_new, -o.cell_clip, o.cell_clip)
                h_new = _sigmoid(g) * np.tanh(c_new)
                if w_proj is not None:
                    h_new = h_new @ w_proj
                    if o.proj_clip is not None:
                        h_new = np.clip(h_new, -o.proj_clip, o.proj_clip)
                m = mask[:, t : t + 1]
                c = np.where(m, c_new, c)
                h = np.where(m, h_new, h)
                out[:, t] = np.where(m, h_new, 0.0)
            if o.use_skip_connections and layer > 0:
                out = out + inp
            outputs.append(out)
            final_c.append(c)
            final_h.append(h)
            inp = out
        return outputs, np.stack(final_c), np.stack(final_h)

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every contract output for a feed of contract inputs (missing optional ones: defaults)."""
        o = self.options
        feed = {**{s.name: s.default_value(o) for s in contract.INPUT_SPECS if s.optional},
                **feed}
        encoded = self.token_vectors(feed[contract.INPUT_TOKEN_CHARS],
                                     feed.get(contract.INPUT_WORD_IDS))
        table = np.concatenate([encoded, feed[contract.INPUT_CACHED_VECTORS].astype(np.float64)])
        index = np.asarray(feed[contract.INPUT_TOKEN_INDEX], dtype=np.int64)
        batch, steps = index.shape
        mask = index >= 0
        lengths = mask.sum(axis=1)
        tokens = np.where(mask[..., None], table[np.maximum(index, 0)], 0.0)  # (B, T, P)
        shape = (2, o.n_layers, batch)
        c0 = np.broadcast_to(feed[contract.INPUT_STATE_C], (*shape, o.lstm_dim)).astype(np.float64)
        h0 = np.broadcast_to(feed[contract.INPUT_STATE_H], (*shape, o.projection_dim)).astype(
            np.float64)
        # reverse each row within its length; padding stays in place
        t = np.arange(steps)[None, :]
        rev = np.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)
        rows = np.arange(batch)[:, None]
        fwd, c_f, h_f = self._stack(0, tokens, mask, c0[0], h0[0])
        bwd_rev, c_b, h_b = self._stack(1, tokens[rows, rev], mask, c0[1], h0[1])
        layers = [np.concatenate([tokens, tokens], axis=2)]
        layers += [np.concatenate([f, b[rows, rev]], axis=2)
                   for f, b in zip(fwd, bwd_rev, strict=True)]
        return {
            contract.OUTPUT_LAYERS: np.stack(layers, axis=1),
            contract.OUTPUT_MASK: mask.astype(np.int32),
            contract.OUTPUT_STATE_C: np.stack([c_f, c_b]),
            contract.OUTPUT_STATE_H: np.stack([h_f, h_b]),
            contract.OUTPUT_TOKEN_VECTORS: encoded,
        }
