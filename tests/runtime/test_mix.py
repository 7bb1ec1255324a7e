"""Scalar mix: formulas against hand-computed numbers, named modes, mix files."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from elmo_runtime.errors import MixError
from elmo_runtime.mix import ScalarMix, load_mix, make_mix, save_mix


def constant_layers(values: list[float], n: int = 2, dim: int = 4) -> np.ndarray:
    """(len(values), n, dim) with layer j filled with values[j]."""
    return np.stack([np.full((n, dim), v, dtype=np.float32) for v in values])


def test_softmax_weights_times_gamma() -> None:
    # softmax([0, ln 2, ln 3]) = [1/6, 2/6, 3/6]
    mix = ScalarMix([0.0, math.log(2), math.log(3)], gamma=0.5)
    np.testing.assert_allclose(mix.normalized_weights(), [1 / 6, 2 / 6, 3 / 6], rtol=1e-12)
    out = mix(constant_layers([6.0, 12.0, 18.0]))
    # 0.5 * (6/6 + 2*12/6 + 3*18/6) = 0.5 * (1 + 4 + 9) = 7
    assert out.shape == (2, 4)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, 7.0, rtol=1e-6)


def test_softmax_is_stable_for_large_weights() -> None:
    out = ScalarMix([1000.0, 1000.0, -1000.0])(constant_layers([2.0, 4.0, 100.0]))
    np.testing.assert_allclose(out, 3.0, rtol=1e-6)


def test_layer_norm_matches_hand_numbers() -> None:
    # one layer, 2 tokens x 2 dims: mean 4, variance (16 + 0 + 0 + 16) / 4 = 8
    x = np.array([[[0.0, 4.0], [4.0, 8.0]]], dtype=np.float32)
    out = ScalarMix([0.0], gamma=2.0, do_layer_norm=True)(x)
    expected = 2.0 * (x[0] - 4.0) / math.sqrt(8.0)
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_layer_norm_normalizes_each_layer_separately() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 5, 6)).astype(np.float32) * np.array([1.0, 10.0, 100.0])[:, None, None]
    x += np.array([5.0, -3.0, 50.0])[:, None, None]
    mix = ScalarMix([0.1, 0.2, 0.3], gamma=1.5, do_layer_norm=True)
    w = mix.normalized_weights()
    expected = sum(w[j] * (x[j] - x[j].mean()) / np.sqrt(x[j].var() + 1e-12) for j in range(3))
    np.testing.assert_allclose(mix(x), 1.5 * expected, rtol=1e-5, atol=1e-6)


def test_layer_norm_equals_allennlp_masked_formula_for_a_padded_batch_of_one() -> None:
    """Per-sentence statistics = AllenNLP's masked statistics over a batch of one."""
    rng = np.random.default_rng(1)
    n, pad, dim = 4, 3, 6
    sentence = rng.normal(size=(3, n, dim))
    padded = np.concatenate([sentence, rng.normal(size=(3, pad, dim))], axis=1)
    mask = np.concatenate([np.ones(n), np.zeros(pad)])[None, :, None]
    count = n * dim
    mix = ScalarMix([0.3, -0.2, 0.5], gamma=0.8, do_layer_norm=True)
    pieces = []
    for j in range(3):  # allennlp.modules.scalar_mix._do_layer_norm
        masked = padded[j] * mask
        mean = masked.sum() / count
        var = (((masked - mean) * mask) ** 2).sum() / count
        pieces.append((padded[j] - mean) / np.sqrt(var + 1e-12))
    expected = 0.8 * sum(w * p for w, p in zip(mix.normalized_weights(), pieces, strict=True))
    np.testing.assert_allclose(mix(sentence), expected[:n], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layer_norm", [False, True])
def test_empty_sentence_mixes_to_empty(layer_norm: bool) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "mean of empty slice"
        out = ScalarMix([0.0, 0.0], do_layer_norm=layer_norm)(np.zeros((2, 0, 8), np.float32))
    assert out.shape == (0, 8)


def test_wrong_number_of_layers_is_an_error() -> None:
    with pytest.raises(MixError, match=r"has 2 weights but the layers have shape \(3, 2, 4\)"):
        ScalarMix([0.0, 0.0])(constant_layers([1.0, 2.0, 3.0]))


def test_named_modes() -> None:
    layers = constant_layers([1.0, 2.0, 6.0])
    assert make_mix("all", 3)(layers) is layers
    np.testing.assert_array_equal(make_mix("top", 3)(layers), layers[2])
    np.testing.assert_allclose(make_mix("average", 3)(layers), 3.0, rtol=1e-6)
    with pytest.raises(MixError, match="unknown mix 'bottom'"):
        make_mix("bottom", 3)


@pytest.mark.parametrize(
    ("weights", "gamma", "message"),
    [
        ([], 1.0, "at least one weight"),
        ([0.0, float("nan")], 1.0, "weights must be finite"),
        ([0.0], float("inf"), "gamma must be finite"),
        ([0.0, "1"], 1.0, "weights must be numbers"),
        ([True], 1.0, "weights must be numbers"),
    ],
)
def test_invalid_values(weights: list, gamma: float, message: str) -> None:
    with pytest.raises(MixError, match=message):
        ScalarMix(weights, gamma)


def test_file_round_trip_is_exact(tmp_path: Path) -> None:
    mix = ScalarMix([0.1, -2.5e-7, 1 / 3], gamma=0.7000000000000001, do_layer_norm=True)
    path = tmp_path / "mix.json"
    save_mix(path, mix)
    loaded = load_mix(path, 3)
    assert loaded == mix
    assert loaded.weights == (0.1, -2.5e-7, 1 / 3)
    assert loaded.gamma == 0.7000000000000001
    assert loaded.do_layer_norm is True
    assert json.loads(path.read_text())["weights"] == [0.1, -2.5e-7, 1 / 3]


def test_do_layer_norm_defaults_to_false(tmp_path: Path) -> None:
    path = tmp_path / "mix.json"
    path.write_text('{"weights": [1, 2], "gamma": 3}')
    assert load_mix(path, 2) == ScalarMix([1.0, 2.0], 3.0, False)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"weights": [0, 0], "gamma": 1}', "expected 3 weights (the model has 3 layers), found 2"),
        ('{"weights": [0, NaN, 0], "gamma": 1}', "weights must be finite, found nan"),
        ('{"weights": [0, 0, 0], "gamma": Infinity}', "gamma must be finite, found inf"),
        ('{"weights": [0, 0, 0]}', "missing field 'gamma'"),
        ('{"gamma": 1}', "missing field 'weights'"),
        ('{"weights": [0, 0, 0], "gamma": 1', "not valid JSON (line 1"),
        ("[0, 0, 0]", "expected a JSON object"),
        ('{"weights": "0 0 0", "gamma": 1}', "weights must be a list of numbers"),
        ('{"weights": [0, "a", 0], "gamma": 1}', "weights must be numbers, found 'a'"),
        ('{"weights": [0, 0, 0], "gamma": "1"}', "gamma must be numbers, found '1'"),
        ('{"weights": [0, 0, 0], "gamma": 1, "do_layer_norm": "yes"}', "must be true or false"),
        ('{"weights": [0, 0, 0], "gamma": 1, "gama": 1}', "unknown field 'gama'"),
        ('{"weights": [1, 2, 3], "gamma": 1, "weights": [0, 0, 1]}',
         'the key "weights" is repeated in one object; keep one'),  # was: the last one, quietly
    ],
)
def test_file_errors_name_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad-mix.json"
    path.write_text(text)
    with pytest.raises(MixError) as e:
        load_mix(path, 3)
    assert str(e.value).startswith(f"{path}: ")
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MixError, match="no such mix file"):
        load_mix(tmp_path / "nope.json", 3)


def test_a_mix_file_by_str_and_the_resolved_spec(tmp_path: Path) -> None:
    """make_mix takes a path as str or Path; a MixSpec round-trips every mix as JSON data."""
    from elmo_runtime.mix import top_layer
    from elmo_runtime.settings import MixSpec

    path = tmp_path / "m.json"
    save_mix(path, ScalarMix([1.0, 0.0, 0.0], gamma=2.0))
    assert make_mix(str(path), 3) == make_mix(path, 3) == ScalarMix([1.0, 0.0, 0.0], gamma=2.0)
    assert MixSpec.of(None).key() == MixSpec.of("all").key() == "all"
    assert MixSpec.of("top").key() == "top"
    assert MixSpec.of("average").key() == "average"
    assert MixSpec.of("average").build(3) == make_mix("average", 3)
    spec = MixSpec.of(path)
    assert spec.key() == {"weights": [1.0, 0.0, 0.0], "gamma": 2.0, "do_layer_norm": False}
    assert spec.source == str(path)
    assert MixSpec.of(str(path)) == spec
    assert MixSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert MixSpec.of(spec.key()).build(3) == load_mix(path, 3)
    assert MixSpec.of("top").build(3) is top_layer
    assert MixSpec.of("all").build(3) is None
    with pytest.raises(MixError, match="expected 4 weights"):
        spec.build(4)


def test_any_finite_pre_softmax_weights_pick_layers_stably() -> None:
    """AllenNLP's documented way to pick one layer, and weights as far apart as floats go."""
    layers = np.arange(12, dtype=np.float32).reshape(3, 2, 2)
    np.testing.assert_array_equal(ScalarMix([-9e10, 1, -9e10])(layers), layers[1])
    np.testing.assert_array_equal(ScalarMix([-1.7e308, 1.7e308, 0])(layers), layers[1])
    assert ScalarMix([1e308, 1e308, 1e308]).normalized_weights().tolist() == [1 / 3] * 3


def test_gamma_is_bounded_by_float32() -> None:
    top = float(np.finfo(np.float32).max)
    ScalarMix([0.0], gamma=top)
    ScalarMix([0.0], gamma=-top)
    with pytest.raises(MixError, match=r"gamma must be within ±3\.4028234663852886e\+38 .*"
                                       r"found 1e\+39$"):
        ScalarMix([0.0], gamma=1e39)
    with pytest.raises(MixError, match=r"must be finite, found 100000000000\.\.\. \(401 digits\)"):
        ScalarMix([0.0], gamma=10**400)
    with pytest.raises(MixError, match="weights must be a list of numbers, found 5.0"):
        ScalarMix(5)  # type: ignore[arg-type]


def test_vectors_that_would_overflow_float32_are_refused() -> None:
    layers = np.full((2, 1, 3), 10.0, dtype=np.float32)
    assert np.isfinite(ScalarMix([0.0, 0.0], gamma=3e37)(layers)).all()
    with pytest.raises(MixError, match=r"gamma 1e\+38 makes these vectors overflow float32"):
        ScalarMix([0.0, 0.0], gamma=1e38)(layers)


def test_a_mix_of_equal_weights_is_not_relabelled_average(tmp_path: Path) -> None:
    """A mix file of zero weights stays the scalar mix the user gave (issue 21: it was
    silently recorded as "average"); its vectors are the average's all the same."""
    from elmo_runtime.settings import MixSpec

    path = tmp_path / "zeros.json"
    save_mix(path, ScalarMix([0.0, 0.0, 0.0]))
    spec = MixSpec.of(path)
    assert spec.mode == "scalar"
    assert spec.key() == {"weights": [0.0, 0.0, 0.0], "gamma": 1.0, "do_layer_norm": False}
    layers = np.arange(24, dtype=np.float32).reshape(3, 2, 4)
    np.testing.assert_array_equal(spec.build(3)(layers), MixSpec.of("average").build(3)(layers))


@pytest.mark.parametrize("bad", [
    {"mode": "bottom"}, {"mode": "top", "weights": [1.0]}, {"mode": "scalar"},
    {"mode": "scalar", "weights": [0.0], "gamma": 1e39}, {"weights": "1,2"},
    {"mode": "all", "x": 1},
])
def test_a_mix_spec_refuses_what_a_mix_refuses(bad: dict) -> None:
    from elmo_runtime.settings import MixSpec

    with pytest.raises(MixError):
        MixSpec.from_dict(bad)
