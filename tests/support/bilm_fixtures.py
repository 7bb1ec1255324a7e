"""The bilm-tf fixture files: where they are, and a skip (or, in CI, a failure) without them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from support import REPO

FIXTURE_FILES = (
    "options.json",
    "lm_weights.hdf5",
    "lm_embeddings_sentences.json",
    "lm_embeddings_0.hdf5",
    "lm_embeddings_1.hdf5",
    "lm_embeddings_2.hdf5",
)
FIXTURE_ATOL = 1e-5
FIXTURES_MISSING = "bilm-tf fixtures not found"


def fixture_dir() -> Path:
    """The bilm-tf fixtures: $ELMO_FIXTURES, else <repo>/../shared/fixtures/bilm-tf."""
    env = os.environ.get("ELMO_FIXTURES")
    if env:
        return Path(env)
    return REPO.parent / "shared" / "fixtures" / "bilm-tf"


def require_fixtures() -> Path:
    """The fixture directory, or skip the calling test saying what is missing."""
    d = fixture_dir()
    missing = [name for name in FIXTURE_FILES if not (d / name).is_file()]
    if missing:
        missing_fixtures(
            f"{FIXTURES_MISSING}: {', '.join(missing)} missing in {d} "
            "(set ELMO_FIXTURES to the directory holding them)"
        )
    return d


def missing_fixtures(reason: str) -> None:
    """Skip the calling test (:data:`FIXTURES_MISSING` in the reason), or fail it when
    ``ELMO_REQUIRE_FIXTURES=1`` (CI: the bilm-tf conformance tests must run)."""
    if os.environ.get("ELMO_REQUIRE_FIXTURES", "") not in ("", "0"):
        pytest.fail(f"{reason}; ELMO_REQUIRE_FIXTURES is set", pytrace=False)
    pytest.skip(reason)


def fixture_batches(d: Path) -> list[list[list[str]]]:
    """The 10 batches of 3 tokenized sentences, in the order bilm-tf ran them."""
    with open(d / "lm_embeddings_sentences.json", encoding="utf-8") as f:
        lists = json.load(f)
    return [[s.split() for s in batch] for batch in zip(*lists, strict=True)]


def fixture_expected(d: Path) -> list[list[np.ndarray]]:
    """expected[i][k]: (2, n, P) top-layer (forward, backward) of batch i, row k."""
    import h5py

    files = [h5py.File(d / f"lm_embeddings_{k}.hdf5", "r") for k in range(3)]
    try:
        n_batches = len(files[0])
        return [[files[k][str(i)][...] for k in range(3)] for i in range(n_batches)]
    finally:
        for f in files:
            f.close()


def top_layer_halves(layers: np.ndarray, n_tokens: int, proj_dim: int) -> np.ndarray:
    """One row's (L+1, T, 2P) with boundaries -> its fixture layout (2, n, P)."""
    top = np.asarray(layers)[-1, 1 : 1 + n_tokens]
    return np.stack([top[:, :proj_dim], top[:, proj_dim:]])
