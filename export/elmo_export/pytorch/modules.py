"""The ELMo biLM in PyTorch, exactly as docs/elmo-spec.md describes it (training, `elmo export`).

``BiLM`` takes the exported graph's own inputs (:mod:`elmo_runtime.format.contract`):
``forward(token_chars, token_index, state, cached_vectors)``, each distinct
token's char ids once and, per step, the row it uses (-1 = padding), as built
by :func:`elmo_runtime.format.chars.pack`. The initial LSTM state is explicit
and the final one returned. :class:`StatefulBiLM` adds bilm-tf's per-row state
carried across batches.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from elmo_runtime.format import contract
from elmo_runtime.format.chars import EMBED_ROWS
from elmo_runtime.format.options import FORGET_BIAS, ElmoOptions
from elmo_runtime.states import RowStates
from torch import Tensor, nn

from ..bilm_tf.weights import PROJECTION, Weights, check_weights, has_projection, lstm_prefix

__all__ = ["FORGET_BIAS", "BiLM", "BiLMOutput", "CharCNN", "StatefulBiLM"]


class BiLMOutput(NamedTuple):
    layers: Tensor  # (B, L+1, T, 2P); zeros at padded steps
    mask: Tensor  # (B, T) bool
    state_c: Tensor  # (2, L, B, D)
    state_h: Tensor  # (2, L, B, P)
    token_vectors: Tensor  # (N, P): the encoded token_chars rows


class Highway(nn.Module):
    """``g = σ(x·W_carry + b)``; ``x = g·relu(x·W_transform + b) + (1−g)·x``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.carry = nn.Linear(dim, dim)
        self.transform = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        gate = torch.sigmoid(self.carry(x))
        return gate * F.relu(self.transform(x)) + (1.0 - gate) * x


class CharCNN(nn.Module):
    """Char ids (..., C) → context-free token vectors (..., P)."""

    def __init__(self, options: ElmoOptions) -> None:
        super().__init__()
        e = options.char_embed_dim
        # EMBED_ROWS (262) rows: row 0 is "no token" (shifted id 0) and stays zero.
        self.embedding = nn.Embedding(EMBED_ROWS, e, padding_idx=0)
        self.convs = nn.ModuleList(nn.Conv1d(e, n, w) for w, n in options.filters)
        self.highways = nn.ModuleList(Highway(options.n_filters) for _ in range(options.n_highway))
        self.projection = nn.Linear(options.n_filters, options.projection_dim)
        self.activation = torch.tanh if options.activation == "tanh" else F.relu

    def forward(self, char_ids: Tensor) -> Tensor:
        lead, c = char_ids.shape[:-1], char_ids.shape[-1]
        x = self.embedding(char_ids.reshape(-1, c)).transpose(1, 2)  # (N, e, C)
        # Conv1d is a VALID cross-correlation; max over every position, then activation.
        x = torch.cat([self.activation(conv(x).max(dim=2).values) for conv in self.convs], dim=1)
        for highway in self.highways:
            x = highway(x)
        return self.projection(x).reshape(*lead, -1)


class LstmWithProjection(nn.Module):
    """One direction, one layer of TF's LSTMCell with cell projection and clipping."""

    def __init__(self, input_dim: int, options: ElmoOptions) -> None:
        super().__init__()
        d, p = options.lstm_dim, options.projection_dim
        self.input_weight = nn.Parameter(torch.empty(input_dim, 4 * d))  # W_0[:input_dim]
        self.state_weight = nn.Parameter(torch.empty(p, 4 * d))  # W_0[input_dim:]
        self.bias = nn.Parameter(torch.zeros(4 * d))  # B (gate order i, j, f, o)
        self.projection = nn.Parameter(torch.empty(d, p))  # W_P_0
        self.cell_clip = options.cell_clip
        self.proj_clip = options.proj_clip
        self.projected = True  # False: no W_P_0 in the weight file (identity, no proj_clip)
        bound = 1.0 / np.sqrt(input_dim + p)
        for w in (self.input_weight, self.state_weight):
            nn.init.uniform_(w, -bound, bound)
        nn.init.uniform_(self.projection, -1.0 / np.sqrt(d), 1.0 / np.sqrt(d))

    @torch.no_grad()
    def set_projection(self, w_proj: Tensor | None) -> None:
        """Load W_P_0 (D, P), or None for a cell without projection (D == P): the
        identity, frozen, and no proj_clip (TF clips only a projected output)."""
        self.projected = w_proj is not None
        if w_proj is None:
            self.projection.copy_(torch.eye(self.projection.shape[0]))
            self.projection.requires_grad_(False)
            self.proj_clip = None
        else:
            self.projection.copy_(w_proj)

    def forward(
        self, x: Tensor, mask: Tensor, c: Tensor, h: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Run over time (axis 1). Masked steps keep the state and output zeros."""
        x_proj = x @ self.input_weight + self.bias  # all input projections at once
        outputs = []
        # unbind, not x_proj[:, t]: indexing makes autograd add a full-size zero tensor a step
        for x_t, m in zip(x_proj.unbind(1), mask.unsqueeze(-1).unbind(1), strict=True):
            z = x_t + h @ self.state_weight
            i, j, f, o = z.chunk(4, dim=-1)
            c_new = torch.sigmoid(f + FORGET_BIAS) * c + torch.sigmoid(i) * torch.tanh(j)
            if self.cell_clip is not None:
                c_new = c_new.clamp(-self.cell_clip, self.cell_clip)
            h_new = (torch.sigmoid(o) * torch.tanh(c_new)) @ self.projection
            if self.proj_clip is not None:
                h_new = h_new.clamp(-self.proj_clip, self.proj_clip)
            c = torch.where(m, c_new, c)
            h = torch.where(m, h_new, h)
            outputs.append(h_new * m)
        return torch.stack(outputs, dim=1), c, h


def reverse_within_length(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each row's first ``length`` steps (axis 1); padding stays in place."""
    steps = torch.arange(x.shape[1], device=x.device).unsqueeze(0)
    lengths = lengths.unsqueeze(1)
    index = torch.where(steps < lengths, lengths - 1 - steps, steps)
    index = index.reshape(*index.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, index)


class BiLM(nn.Module):
    """Char CNN + forward and backward LSTM stacks → L+1 representation layers."""

    def __init__(self, options: ElmoOptions, dropout: float = 0.0) -> None:
        super().__init__()
        self.options = options
        p = options.projection_dim
        self.token_encoder = CharCNN(options)
        self.forward_layers = nn.ModuleList(
            LstmWithProjection(p, options) for _ in range(options.n_layers)
        )
        self.backward_layers = nn.ModuleList(
            LstmWithProjection(p, options) for _ in range(options.n_layers)
        )
        self.dropout = nn.Dropout(dropout)

    def zero_state(self, batch: int) -> tuple[Tensor, Tensor]:
        o = self.options
        ref = self.token_encoder.projection.weight
        c = ref.new_zeros(2, o.n_layers, batch, o.lstm_dim)
        h = ref.new_zeros(2, o.n_layers, batch, o.projection_dim)
        return c, h

    def run_stack(
        self, direction: int, x: Tensor, mask: Tensor, c0: Tensor, h0: Tensor
    ) -> tuple[list[Tensor], Tensor, Tensor]:
        """One direction's LSTM stack over time-ordered input; per-layer outputs."""
        layers = self.forward_layers if direction == 0 else self.backward_layers
        outputs, cs, hs = [], [], []
        inp = x
        for layer, lstm in enumerate(layers):
            out, c, h = lstm(self.dropout(inp), mask, c0[layer], h0[layer])
            if self.options.use_skip_connections and layer > 0:
                out = out + inp
            outputs.append(out)
            cs.append(c)
            hs.append(h)
            inp = out
        return outputs, torch.stack(cs), torch.stack(hs)

    def encode(
        self,
        token_chars: Tensor,
        token_index: Tensor,
        state: tuple[Tensor, Tensor] | None = None,
        cached_vectors: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, list[Tensor], list[Tensor], Tensor, Tensor, Tensor]:
        """Step tokens, mask, forward and backward per-layer outputs, final state, encoded rows."""
        encoded = self.token_encoder(token_chars)  # (N, P): each distinct token once
        table = encoded if cached_vectors is None else torch.cat([encoded, cached_vectors])
        mask = token_index >= 0
        lengths = mask.sum(dim=1)
        tokens = table[token_index.clamp(min=0)] * mask.unsqueeze(-1)  # (B, T, P)
        batch = token_index.shape[0]
        c0, h0 = state if state is not None else self.zero_state(1)
        o = self.options
        c0 = c0.expand(2, o.n_layers, batch, o.lstm_dim)
        h0 = h0.expand(2, o.n_layers, batch, o.projection_dim)
        fwd, c_f, h_f = self.run_stack(0, tokens, mask, c0[0], h0[0])
        rev_tokens = reverse_within_length(tokens, lengths)
        bwd_rev, c_b, h_b = self.run_stack(1, rev_tokens, mask, c0[1], h0[1])
        bwd = [reverse_within_length(out, lengths) for out in bwd_rev]
        state_c = torch.stack([c_f, c_b])
        state_h = torch.stack([h_f, h_b])
        return tokens, mask, fwd, bwd, state_c, state_h, encoded

    def forward(
        self,
        token_chars: Tensor,
        token_index: Tensor,
        state: tuple[Tensor, Tensor] | None = None,
        cached_vectors: Tensor | None = None,
    ) -> BiLMOutput:
        """The graph's computation on the graph's inputs.

        ``token_chars`` int64 (N, C) shifted char ids; ``token_index`` int64
        (B, T), the row of ``concat(encoded, cached_vectors)`` per step, -1 =
        padding; ``state`` (c (2, L, B or 1, D), h (2, L, B or 1, P)) or zeros;
        ``cached_vectors`` (M, P) or None.
        """
        tokens, mask, fwd, bwd, state_c, state_h, encoded = self.encode(
            token_chars, token_index, state, cached_vectors)
        layers = [torch.cat([tokens, tokens], dim=-1)]
        layers += [torch.cat([f, b], dim=-1) for f, b in zip(fwd, bwd, strict=True)]
        return BiLMOutput(torch.stack(layers, dim=1), mask, state_c, state_h, encoded)

    def run_feed(self, feed: dict[str, np.ndarray]) -> dict[str, Tensor]:
        """The graph's outputs, by contract name, for a feed of contract inputs (NumPy)."""

        def get(name: str) -> Tensor | None:
            return torch.from_numpy(np.asarray(feed[name])) if name in feed else None

        state = None
        if contract.INPUT_STATE_C in feed or contract.INPUT_STATE_H in feed:
            zc, zh = self.zero_state(1)
            c, h = get(contract.INPUT_STATE_C), get(contract.INPUT_STATE_H)
            state = (zc if c is None else c, zh if h is None else h)
        out = self(get(contract.INPUT_TOKEN_CHARS).long(), get(contract.INPUT_TOKEN_INDEX).long(),
                   state, get(contract.INPUT_CACHED_VECTORS))
        return {
            contract.OUTPUT_LAYERS: out.layers,
            contract.OUTPUT_MASK: out.mask.to(torch.int32),
            contract.OUTPUT_STATE_C: out.state_c,
            contract.OUTPUT_STATE_H: out.state_h,
            contract.OUTPUT_TOKEN_VECTORS: out.token_vectors,
        }

    # --- the ELMo hdf5 weight layout -------------------------------------
    @classmethod
    def from_elmo_weights(cls, options: ElmoOptions, weights: Weights) -> BiLM:
        """A model holding ``weights`` (ELMo layout, already validated or not)."""
        model = cls(options)
        model.load_elmo_weights(weights)
        return model

    @torch.no_grad()
    def load_elmo_weights(self, weights: Weights) -> None:
        o = self.options
        check_weights(weights, o, "weights")

        def t(name: str) -> Tensor:
            return torch.from_numpy(np.asarray(weights[name], dtype=np.float32))

        enc = self.token_encoder
        enc.embedding.weight.zero_()
        enc.embedding.weight[1:] = t("char_embed")
        for i, conv in enumerate(enc.convs):
            # (1, w, e, n) → Conv1d's (n, e, w)
            conv.weight.copy_(t(f"CNN/W_cnn_{i}")[0].permute(2, 1, 0))
            conv.bias.copy_(t(f"CNN/b_cnn_{i}"))
        for k, hw in enumerate(enc.highways):
            for name, lin in (("carry", hw.carry), ("transform", hw.transform)):
                lin.weight.copy_(t(f"CNN_high_{k}/W_{name}").T)
                lin.bias.copy_(t(f"CNN_high_{k}/b_{name}"))
        enc.projection.weight.copy_(t("CNN_proj/W_proj").T)
        enc.projection.bias.copy_(t("CNN_proj/b_proj"))
        projected = has_projection(weights, o)
        for direction, stack in enumerate((self.forward_layers, self.backward_layers)):
            for layer, lstm in enumerate(stack):
                prefix = lstm_prefix(direction, layer)
                w0 = t(f"{prefix}/W_0")
                n_in = lstm.input_weight.shape[0]
                lstm.input_weight.copy_(w0[:n_in])
                lstm.state_weight.copy_(w0[n_in:])
                lstm.bias.copy_(t(f"{prefix}/B"))
                lstm.set_projection(t(f"{prefix}/{PROJECTION}") if projected else None)

    @torch.no_grad()
    def elmo_weights(self) -> Weights:
        """This model's weights in the ELMo hdf5 layout (float32 NumPy arrays)."""

        def n(x: Tensor) -> np.ndarray:
            return x.detach().cpu().to(torch.float32).numpy().copy()

        enc = self.token_encoder
        w: Weights = {"char_embed": n(enc.embedding.weight[1:])}
        for i, conv in enumerate(enc.convs):
            w[f"CNN/W_cnn_{i}"] = n(conv.weight.permute(2, 1, 0).unsqueeze(0))
            w[f"CNN/b_cnn_{i}"] = n(conv.bias)
        for k, hw in enumerate(enc.highways):
            for name, lin in (("carry", hw.carry), ("transform", hw.transform)):
                w[f"CNN_high_{k}/W_{name}"] = n(lin.weight.T)
                w[f"CNN_high_{k}/b_{name}"] = n(lin.bias)
        w["CNN_proj/W_proj"] = n(enc.projection.weight.T)
        w["CNN_proj/b_proj"] = n(enc.projection.bias)
        for direction, stack in enumerate((self.forward_layers, self.backward_layers)):
            for layer, lstm in enumerate(stack):
                prefix = lstm_prefix(direction, layer)
                w[f"{prefix}/W_0"] = n(torch.cat([lstm.input_weight, lstm.state_weight]))
                w[f"{prefix}/B"] = n(lstm.bias)
                if lstm.projected:
                    w[f"{prefix}/{PROJECTION}"] = n(lstm.projection)
        return w


class StatefulBiLM:
    """bilm-tf's stateful mode: LSTM state carried across calls by batch row."""

    def __init__(self, model: BiLM) -> None:
        self.model = model
        o = model.options
        self.states = RowStates(o.n_layers, o.lstm_dim, o.projection_dim)

    def reset_states(self) -> None:
        self.states.reset()

    @torch.no_grad()
    def __call__(self, token_chars: Tensor, token_index: Tensor) -> BiLMOutput:
        c0, h0 = self.states.initial(token_index.shape[0])
        out = self.model(token_chars, token_index, (torch.from_numpy(c0), torch.from_numpy(h0)))
        self.states.update(out.state_c.numpy(), out.state_h.numpy())
        return out
