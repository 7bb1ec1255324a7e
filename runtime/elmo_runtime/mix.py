"""Scalar mix of the L+1 ELMo layers, in NumPy (docs/elmo-spec.md, "Scalar mix").

``ELMo_k = gamma * sum_j softmax(w)_j * h_{k,j}``. Mixes apply to one
sentence at a time: an array of shape ``(L+1, n, 2P)`` becomes ``(n, 2P)``.

Layer normalization (AllenNLP's ``do_layer_norm``) normalizes each layer by
the mean and variance of all its elements over the unmasked tokens.
AllenNLP takes those statistics over the whole padded *batch*, so its
vectors change with the batch a sentence lands in; here they are taken over
the *sentence*, so a sentence gets the same vectors however it is batched
(identical to AllenNLP for a batch of one).

A mix file is JSON: ``{"weights": [w_0, …, w_L], "gamma": 1.0,
"do_layer_norm": false}`` (``do_layer_norm`` optional, default false).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import MixError
from .files import read_json, write_text_atomic
from .format.bounds import MAX_GAMMA

LAYER_NORM_EPS = 1e-12
MODES = ("all", "top", "average")
FIELDS = ("weights", "gamma", "do_layer_norm")

Mix = Callable[[np.ndarray], np.ndarray]


class ScalarMix:
    """A learned weighting of the L+1 layers: softmax(weights) times gamma.

    ``weights``: any finite numbers, pre-softmax (AllenNLP's convention; the softmax
    subtracts their maximum, so ``[-9e10, 1, -9e10]`` picks the middle layer);
    ``gamma``: finite, at most :data:`~.format.bounds.MAX_GAMMA` in magnitude (the
    largest float32). MixError otherwise; the same values and words as web/src/mix.mjs.
    """

    def __init__(self, weights: Sequence[float], gamma: float = 1.0, do_layer_norm: bool = False):
        listed = isinstance(weights, Sequence | np.ndarray) and not isinstance(weights, str | bytes)
        if not listed:
            raise MixError(f"weights must be a list of numbers, found {show(weights)}")
        values = [_number(w, "weights") for w in weights]
        if not values:
            raise MixError("a scalar mix needs at least one weight")
        self.weights = tuple(values)
        self.gamma = _number(gamma, "gamma")
        if abs(self.gamma) > MAX_GAMMA:
            raise MixError(f"gamma must be within ±{show(MAX_GAMMA)} (the largest float32; "
                           f"the vectors are float32), found {show(self.gamma)}")
        if not isinstance(do_layer_norm, bool | np.bool_):
            raise MixError(f"do_layer_norm must be true or false, found {show(do_layer_norm)}")
        self.do_layer_norm = bool(do_layer_norm)

    @property
    def n_layers(self) -> int:
        """How many layers (L+1) this mix weighs."""
        return len(self.weights)

    def normalized_weights(self) -> np.ndarray:
        """softmax(weights), float64."""
        w = np.asarray(self.weights, dtype=np.float64)
        with np.errstate(over="ignore"):  # finite weights 2e308 apart: -inf, exp gives 0
            e = np.exp(w - w.max())
        return e / e.sum()

    def __call__(self, layers: np.ndarray) -> np.ndarray:
        """Mix one sentence's layers ``(L+1, n, 2P)`` into float32 ``(n, 2P)``."""
        if layers.ndim != 3 or layers.shape[0] != self.n_layers:
            raise MixError(
                f"the mix has {self.n_layers} weights but the layers have shape {layers.shape}, "
                f"expected ({self.n_layers}, tokens, dim)"
            )
        x = layers.astype(np.float64)
        if self.do_layer_norm and x.shape[1] > 0:
            mean = x.mean(axis=(1, 2), keepdims=True)
            var = ((x - mean) ** 2).mean(axis=(1, 2), keepdims=True)
            x = (x - mean) / np.sqrt(var + LAYER_NORM_EPS)
        mixed = self.gamma * np.tensordot(self.normalized_weights(), x, axes=1)
        with np.errstate(over="ignore"):
            out = mixed.astype(np.float32)
        if abs(self.gamma) > 1 and (np.isinf(out) & np.isfinite(mixed)).any():
            raise MixError(f"gamma {show(self.gamma)} makes these vectors overflow float32 "
                           f"(largest {show(MAX_GAMMA)}); use a smaller gamma")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "weights": list(self.weights),
            "gamma": self.gamma,
            "do_layer_norm": self.do_layer_norm,
        }

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ScalarMix) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return (
            f"ScalarMix(weights={list(self.weights)}, gamma={self.gamma}, "
            f"do_layer_norm={self.do_layer_norm})"
        )


def show(value: Any) -> str:
    """``value`` in a message: its repr, a number as a float's (web/src/mix.mjs writes the
    same for numbers, strings, lists, objects, true/false and null)."""
    if isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool):
        try:
            return repr(float(value))
        except OverflowError:  # an int beyond float64
            return f"{str(value)[:12]}... ({len(str(value))} digits)"
    return repr(value)


def _number(value: Any, name: str) -> float:
    """``value`` as a finite float; MixError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise MixError(f"{name} must be numbers, found {show(value)}")
    try:
        number = float(value)
    except OverflowError:  # an int beyond float64
        number = math.inf
    if not math.isfinite(number):
        raise MixError(f"{name} must be finite, found {show(value)}")
    return number


def top_layer(layers: np.ndarray) -> np.ndarray:
    """The last layer of ``(L+1, n, 2P)``: ``(n, 2P)``."""
    return np.ascontiguousarray(layers[-1])


def all_layers(layers: np.ndarray) -> np.ndarray:
    """No mixing: ``(L+1, n, 2P)`` unchanged."""
    return layers


def make_mix(mode: str | os.PathLike, n_layers: int) -> Mix:
    """A mix for a model with ``n_layers`` (L+1) layers.

    ``mode``: "all", "top", "average", or the path (str or Path) of a mix
    JSON file (:func:`load_mix`).
    """
    if mode == "all":
        return all_layers
    if mode == "top":
        return top_layer
    if mode == "average":
        return ScalarMix([0.0] * n_layers, gamma=1.0)
    if isinstance(mode, os.PathLike) or (isinstance(mode, str) and Path(mode).exists()):
        return load_mix(mode, n_layers)
    raise MixError(
        f"unknown mix {mode!r}: not one of {', '.join(MODES)} and no such mix file"
    )


def check_mix(mix: ScalarMix, n_layers: int, where: str = "mix") -> ScalarMix:
    """Raise MixError unless ``mix`` weighs exactly ``n_layers`` layers."""
    if mix.n_layers != n_layers:
        raise MixError(
            f"{where}: expected {n_layers} weights (the model has {n_layers} layers), "
            f"found {mix.n_layers}"
        )
    return mix


def read_mix_file(path: str | os.PathLike) -> ScalarMix:
    """Read a mix JSON file (any number of weights). Raises MixError naming the file (and
    the key, for a field given twice)."""
    path = Path(path)
    return _parse(read_json(path, MixError, "mix file", once=True), path)


def load_mix(path: str | os.PathLike, n_layers: int) -> ScalarMix:
    """Read a mix JSON file for a model with ``n_layers`` (L+1) layers."""
    return check_mix(read_mix_file(path), n_layers, str(path))


def _parse(data: Any, path: Path) -> ScalarMix:
    if not isinstance(data, dict):
        raise MixError(f"{path}: expected a JSON object with {', '.join(FIELDS)}")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise MixError(f"{path}: unknown field {unknown[0]!r} (fields: {', '.join(FIELDS)})")
    for name in ("weights", "gamma"):
        if name not in data:
            raise MixError(f"{path}: missing field {name!r}")
    if not isinstance(data["weights"], list):
        raise MixError(f"{path}: weights must be a list of numbers, found {data['weights']!r}")
    layer_norm = data.get("do_layer_norm", False)
    if not isinstance(layer_norm, bool):
        raise MixError(f"{path}: do_layer_norm must be true or false, found {layer_norm!r}")
    try:
        return ScalarMix(data["weights"], data["gamma"], layer_norm)
    except MixError as e:
        raise MixError(f"{path}: {e}") from None


def save_mix(path: str | Path, mix: ScalarMix) -> None:
    """Write ``mix`` as JSON; :func:`load_mix` reads back an equal mix."""
    write_text_atomic(path, json.dumps(mix.to_dict(), indent=2) + "\n")
