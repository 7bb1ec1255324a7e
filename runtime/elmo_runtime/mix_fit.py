"""Learn your task's layer mix: a scalar mix and a softmax classifier fitted with NumPy only.

A user feature, not a benchmark helper: ELMo's point is that each task weighs
the biLM's layers its own way. Give :func:`fit_mix` one vector per labelled
item and layer (from ``Embedder(...).embed_sentence``, e.g. a word's or a
span's vectors) and the labels; it returns the mix (``.mix``, a
:class:`~elmo_runtime.mix.ScalarMix`) and a classifier. Save the mix with
:func:`elmo_runtime.mix.save_mix` and embed with it: ``Embedder(model,
mix="task.mix.json")`` or ``elmo embed --mix task.mix.json``. No torch needed::

    layers = np.stack([emb.embed_sentence(s)[:, i] for s, i in items])  # (N, L+1, 2P)
    fitted = fit_mix(layers, labels, n_classes)
    save_mix("task.mix.json", fitted.mix)

``bench/supersense.py`` does this for WordNet supersenses.

The task-specific layer weighting of ELMo (docs/elmo-spec.md, "Scalar mix"):
``x = gamma * sum_j softmax(w)_j * h_j`` and ``p(y | x) = softmax(x W + b)``,
fitted by minimizing the mean cross-entropy plus ``l2/2 * (|W|^2 + gamma^2)``
(without the gamma term ``gamma`` and ``W`` could trade scale forever).

Inputs are one vector per item and layer, ``(N, L+1, D)`` (e.g. the mean of a
target span's vectors: mixing is linear, so mixing span means equals the span
mean of mixed vectors). The optimizer is full-batch Adam with a cosine-decayed
step size and analytic gradients, from a fixed start (``w = 0``, ``gamma = 1``,
``W = 0``): the result is deterministic and needs no seed.

For a well-conditioned problem each layer is centered and scaled to unit RMS
before the fit; since a layer's scale can be moved into its softmax weight,
the fitted mix is converted back *exactly* into a :class:`ScalarMix` on the
raw layers (the one that ``elmo embed --mix`` applies) and a classifier on
its output. With a fixed ``mix`` only the classifier is fitted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import MixError
from .mix import ScalarMix

DEFAULT_L2 = 1e-3
DEFAULT_STEPS = 300
DEFAULT_LR = 0.05

Params = list[np.ndarray]  # [w (K,), gamma (1,), W (D, C), b (C,)]


class FitError(MixError, ValueError):
    """Arrays that :func:`fit_mix` cannot fit (shapes, labels, NaN, a mismatched fixed mix)."""


def mix_items(mix: ScalarMix, layers: np.ndarray) -> np.ndarray:
    """``(N, L+1, D)`` one vector per item and layer → ``(N, D)``, by the runtime's ScalarMix."""
    return mix(np.swapaxes(layers, 0, 1))


@dataclass(frozen=True)
class MixClassifier:
    """A scalar mix on the raw layers and a softmax classifier on the mixed vector."""

    mix: ScalarMix
    coef: np.ndarray  # (D, C)
    intercept: np.ndarray  # (C,)
    loss: float  # the training objective at the end of the fit

    def features(self, layers: np.ndarray) -> np.ndarray:
        """The mixed vectors ``(N, D)`` of ``(N, L+1, D)``."""
        return mix_items(self.mix, layers)

    def logits(self, layers: np.ndarray) -> np.ndarray:
        """Class scores ``(N, C)`` of ``(N, L+1, D)``."""
        return self.features(layers).astype(np.float64) @ self.coef + self.intercept

    def predict(self, layers: np.ndarray) -> np.ndarray:
        """The most likely class of each item, ``(N,)``."""
        return self.logits(layers).argmax(axis=1)


def fit_mix(
    layers: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    mix: ScalarMix | None = None,
    l2: float = DEFAULT_L2,
    steps: int = DEFAULT_STEPS,
    lr: float = DEFAULT_LR,
) -> MixClassifier:
    """Fit ``w``, ``gamma`` and the classifier (or only the classifier, given ``mix``).

    ``layers``: ``(N, L+1, D)`` float; ``labels``: ``(N,)`` ints in ``[0, n_classes)``;
    ``l2``: the L2 strength; ``steps`` and ``lr``: full-batch Adam's. Raises
    FitError (an ElmoError and a ValueError) for arrays of the wrong shape,
    labels out of range, NaN or infinite values, or a fixed ``mix`` that does
    not weigh ``L+1`` layers without layer norm.
    """
    layers = np.asarray(layers)
    labels = np.asarray(labels)
    if layers.ndim != 3 or labels.shape != (layers.shape[0],) or layers.shape[0] == 0:
        raise FitError(f"expected layers (N, L+1, D) and labels (N,), found {layers.shape} "
                         f"and {labels.shape}")
    if labels.min() < 0 or labels.max() >= n_classes:
        raise FitError(f"labels must lie in [0, {n_classes}), "
                         f"found {labels.min()}..{labels.max()}")
    if not np.isfinite(layers).all():
        raise FitError("layers contain NaN or infinite values")
    if mix is not None and (mix.do_layer_norm or mix.n_layers != layers.shape[1]):
        raise FitError(f"a fixed mix must weigh {layers.shape[1]} layers without layer norm, "
                         f"found {mix!r}")
    x = (layers if mix is None else mix_items(mix, layers)[:, None, :]).astype(np.float64)
    mean = x.mean(axis=0)  # (K, D)
    scale = np.sqrt(((x - mean) ** 2).mean(axis=(0, 2)))  # (K,)
    scale = np.where(scale > 0, scale, 1.0)
    z = ((x - mean) / scale[:, None]).astype(np.float32)
    onehot = np.eye(n_classes, dtype=np.float32)[labels]
    params = _adam(z, onehot, l2, steps, lr, learn_mix=mix is None)
    loss = float(_loss_and_grads(params, z, onehot, l2)[0])
    w, gamma, coef, bias = (p.astype(np.float64) for p in params)
    # x_fit = gamma * sum_j a_j (h_j - mean_j) with a = softmax(w) / scale
    a = _softmax(w) / scale
    shift = float(gamma[0]) * (a[:, None] * mean).sum(axis=0)  # (D,)
    intercept = bias - shift @ coef
    if mix is None:
        log_a = np.log(a)
        mix = ScalarMix((log_a - log_a.max()).tolist(), float(gamma[0] * a.sum()))
    else:
        coef = coef * float(gamma[0] * a.sum())
    return MixClassifier(mix, coef, intercept, loss)


def _softmax(v: np.ndarray) -> np.ndarray:
    e = np.exp(v - v.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _loss_and_grads(params: Params, z: np.ndarray, onehot: np.ndarray,
                    l2: float) -> tuple[float, Params]:
    """The objective and its gradients; ``z`` is ``(N, K, D)``, ``onehot`` ``(N, C)``."""
    w, gamma, coef, bias = params
    s = _softmax(w)
    mixed = s @ z  # (N, D)
    logits = gamma[0] * (mixed @ coef) + bias
    logits -= logits.max(axis=1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    n = z.shape[0]
    loss = -float((onehot * log_p).sum()) / n + l2 / 2 * float((coef**2).sum() + gamma[0] ** 2)
    d_logits = (np.exp(log_p) - onehot) / n  # (N, C)
    d_coef = gamma[0] * (mixed.T @ d_logits) + l2 * coef
    d_bias = d_logits.sum(axis=0)
    d_mixed = d_logits @ coef.T  # (N, D), without gamma
    d_gamma = float((d_mixed * mixed).sum()) + l2 * gamma[0]
    d_s = gamma[0] * np.einsum("nd,nkd->k", d_mixed, z)
    d_w = s * (d_s - float(s @ d_s))
    return loss, [d_w, np.array([d_gamma], dtype=gamma.dtype), d_coef, d_bias]


def _adam(z: np.ndarray, onehot: np.ndarray, l2: float, steps: int, lr: float,
          learn_mix: bool) -> Params:
    """Full-batch Adam with a cosine-decayed step size from the fixed start."""
    k, d, c = z.shape[1], z.shape[2], onehot.shape[1]
    params = [np.zeros(k, np.float32), np.ones(1, np.float32), np.zeros((d, c), np.float32),
              np.zeros(c, np.float32)]
    trained = range(4) if learn_mix else range(2, 4)
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for t in range(1, steps + 1):
        _, grads = _loss_and_grads(params, z, onehot, l2)
        step = lr * 0.5 * (1 + math.cos(math.pi * (t - 1) / steps))
        for i in trained:
            m[i] = beta1 * m[i] + (1 - beta1) * grads[i]
            v[i] = beta2 * v[i] + (1 - beta2) * grads[i] ** 2
            m_hat = m[i] / (1 - beta1**t)
            v_hat = v[i] / (1 - beta2**t)
            params[i] = (params[i] - step * m_hat / (np.sqrt(v_hat) + eps)).astype(np.float32)
    return params
