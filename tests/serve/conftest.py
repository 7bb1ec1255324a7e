"""Fixtures of the `elmo serve` tests: one shared server process, the library as reference."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from elmo_runtime import Embedder

if TYPE_CHECKING:
    from serve_util import Server


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    """The bundled model with small limits and an API key (mix: all)."""
    # imported here: serve_util skips the calling module when the serve extra is absent
    from serve_util import API_KEY, start_server

    s = start_server(
        "--api-key", API_KEY,
        "--max-client-batch-size", "40",
        "--max-input-tokens", "60",
        "--payload-limit", "100000",
    )  # fmt: skip
    yield s
    assert s.stop() == 0, "".join(s.stderr)


@pytest.fixture(scope="session")
def offline() -> dict[str, Embedder]:
    """The library on the same (bundled) model, one Embedder per mix: the reference vectors."""
    return {mix: Embedder(mix=mix) for mix in ("all", "top", "average")}
