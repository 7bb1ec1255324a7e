"""A float64 NumPy forward of the biLM in the ELMo hdf5 layout, with the word branch.

Follows ELMO_SPEC.md's rules on :func:`elmo_export.efml_map.elmo_weights`
output (so it checks the weight mapping, not their code) plus the word
branch: the token vector is ``[word_embed[word_id]; highway(char CNN)]``
projected. Vectorized over the batch; steps past a row's length keep the
state and output zeros; the backward stack runs each row reversed within its
length. Used by ``elmo convert`` of an ELMoForManyLangs model as the
reference the written graph must reproduce.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .efml_map import FORGET_BIAS, WORD_EMBED, lstm_prefix


class Hyper(Protocol):
    """What the forward needs to know (EfmlConfig and ElmoOptions both have it)."""

    lstm_dim: int
    projection_dim: int
    n_layers: int
    cell_clip: float | None
    proj_clip: float | None
    activation: str
    n_highway: int
    filters: tuple[tuple[int, int], ...]


@dataclass
class ReferenceOutput:
    layers: np.ndarray  # (B, L+1, T, 2P) float64, zero at padded steps
    state_c: np.ndarray  # (2, L, B, D) after each row's last step
    state_h: np.ndarray  # (2, L, B, P)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


class Reference:
    """``weights``: ELMo hdf5 names (+ ``word_embed``), any float dtype; kept as float64."""

    def __init__(self, hyper: Hyper, weights: dict[str, np.ndarray]) -> None:
        self.o = hyper
        self.skip = bool(getattr(hyper, "use_skip_connections", True))
        self.w = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
        e = self.w["char_embed"].shape[1]
        self.char_table = np.concatenate([np.zeros((1, e)), self.w["char_embed"]])

    def token_vectors(self, char_ids: np.ndarray, word_ids: np.ndarray | None = None
                      ) -> np.ndarray:
        """Shifted char ids (N, C) [+ word ids (N,)] → token vectors float64 (N, P)."""
        emb = self.char_table[np.asarray(char_ids)]  # (N, C, e)
        n_tok, width_c, _ = emb.shape
        pieces = []
        for i, (width, _num) in enumerate(self.o.filters):
            kernel = self.w[f"CNN/W_cnn_{i}"][0]  # (w, e, num)
            steps = width_c - width + 1
            conv = sum(np.einsum("ntj,jk->ntk", emb[:, a : a + steps], kernel[a])
                       for a in range(width)) + self.w[f"CNN/b_cnn_{i}"]
            top = conv.max(axis=1)
            pieces.append(np.tanh(top) if self.o.activation == "tanh" else np.maximum(top, 0))
        x = np.concatenate(pieces, axis=1) if n_tok else np.zeros((0, sum(
            n for _, n in self.o.filters)))
        for k in range(self.o.n_highway):
            g = _sigmoid(x @ self.w[f"CNN_high_{k}/W_carry"] + self.w[f"CNN_high_{k}/b_carry"])
            t = np.maximum(x @ self.w[f"CNN_high_{k}/W_transform"]
                           + self.w[f"CNN_high_{k}/b_transform"], 0.0)
            x = g * t + (1.0 - g) * x
        if WORD_EMBED in self.w:
            if word_ids is None:
                raise ValueError("this model has a word branch: word_ids are required")
            x = np.concatenate([self.w[WORD_EMBED][np.asarray(word_ids)], x], axis=1)
        return x @ self.w["CNN_proj/W_proj"] + self.w["CNN_proj/b_proj"]

    def _stack(self, direction: int, x: np.ndarray, mask: np.ndarray, c0: np.ndarray,
               h0: np.ndarray) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """One direction over time-major-in-row order x (B, T, P); per-layer outputs."""
        o, d = self.o, self.o.lstm_dim
        outputs, fin_c, fin_h = [], [], []
        inp = x
        for layer in range(o.n_layers):
            prefix = lstm_prefix(direction, layer)
            w0, bias, wp = (self.w[f"{prefix}/W_0"], self.w[f"{prefix}/B"],
                            self.w[f"{prefix}/W_P_0"])
            p_in = inp.shape[2]
            x_proj = inp @ w0[:p_in] + bias
            c, h = c0[layer].copy(), h0[layer].copy()
            out = np.zeros((x.shape[0], x.shape[1], wp.shape[1]))
            for t in range(x.shape[1]):
                z = x_proj[:, t] + h @ w0[p_in:]
                i, j, f, og = z[:, :d], z[:, d : 2 * d], z[:, 2 * d : 3 * d], z[:, 3 * d :]
                c_new = _sigmoid(f + FORGET_BIAS) * c + _sigmoid(i) * np.tanh(j)
                if o.cell_clip is not None:
                    c_new = np.clip(c_new, -o.cell_clip, o.cell_clip)
                h_new = (_sigmoid(og) * np.tanh(c_new)) @ wp
                if o.proj_clip is not None:
                    h_new = np.clip(h_new, -o.proj_clip, o.proj_clip)
                m = mask[:, t, None]
                c, h = np.where(m, c_new, c), np.where(m, h_new, h)
                out[:, t] = np.where(m, h_new, 0.0)
            if self.skip and layer > 0:
                out = out + inp * mask[:, :, None]
            outputs.append(out)
            fin_c.append(c)
            fin_h.append(h)
            inp = out
        return outputs, np.stack(fin_c), np.stack(fin_h)

    def run(self, char_ids: np.ndarray, word_ids: np.ndarray | None, lengths: np.ndarray,
            state_c: np.ndarray | None = None, state_h: np.ndarray | None = None
            ) -> ReferenceOutput:
        """A padded batch: char ids (B, T, C), word ids (B, T) or None, lengths (B,).

        Lengths count the boundaries; states (2, L, B, D/P) default to zeros.
        """
        char_ids = np.asarray(char_ids)
        b, t_max, c = char_ids.shape
        o = self.o
        lengths = np.asarray(lengths)
        flat_words = None if word_ids is None else np.asarray(word_ids).reshape(-1)
        tokens = self.token_vectors(char_ids.reshape(-1, c), flat_words)
        steps = np.arange(t_max)
        mask = steps[None, :] < lengths[:, None]
        x = tokens.reshape(b, t_max, -1) * mask[:, :, None]
        if state_c is None:
            state_c = np.zeros((2, o.n_layers, b, o.lstm_dim))
        if state_h is None:
            state_h = np.zeros((2, o.n_layers, b, o.projection_dim))
        fwd, fc, fh = self._stack(0, x, mask, state_c[0], state_h[0])
        # reverse each row within its own length (an involution), run, reverse back
        rev = np.where(mask, lengths[:, None] - 1 - steps[None, :], steps[None, :])
        rows = np.arange(b)[:, None]
        bwd, bc, bh = self._stack(1, x[rows, rev], mask, state_c[1], state_h[1])
        bwd = [out[rows, rev] for out in bwd]
        layers = [np.concatenate([x, x], axis=2)]
        layers += [np.concatenate([f, bk], axis=2) for f, bk in zip(fwd, bwd, strict=True)]
        return ReferenceOutput(np.stack(layers, axis=1), np.stack([fc, bc]),
                               np.stack([fh, bh]))
