"""Fixtures of the `elmo serve` tests (helpers: support/serve.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest


@pytest.fixture
def serve() -> Iterator[Callable[..., object]]:
    """``serve(*ARGS, file_limit=None)`` starts `elmo serve ARGS`
    (:func:`support.serve.start_server`); every
    server it started is killed at teardown if it still runs, whatever the test did."""
    from support.serve import Server, start_server

    started: list[Server] = []

    def start(*args: str, **kwargs: object) -> Server:
        started.append(start_server(*args, **kwargs))
        return started[-1]

    yield start
    for server in started:
        server.kill()
