"""Fitting a scalar mix with a softmax classifier (NumPy): recovery, exactness, mix files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from elmo_runtime import Embedder
from elmo_runtime.errors import MixError
from elmo_runtime.mix import ScalarMix, load_mix, save_mix
from elmo_runtime.mix_fit import _loss_and_grads, fit_mix

N_CLASSES = 4


def synthetic(n: int = 1200, dim: int = 12, informative: int = 2, seed: int = 0):
    """Three layers of unlike scale and offset; the labels depend on one layer only."""
    rng = np.random.default_rng(seed)
    layers = rng.normal(size=(n, 3, dim)) * np.array([6.0, 1.0, 0.05])[None, :, None]
    layers += rng.normal(size=(3, dim)) * 4.0
    prototypes = rng.normal(size=(dim, N_CLASSES))
    centered = layers[:, informative] - layers[:, informative].mean(axis=0)
    labels = (centered @ prototypes).argmax(axis=1)
    return layers.astype(np.float32), labels


@pytest.mark.parametrize("informative", [0, 2])
def test_recovers_the_informative_layer(informative: int) -> None:
    layers, labels = synthetic(informative=informative)
    fit = fit_mix(layers[:1000], labels[:1000], N_CLASSES)
    weights = fit.mix.normalized_weights()
    # The raw weight must undo the layer's scale; on unit-scale layers it dominates.
    scales = layers.std(axis=0).mean(axis=1)
    effective = weights * scales / (weights * scales).sum()
    assert effective[informative] > 0.9, effective
    assert (fit.predict(layers[1000:]) == labels[1000:]).mean() > 0.85
    chance = fit_mix(layers[:1000], labels[:1000], N_CLASSES,
                     mix=ScalarMix([0.0 if j == (informative + 1) % 3 else -1e4 for j in range(3)]))
    assert (chance.predict(layers[1000:]) == labels[1000:]).mean() < 0.5


def test_fit_is_deterministic_and_invariant_to_layer_scale_and_offset() -> None:
    layers, labels = synthetic()
    a = fit_mix(layers, labels, N_CLASSES, steps=100)
    b = fit_mix(layers, labels, N_CLASSES, steps=100)
    assert a.mix == b.mix
    np.testing.assert_array_equal(a.coef, b.coef)
    # Scaling a layer by c and shifting it is undone exactly by the conversion to raw layers.
    scale = np.array([0.5, 3.0, 10.0], dtype=np.float32)[None, :, None]
    shift = np.arange(12, dtype=np.float32)[None, None, :]
    moved = layers * scale + shift
    c = fit_mix(moved, labels, N_CLASSES, steps=100)
    assert c.loss == pytest.approx(a.loss, rel=1e-4)
    np.testing.assert_allclose(c.logits(moved), a.logits(layers), rtol=1e-3, atol=1e-3)


def test_fixed_mix_fits_only_the_classifier() -> None:
    layers, labels = synthetic()
    mix = ScalarMix([0.0, 0.3, 1.2], gamma=0.7)
    fit = fit_mix(layers, labels, N_CLASSES, mix=mix, steps=100)
    assert fit.mix is mix
    logits = mix(layers.swapaxes(0, 1)).astype(np.float64) @ fit.coef + fit.intercept
    np.testing.assert_allclose(fit.logits(layers), logits)


def test_gradients_match_finite_differences() -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(size=(7, 3, 5))
    onehot = np.eye(4)[rng.integers(0, 4, size=7)]
    params = [rng.normal(size=3), np.array([1.3]), rng.normal(size=(5, 4)), rng.normal(size=4)]
    _, grads = _loss_and_grads(params, z, onehot, l2=0.1)
    for p, g in zip(params, grads, strict=True):
        numeric = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            old = p[idx]
            p[idx] = old + 1e-6
            up = _loss_and_grads(params, z, onehot, 0.1)[0]
            p[idx] = old - 1e-6
            down = _loss_and_grads(params, z, onehot, 0.1)[0]
            p[idx] = old
            numeric[idx] = (up - down) / 2e-6
        np.testing.assert_allclose(g, numeric, atol=1e-7)


def test_fitted_mix_file_is_applied_by_the_runtime_as_the_spec_formula(
    toy_model_path: Path, tmp_path: Path
) -> None:
    layers, labels = synthetic()
    fit = fit_mix(layers, labels, N_CLASSES, steps=50)
    path = tmp_path / "learned.mix.json"
    save_mix(path, fit.mix)
    assert load_mix(path, 3) == fit.mix
    data = json.loads(path.read_text())
    assert set(data) == {"weights", "gamma", "do_layer_norm"} and data["do_layer_norm"] is False

    tokens = ["the", "bank", "of", "the", "river"]
    raw = Embedder(toy_model_path).embed_sentence(tokens).astype(np.float64)  # (3, n, D)
    mixed = Embedder(toy_model_path, mix=path).embed_sentence(tokens)
    # docs/elmo-spec.md: ELMo_k = gamma * sum_j softmax(w)_j * h_kj, by hand in float64
    exps = [math.exp(w - max(data["weights"])) for w in data["weights"]]
    by_hand = data["gamma"] * sum(e / sum(exps) * raw[j] for j, e in enumerate(exps))
    np.testing.assert_allclose(mixed, by_hand, rtol=1e-6, atol=1e-6)
    # The span mean of mixed vectors is the mix of span means (what the fit was given).
    span = raw[:, 1:3].mean(axis=1)[None]  # (1, 3, D)
    np.testing.assert_allclose(fit.features(span)[0], mixed[1:3].mean(axis=0), rtol=1e-5)


def test_fitted_mix_for_another_model_is_a_clear_error(tmp_path: Path) -> None:
    layers, labels = synthetic()
    path = tmp_path / "learned.mix.json"
    save_mix(path, fit_mix(layers, labels, N_CLASSES, steps=10).mix)
    with pytest.raises(MixError, match=r"expected 4 weights \(the model has 4 layers\), found 3"):
        load_mix(path, 4)
    data = json.loads(path.read_text())
    del data["gamma"]
    path.write_text(json.dumps(data))
    with pytest.raises(MixError, match="missing field 'gamma'"):
        load_mix(path, 3)
    path.write_text(path.read_text().replace("{", '{"gamma": NaN, ', 1))
    with pytest.raises(MixError, match="gamma must be finite, found nan"):
        load_mix(path, 3)


@pytest.mark.parametrize(
    ("layers", "labels", "message"),
    [
        (np.zeros((4, 3)), np.zeros(4, int), r"expected layers \(N, L\+1, D\)"),
        (np.zeros((4, 3, 2)), np.zeros(3, int), r"expected layers \(N, L\+1, D\)"),
        (np.zeros((4, 3, 2)), np.array([0, 1, 2, 4]), r"labels must lie in \[0, 4\)"),
        (np.full((4, 3, 2), np.nan), np.zeros(4, int), "NaN or infinite"),
    ],
)
def test_bad_input(layers: np.ndarray, labels: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fit_mix(layers, labels, N_CLASSES)


def test_fixed_mix_must_match_the_layers() -> None:
    with pytest.raises(ValueError, match="must weigh 3 layers without layer norm"):
        fit_mix(np.zeros((4, 3, 2)), np.zeros(4, int), N_CLASSES, mix=ScalarMix([0.0, 0.0]))


def test_fit_errors_are_one_line_user_errors() -> None:
    """A user's bad arrays give an ElmoError (the CLI's one-line form), still a ValueError."""
    from elmo_runtime.errors import ElmoError
    from elmo_runtime.mix_fit import FitError

    with pytest.raises(ElmoError, match=r"labels must lie in \[0, 2\), found 0..5") as info:
        fit_mix(np.zeros((2, 3, 4), dtype=np.float32), np.array([0, 5]), 2)
    assert isinstance(info.value, (FitError, ValueError))
