"""The ``elmo`` command in tests: in-process (click's runner), as a subprocess, interrupted."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result


def run_elmo(*args: object, input: bytes | None = None, env: dict | None = None) -> Result:
    """``elmo ARGS...`` in-process (click's runner, stderr apart); each argument str()-ed."""
    from elmo_runtime.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], input=input, env=env)


def elmo_command() -> list[str]:
    """The installed `elmo` script next to this interpreter, else `python -m elmo_runtime.cli`."""
    script = Path(sys.executable).with_name("elmo")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "elmo_runtime.cli"]


def write_input(directory: Path, data: bytes, name: str = "in.txt") -> Path:
    """``directory/name`` holding the bytes ``data`` (an `elmo embed` input file); its path."""
    path = directory / name
    path.write_bytes(data)
    return path


def run_interrupted(monkeypatch: pytest.MonkeyPatch, sentences: int, *args: object,
                    input: bytes | None = None) -> Result:
    """``elmo ARGS...`` (as :func:`run_elmo`) interrupted after ``sentences`` sentences, as
    by Ctrl-C (:func:`interrupt_after`); later runs are not interrupted."""
    with monkeypatch.context() as m:
        interrupt_after(m, sentences)
        return run_elmo(*args, input=input)


def interrupt_after(monkeypatch: pytest.MonkeyPatch, sentences: int) -> None:
    """Make the next run raise KeyboardInterrupt (as a signal would) after ``sentences``."""
    from elmo_runtime.embedder import Embedder

    real = Embedder.embed_sentences
    done = 0

    def interrupted(self, items, batch_size=64):
        nonlocal done
        for out in real(self, items, batch_size):
            if done == sentences:
                raise KeyboardInterrupt
            done += 1
            yield out

    monkeypatch.setattr(Embedder, "embed_sentences", interrupted)
