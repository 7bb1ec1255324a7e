"""Seeded random biLM weights in the bilm-tf layout, for tests and benches (not in the wheel)."""

from __future__ import annotations

import numpy as np
from elmo_export.bilm_tf.weights import Weights, weight_shapes
from elmo_runtime.format.options import ElmoOptions


def random_weights(
    options: ElmoOptions, seed: int = 0, scale: float = 1.0, projection: bool = True
) -> Weights:
    """Seeded weights with 1/sqrt(fan_in) scale (times ``scale``): for tests and benches.

    ``projection=False``: no ``W_P_0`` (needs ``projection_dim == dim``).
    """
    rng = np.random.default_rng(seed)
    weights: Weights = {}
    for name, shape in weight_shapes(options, projection).items():
        if name == "char_embed":
            w = rng.standard_normal(shape)
        elif len(shape) == 1:
            w = 0.1 * rng.standard_normal(shape)
        else:
            fan_in = int(np.prod(shape[:-1]))
            w = rng.standard_normal(shape) / np.sqrt(fan_in)
        weights[name] = (scale * w).astype(np.float32)
    return weights
