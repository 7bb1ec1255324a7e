"""Shared fixtures (their helpers live in tests/support/):

* ``tiny_model_path``: the bilm-tf fixture biLM, built by elmo_export's graph
  builder (real numbers; needs the export extra).
* ``toy_model_path``: the closed-form contract model of :mod:`support.models`, for exact
  plumbing tests without the export side; ``toy`` gives its expected vectors.
* ``not_elmo_model_path``: a valid ONNX model without elmo-edge metadata.
* ``no_bundled_models``: this installation as if its bundled model files were left out
  (a trimmed install): the registry is there, the .onnx files are not.
* ``one_torch_thread``: torch on one intra-op thread for a module
  (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from elmo_runtime.format import contract
from elmo_runtime.format.options import load_options
from onnx import helper
from support.bilm_fixtures import FIXTURES_MISSING, fixture_dir, missing_fixtures
from support.models import identity_model, toy_model, toy_vectors


@pytest.fixture(scope="session", autouse=True)
def private_prepared_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Prepared copies of test models go to a temp dir, not the user's cache (subprocesses too)."""
    from elmo_runtime.loading.hashes import ENV_CACHE

    before = os.environ.get(ENV_CACHE)
    os.environ[ENV_CACHE] = str(tmp_path_factory.mktemp("prepared-cache"))
    yield Path(os.environ[ENV_CACHE])
    if before is None:
        os.environ.pop(ENV_CACHE, None)
    else:
        os.environ[ENV_CACHE] = before


@pytest.fixture
def no_bundled_models(tmp_path_factory: pytest.TempPathFactory,
                      monkeypatch: pytest.MonkeyPatch) -> Path:
    """The bundled models' folder is an empty one holding only a copy of the registry."""
    from elmo_runtime import models

    folder = tmp_path_factory.mktemp("no-bundled-models")
    shutil.copy(models.models_dir() / models.REGISTRY, folder / models.REGISTRY)
    monkeypatch.setattr(models, "models_dir", lambda: folder)
    assert not any(m.path.is_file() for m in models.bundled_models())
    return folder


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny models run faster on one intra-op thread (extra threads only add contention:
    10x slower on a loaded 2-core box); the previous setting is restored afterwards."""
    try:
        import torch
    except ImportError:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def bilm_fixtures() -> Path:
    path = fixture_dir()
    if not (path / "options.json").is_file():
        missing_fixtures(f"{FIXTURES_MISSING} at {path} (set ELMO_FIXTURES)")
    return path


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line in the summary when the bilm-tf fixtures were missing: a green run skipped them."""
    skipped = terminalreporter.stats.get("skipped", [])
    count = sum(FIXTURES_MISSING in str(getattr(r, "longrepr", "")) for r in skipped)
    if count:
        terminalreporter.write_line(
            f"{count} tests skipped: {FIXTURES_MISSING} at {fixture_dir()}; set ELMO_FIXTURES "
            "to the bilm-tf fixture directory (ELMO_REQUIRE_FIXTURES=1 makes this a failure)",
            yellow=True,
        )


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory, bilm_fixtures: Path) -> Path:
    """The bilm-tf fixture biLM as an elmo-edge ONNX model."""
    onnx_graph = pytest.importorskip("elmo_export.graph.builder")
    weights_mod = pytest.importorskip("elmo_export.bilm_tf.weights")
    options = load_options(bilm_fixtures / "options.json")
    weights = weights_mod.read_weights(bilm_fixtures / "lm_weights.hdf5", options)
    proto = onnx_graph.build_model(options, weights)
    helper.set_model_props(proto, contract.make_metadata(options, source={"kind": "test"}))
    path = tmp_path_factory.mktemp("models") / "tiny.onnx"
    onnx.save(proto, str(path))
    return path


@pytest.fixture(scope="session")
def toy_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "toy.onnx"
    onnx.save(toy_model(), str(path))
    return path


@pytest.fixture(scope="session")
def toy() -> Callable[..., np.ndarray]:
    """:func:`support.models.toy_vectors`, for tests that compare against the toy model."""
    return toy_vectors


@pytest.fixture(scope="session")
def not_elmo_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid ONNX model (Identity) without elmo-edge metadata."""
    path = tmp_path_factory.mktemp("models") / "identity.onnx"
    onnx.save(identity_model(), str(path))
    return path
