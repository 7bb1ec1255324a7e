"""An independent, deliberately naive NumPy implementation of the ELMo biLM.

Written from docs/elmo-spec.md alone (not from the PyTorch or ONNX code) so that
it can serve as an oracle for them. Clarity over speed: one token, one filter
position, one time step, one sentence at a time, in float64. There is no
batching inside the model at all: :func:`run_batch` loops over rows and each
sentence is run by itself, its backward pass on a reversed Python list.

It also counts how often ``cell_clip`` and ``proj_clip`` actually cut a value,
so tests can assert that the clipping paths are exercised.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

FORGET_BIAS = 1.0


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # 1 / (1 + exp(-x)), written so that it cannot overflow.
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _cell_name(direction: int, layer: int) -> str:
    return f"RNN_{direction}/RNN/MultiRNNCell/Cell{layer}/LSTMCell"


@dataclass
class ClipStats:
    """How many values each clip actually changed (pre-clip |value| > clip)."""

    cell_clipped: int = 0
    proj_clipped: int = 0
    cell_values: int = 0
    proj_values: int = 0
    cell_max: float = 0.0  # largest pre-clip |c|
    proj_max: float = 0.0  # largest pre-clip |h|


@dataclass
class ReferenceOutput:
    layers: np.ndarray  # (B, L+1, T, 2P) float64
    mask: np.ndarray  # (B, T) int32
    state_c: np.ndarray  # (2, L, B, D)
    state_h: np.ndarray  # (2, L, B, P)
    stats: ClipStats = field(default_factory=ClipStats)


class ReferenceBiLM:
    """The biLM of docs/elmo-spec.md. ``options`` is an ElmoOptions, ``weights`` the hdf5 dict."""

    def __init__(self, options, weights: dict[str, np.ndarray]) -> None:
        self.o = options
        self.w = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
        # Prepend the zero row: shifted id 0 ("no char") embeds to zeros, id k
        # (unshifted k-1) to char_embed[k-1].
        e = self.w["char_embed"].shape[1]
        self.embed_table = np.concatenate([np.zeros((1, e)), self.w["char_embed"]], axis=0)
        self.stats = ClipStats()
        self._token_cache: dict[bytes, np.ndarray] = {}

    # ------------------------------------------------------------------ char CNN
    def _activation(self, x: np.ndarray) -> np.ndarray:
        if self.o.activation == "relu":
            return np.maximum(x, 0.0)
        if self.o.activation == "tanh":
            return np.tanh(x)
        raise ValueError(self.o.activation)

    def token_vector(self, char_ids: np.ndarray) -> np.ndarray:
        """One token's (C,) shifted char ids -> its P-dim representation."""
        key = np.asarray(char_ids).tobytes()
        if key not in self._token_cache:
            self._token_cache[key] = self._token_vector(np.asarray(char_ids))
        return self._token_cache[key].copy()

    def _token_vector(self, char_ids: np.ndarray) -> np.ndarray:
        emb = np.stack([self.embed_table[int(c)] for c in char_ids])  # (C, e)
        n_chars, e = emb.shape
        pieces = []
        for i, (width, num) in enumerate(self.o.filters):
            kernel = self.w[f"CNN/W_cnn_{i}"]  # (1, width, e, num)
            bias = self.w[f"CNN/b_cnn_{i}"]
            assert kernel.shape == (1, width, e, num)
            best = np.full(num, -np.inf)
            for t in range(n_chars - width + 1):
                # out[t, k] = b[k] + sum_{a<width, j<e} E[t+a, j] * W[0, a, j, k]
                out = bias + np.einsum("aj,ajk->k", emb[t : t + width], kernel[0])
                best = np.maximum(best, out)
            pieces.append(self._activation(best))
        x = np.concatenate(pieces)
        for k in range(self.o.n_highway):
            carry = _sigmoid(x @ self.w[f"CNN_high_{k}/W_carry"] + self.w[f"CNN_high_{k}/b_carry"])
            transform = np.maximum(
                x @ self.w[f"CNN_high_{k}/W_transform"] + self.w[f"CNN_high_{k}/b_transform"], 0.0
            )
            x = carry * transform + (1.0 - carry) * x
        return x @ self.w["CNN_proj/W_proj"] + self.w["CNN_proj/b_proj"]

    # ---------------------------------------------------------------------- LSTM
    def lstm_step(
        self, direction: int, layer: int, x: np.ndarray, c: np.ndarray, h: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        prefix = _cell_name(direction, layer)
        big_w, bias = self.w[f"{prefix}/W_0"], self.w[f"{prefix}/B"]
        # No W_P_0 (a cell without projection, dim == projection_dim): TF's LSTMCell
        # without num_proj outputs o * tanh(c) itself and never applies proj_clip.
        w_proj = self.w.get(f"{prefix}/W_P_0")
        z = np.concatenate([x, h]) @ big_w + bias
        d = self.o.lstm_dim
        i, j, f, o = z[:d], z[d : 2 * d], z[2 * d : 3 * d], z[3 * d :]
        c_new = _sigmoid(f + FORGET_BIAS) * c + _sigmoid(i) * np.tanh(j)
        self.stats.cell_values += c_new.size
        self.stats.cell_max = max(self.stats.cell_max, float(np.abs(c_new).max()))
        if self.o.cell_clip is not None:
            clip = self.o.cell_clip
            self.stats.cell_clipped += int(np.sum(np.abs(c_new) > clip))
            c_new = np.clip(c_new, -clip, clip)
        h_new = _sigmoid(o) * np.tanh(c_new)
        if w_proj is None:
            return c_new, h_new
        h_new = h_new @ w_proj
        self.stats.proj_values += h_new.size
        self.stats.proj_max = max(self.stats.proj_max, float(np.abs(h_new).max()))
        if self.o.proj_clip is not None:
            clip = self.o.proj_clip
            self.stats.proj_clipped += int(np.sum(np.abs(h_new) > clip))
            h_new = np.clip(h_new, -clip, clip)
        return c_new, h_new

    def run_stack(
        self, direction: int, inputs: list[np.ndarray], c0: np.ndarray, h0: np.ndarray
    ) -> tuple[list[list[np.ndarray]], np.ndarray, np.ndarray]:
        """One direction over a time-ordered list; per-layer outputs, final (c, h) per layer."""
        per_layer = []
        final_c = np.zeros((self.o.n_layers, self.o.lstm_dim))
        final_h = np.zeros((self.o.n_layers, self.o.projection_dim))
        current = inputs
        for layer in range(self.o.n_layers):
            c, h = c0[layer].copy(), h0[layer].copy()
            outputs = []
            for x in current:
                c, h = self.lstm_step(direction, layer, x, c, h)
                out = h + x if (self.o.use_skip_connections and layer >= 1) else h
                outputs.append(out)
            final_c[layer], final_h[layer] = c, h
            per_layer.append(outputs)
            current = outputs
        return per_layer, final_c, final_h

    def run_sentence(
        self, char_ids: np.ndarray, c0: np.ndarray, h0: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One sentence's real steps (n, C) (boundaries included, no padding).

        ``c0`` (2, L, D), ``h0`` (2, L, P). Returns layers (L+1, n, 2P) and the
        final (c, h) of both directions.
        """
        n = len(char_ids)
        L, P = self.o.n_layers, self.o.projection_dim
        if n == 0:
            return np.zeros((L + 1, 0, 2 * P)), c0.copy(), h0.copy()
        xs = [self.token_vector(row) for row in char_ids]
        fwd, fc, fh = self.run_stack(0, xs, c0[0], h0[0])
        reversed_xs = list(reversed(xs))
        bwd_rev, bc, bh = self.run_stack(1, reversed_xs, c0[1], h0[1])
        bwd = [list(reversed(outs)) for outs in bwd_rev]
        layers = np.zeros((L + 1, n, 2 * P))
        for t in range(n):
            layers[0, t] = np.concatenate([xs[t], xs[t]])
            for layer in range(L):
                layers[layer + 1, t] = np.concatenate([fwd[layer][t], bwd[layer][t]])
        return layers, np.stack([fc, bc]), np.stack([fh, bh])

    def run_batch(
        self,
        char_ids: np.ndarray,
        state_c: np.ndarray | None = None,
        state_h: np.ndarray | None = None,
    ) -> ReferenceOutput:
        """The graph contract: char_ids (B, T, C) shifted ids with boundaries.

        A row's length is the number of leading steps with any id > 0 (steps
        after the first all-zero one are padding). States are (2, L, B, D/P).
        """
        char_ids = np.asarray(char_ids)
        B, T, _ = char_ids.shape
        L, D, P = self.o.n_layers, self.o.lstm_dim, self.o.projection_dim
        if state_c is None:
            state_c = np.zeros((2, L, B, D))
        if state_h is None:
            state_h = np.zeros((2, L, B, P))
        state_c = np.asarray(state_c, dtype=np.float64)
        state_h = np.asarray(state_h, dtype=np.float64)
        self.stats = ClipStats()
        layers = np.zeros((B, L + 1, T, 2 * P))
        mask = np.zeros((B, T), dtype=np.int32)
        out_c = np.zeros((2, L, B, D))
        out_h = np.zeros((2, L, B, P))
        for b in range(B):
            length = 0
            while length < T and np.any(char_ids[b, length] > 0):
                length += 1
            mask[b, :length] = 1
            full, c, h = self.run_sentence(
                char_ids[b, :length], state_c[:, :, b], state_h[:, :, b]
            )
            layers[b, :, :length] = full
            out_c[:, :, b], out_h[:, :, b] = c, h
        return ReferenceOutput(layers, mask, out_c, out_h, self.stats)
