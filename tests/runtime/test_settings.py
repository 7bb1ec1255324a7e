"""EmbedderSettings: each value checked once, at construction; JSON round trips; one default."""

from __future__ import annotations

import json
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
from elmo_runtime import Embedder
from elmo_runtime.batching import DEFAULT_BATCH_SIZE, max_tokens_for
from elmo_runtime.errors import ElmoError, MixError, SettingError
from elmo_runtime.mix import ScalarMix, save_mix
from elmo_runtime.settings import EmbedderSettings, MixSpec
from elmo_runtime.token_cache import DEFAULT_CACHE_MB


@pytest.mark.parametrize("field, value", [
    ("max_batch_tokens", 0), ("max_batch_tokens", -5), ("max_batch_tokens", 2.5),
    ("max_batch_tokens", True), ("threads", 0), ("threads", -1), ("batch_size", 0),
    ("batch_size", None), ("token_cache_mb", -1.0), ("token_cache_mb", float("nan")),
    ("token_cache_mb", float("inf")), ("provider", "tpu"), ("stateful", "yes"), ("model", 3),
])
def test_a_value_out_of_range_is_refused_at_construction(field: str, value: object) -> None:
    with pytest.raises(SettingError, match=field if field != "provider" else "provider") as e:
        EmbedderSettings(**{field: value})
    assert isinstance(e.value, (ElmoError, ValueError)) and "\n" not in str(e.value)


def test_the_embedder_refuses_zero_and_negative_caps_before_loading(tmp_path: Path) -> None:
    """Embedder(max_tokens_per_batch=0) used to become the default silently (issue 21)."""
    missing = tmp_path / "not-loaded.onnx"  # the settings fail first: no model is opened
    for cap in (0, -5):
        with pytest.raises(SettingError, match="max_batch_tokens must be a positive integer"):
            Embedder(missing, max_batch_tokens=cap)
        with pytest.raises(SettingError, match="max_batch_tokens"), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            Embedder(missing, max_tokens_per_batch=cap)


def test_the_former_name_of_the_cap_still_works_with_a_warning(toy_model_path: Path) -> None:
    with pytest.warns(DeprecationWarning, match="max_batch_tokens"):
        emb = Embedder(toy_model_path, max_tokens_per_batch=40)
    assert emb.max_batch_tokens == emb.max_tokens_per_batch == emb.settings.max_batch_tokens == 40
    with pytest.raises(SettingError, match="once"), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        Embedder(toy_model_path, max_tokens_per_batch=40, max_batch_tokens=50)


def test_one_default_each(toy_model_path: Path) -> None:
    s = EmbedderSettings()
    assert (s.model, s.path, s.provider, s.threads, s.max_batch_tokens, s.stateful) == (
        None, None, "auto", None, None, False)
    assert s.mix == MixSpec("all") and s.token_cache_mb == DEFAULT_CACHE_MB
    assert s.batch_size == DEFAULT_BATCH_SIZE
    emb = Embedder(toy_model_path)
    assert emb.max_batch_tokens == max_tokens_for(emb.info.options.lstm_dim)
    assert emb.settings == replace(s, model=str(toy_model_path), path=str(toy_model_path))


def test_settings_round_trip_as_json(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    save_mix(path, ScalarMix([0.5, 0.0, -0.5], gamma=2.0, do_layer_norm=True))
    s = EmbedderSettings("some.onnx", provider="cpu", threads=2, mix=str(path),
                         max_batch_tokens=300, token_cache_mb=0, stateful=True, batch_size=3)
    assert s.mix.mode == "scalar" and s.mix.source == str(path)
    again = EmbedderSettings.from_dict(json.loads(json.dumps(s.to_dict())))
    assert again == s
    path.unlink()  # the weights travel as data: the file is not read again
    assert EmbedderSettings.from_dict(s.to_dict()).mix.weights == (0.5, 0.0, -0.5)


def test_a_resolved_setting_carries_the_absolute_path(toy_model_path: Path) -> None:
    s = EmbedderSettings(str(toy_model_path)).resolved()
    assert s.path == str(toy_model_path.absolute()) and s.model == str(toy_model_path)
    assert EmbedderSettings.from_dict(s.to_dict()).locate().path == toy_model_path.absolute()


def test_a_mix_of_the_wrong_width_fails_when_the_model_is_known(toy_model_path: Path,
                                                                tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    save_mix(path, ScalarMix([0.0] * 7))
    s = EmbedderSettings(str(toy_model_path), mix=str(path))  # the model is not known yet
    with pytest.raises(MixError, match="expected 3 weights"):
        Embedder.from_settings(s)


def test_a_bad_mix_value_is_a_mix_error() -> None:
    with pytest.raises(MixError, match="unknown mix 'bottom'"):
        EmbedderSettings(mix="bottom")
    with pytest.raises(MixError, match="within"):
        EmbedderSettings(mix=MixSpec("scalar", (0.0,), gamma=1e39))
