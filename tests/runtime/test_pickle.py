"""Issue 24 item 4: an Embedder pickles as its recipe (model and settings) and opens its
own session in the process that unpickles it: ProcessPoolExecutor under spawn and
forkserver, joblib, Ray tasks."""

from __future__ import annotations

import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from elmo_runtime.embedder import Embedder
from elmo_runtime.mix import ScalarMix

SENTENCE = ["The", "cat", "sat", "on", "the", "mat", "."]


def embed_in_child(emb: Embedder) -> np.ndarray:
    return emb.embed_sentence(SENTENCE)


def test_the_recipe_round_trips(toy_model_path: Path, tmp_path: Path) -> None:
    mix_file = tmp_path / "mix.json"
    mix_file.write_text('{"weights": [0.1, 0.2, 0.3], "gamma": 2.0}')
    emb = Embedder(toy_model_path, mix=mix_file, threads=1, token_cache_mb=1,
                   max_batch_tokens=500)
    emb.embed_sentence(SENTENCE)  # a warm token cache does not travel
    data = pickle.dumps(emb)
    assert len(data) < 2000  # a recipe, not a model
    mix_file.unlink()  # the resolved mix travels, not its file
    again = pickle.loads(data)
    assert again.model_path == emb.model_path and again.mix == ScalarMix([0.1, 0.2, 0.3], 2.0)
    assert again.max_batch_tokens == 500 and len(again.token_cache) == 0
    np.testing.assert_array_equal(again.embed_sentence(SENTENCE), emb.embed_sentence(SENTENCE))


def test_a_bundled_model_travels_by_name() -> None:
    emb = Embedder("default-int8", threads=1)
    assert b"default-int8" in pickle.dumps(emb)
    assert pickle.loads(pickle.dumps(emb)).model_path == emb.model_path


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_process_pool(toy_model_path: Path, method: str) -> None:
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method} start method on this platform")
    emb = Embedder(toy_model_path, mix="top", threads=1)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context(method)) as pool:
        got = list(pool.map(embed_in_child, [emb, emb]))
    for g in got:
        np.testing.assert_array_equal(g, emb.embed_sentence(SENTENCE))


def test_joblib(toy_model_path: Path) -> None:
    joblib = pytest.importorskip("joblib", reason="joblib is not installed (not a dependency)")
    emb = Embedder(toy_model_path, threads=1)
    got = joblib.Parallel(n_jobs=2, backend="loky")(
        joblib.delayed(embed_in_child)(emb) for _ in range(2))
    for g in got:
        np.testing.assert_array_equal(g, emb.embed_sentence(SENTENCE))


@pytest.mark.slow
def test_ray_task(toy_model_path: Path) -> None:
    pytest.importorskip("ray", reason="Ray is not installed (the ray extra)")
    from elmo_runtime.output.ray_session import ray_session

    emb = Embedder(toy_model_path, threads=1)

    def remote_embed(e: Embedder) -> np.ndarray:  # nested: pickled by value, not by module
        return e.embed_sentence(["The", "cat", "sat", "on", "the", "mat", "."])

    with ray_session(cpus=1) as ray:  # a private local Ray: loopback, short temp dir
        got = ray.get(ray.remote(remote_embed).remote(emb), timeout=300)
    np.testing.assert_array_equal(got, emb.embed_sentence(SENTENCE))
