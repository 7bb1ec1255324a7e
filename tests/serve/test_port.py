"""`elmo serve` on a port that is taken: one line, exit 1, before the model loads."""

from __future__ import annotations

import socket

import pytest
from click.testing import CliRunner

pytest.importorskip("starlette", reason="elmo serve needs the serve extra (starlette)")
pytest.importorskip("uvicorn", reason="elmo serve needs the serve extra (uvicorn)")

from elmo_runtime.cli import main  # noqa: E402


def test_a_busy_port_is_one_line_and_exit_1(monkeypatch: pytest.MonkeyPatch) -> None:
    from elmo_runtime.serve import service

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before the port was checked")

    monkeypatch.setattr(service.Service, "__init__", no_model)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(main, ["serve", "--port", str(port)])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"Error: elmo serve: port {port} on 127.0.0.1 is in use; choose another --port"
    ]
