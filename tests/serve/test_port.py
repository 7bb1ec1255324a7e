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


@pytest.mark.parametrize("how", ["flag", "env"])
def test_an_empty_api_key_is_refused_not_ignored(how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--api-key "$KEY"` with KEY unset must not start an open service."""
    from elmo_runtime.serve import command

    monkeypatch.setattr(command, "run", lambda *a, **k: pytest.fail("the service started"))
    if how == "flag":
        args, env = ["serve", "--api-key", ""], {}
    else:
        args, env = ["serve"], {"ELMO_API_KEY": " "}
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 2, result.output
    assert "--api-key" in result.stderr and "is empty" in result.stderr


def test_a_public_address_without_a_key_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    from elmo_runtime.serve import command

    started = []
    monkeypatch.setattr(command, "run", lambda config, **k: started.append(config))
    monkeypatch.delenv("ELMO_API_KEY", raising=False)
    result = CliRunner().invoke(main, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 0, result.output
    assert "Warning: elmo serve on 0.0.0.0 without --api-key" in result.stderr
    assert started and started[0].api_key is None
    quiet = CliRunner().invoke(main, ["serve"])  # loopback: no warning
    assert quiet.exit_code == 0 and "Warning" not in quiet.stderr
