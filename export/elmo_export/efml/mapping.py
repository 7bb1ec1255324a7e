"""ELMoForManyLangs state dicts → the ELMo hdf5 weight layout the graph builder reads.

Their biLM is bilm-tf's up to conventions, so the conversion is a set of
exact weight transforms (docs/elmo-spec.md names on the left):

* ``char_embed`` = their char embedding, one row per vocabulary id (the
  graph prepends the zero row for shifted id 0; the trained ``<pad>`` row is
  used unmasked, as in bilm-tf);
* ``CNN/W_cnn_i`` (1, w, C, F) = conv weight (F, C, w) transposed;
* highway: AllenNLP's ``y = g·x + (1−g)·relu(A x)`` with
  ``g = σ(B x)`` is bilm-tf's ``y = t·relu(…) + (1−t)·x`` with
  ``t = 1 − g = σ(−B x)``: ``W_carry = −Bᵀ``, ``b_carry = −b_B``,
  ``W_transform = Aᵀ``;
* ``CNN_proj/W_proj`` = projection weightᵀ, ``(word_dim + F, P)``: rows for
  the word vector first, then the char CNN, as they concatenate;
* ``word_embed`` (V_w, word_dim): their word table (models with a word branch);
* LSTM: ``W_0 = [input_linearity; state_linearity]ᵀ`` with the gate blocks
  reordered from their ``i, f, g, o`` to TF's ``i, j, f, o``;
  ``B`` = the state-side bias reordered, minus the forget bias of 1.0 the
  graph adds (they add none at run time); ``W_P_0`` = state_projectionᵀ.
"""

from __future__ import annotations

import numpy as np
from elmo_runtime.format.codepoints import CodepointScheme
from elmo_runtime.format.options import FORGET_BIAS  # what the bilm-tf graph adds

from ..bilm_tf.weights import WORD_EMBED, lstm_prefix
from .model import EfmlModel

# TF's gate blocks (i, j, f, o) taken from theirs (i, f, g, o)
_GATE_ORDER = (0, 2, 1, 3)


def _reorder_gates(a: np.ndarray, d: int) -> np.ndarray:
    """Gate blocks of size d along axis 0, theirs → TF order."""
    return np.concatenate([a[k * d : (k + 1) * d] for k in _GATE_ORDER], axis=0)


def elmo_weights(model: EfmlModel) -> dict[str, np.ndarray]:
    """The converted weights, float32, keyed by ELMo hdf5 dataset names (+ ``word_embed``)."""
    cfg, te, enc = model.config, model.token_embedder, model.encoder
    n, d = cfg.n_filters, cfg.lstm_dim
    w: dict[str, np.ndarray] = {"char_embed": te["char_emb_layer.embedding.weight"]}
    if cfg.word_dim > 0:
        w[WORD_EMBED] = te["word_emb_layer.embedding.weight"]
    for i in range(len(cfg.filters)):
        w[f"CNN/W_cnn_{i}"] = te[f"convolutions.{i}.weight"].transpose(2, 1, 0)[None]
        w[f"CNN/b_cnn_{i}"] = te[f"convolutions.{i}.bias"]
    for k in range(cfg.n_highway):
        weight, bias = te[f"highways._layers.{k}.weight"], te[f"highways._layers.{k}.bias"]
        w[f"CNN_high_{k}/W_transform"] = weight[:n].T
        w[f"CNN_high_{k}/b_transform"] = bias[:n]
        w[f"CNN_high_{k}/W_carry"] = -weight[n:].T
        w[f"CNN_high_{k}/b_carry"] = -bias[n:]
    w["CNN_proj/W_proj"] = te["projection.weight"].T
    w["CNN_proj/b_proj"] = te["projection.bias"]
    for direction, name in enumerate(("forward", "backward")):
        for layer in range(cfg.n_layers):
            theirs = f"{name}_layer_{layer}"
            joined = np.concatenate([enc[f"{theirs}.input_linearity.weight"],
                                     enc[f"{theirs}.state_linearity.weight"]], axis=1)
            bias = _reorder_gates(enc[f"{theirs}.state_linearity.bias"], d).copy()
            bias[2 * d : 3 * d] -= FORGET_BIAS
            prefix = lstm_prefix(direction, layer)
            w[f"{prefix}/W_0"] = _reorder_gates(joined, d).T
            w[f"{prefix}/B"] = bias
            w[f"{prefix}/W_P_0"] = enc[f"{theirs}.state_projection.weight"].T
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in w.items()}


def scheme(model: EfmlModel) -> CodepointScheme:
    """The token → ids scheme of this model (its two vocabularies)."""
    return CodepointScheme(dict(model.chars), model.config.max_chars,
                           dict(model.words) if model.words is not None else None)


def options_dict(model: EfmlModel) -> dict:
    """The options.json structure of the converted biLM (skip connections: always on).

    ``char_cnn.vocabulary`` "codepoint" with ``n_characters`` = vocabulary
    size + 1 (the zero row); ``word_embedding`` when the model has a word branch.
    """
    cfg = model.config
    lstm: dict = {"dim": cfg.lstm_dim, "projection_dim": cfg.projection_dim,
                  "n_layers": cfg.n_layers, "use_skip_connections": True}
    if cfg.cell_clip is not None:
        lstm["cell_clip"] = cfg.cell_clip
    if cfg.proj_clip is not None:
        lstm["proj_clip"] = cfg.proj_clip
    out: dict = {
        "lstm": lstm,
        "char_cnn": {
            "embedding": {"dim": cfg.char_dim},
            "n_characters": len(model.chars) + 1,
            "vocabulary": "codepoint",
            "max_characters_per_token": cfg.max_chars,
            "activation": cfg.activation,
            "n_highway": cfg.n_highway,
            "filters": [list(f) for f in cfg.filters],
        },
    }
    if model.words is not None:
        out["word_embedding"] = {"dim": cfg.word_dim, "n_words": len(model.words)}
    return out
