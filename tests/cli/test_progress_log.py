"""Issue 24 item 12: long runs are not silent outside a terminal. One line on stderr at a
steady interval (lines done, rate, ETA); --quiet silences it."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from elmo_runtime.cli import progress
from elmo_runtime.cli.progress import LogLines
from support.cli import run_elmo as run
from support.cli import write_input


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_interval_with_rate_and_eta() -> None:
    clock, out = Clock(), io.StringIO()
    log = LogLines(1000, interval=30.0, clock=clock, out=out)
    log.update(10)  # t=100: the rate starts being measured here
    clock.now = 110.0
    log.update(100)  # 10 s < 30 s: nothing yet
    assert out.getvalue() == ""
    clock.now = 130.0
    log.update(290)  # 400 done; 390 lines in the 30 s since the first update
    lines = out.getvalue().splitlines()
    assert lines == ["embedding: 400 of 1,000 lines (40.0%), 13 lines/s, ETA 00:46"]
    clock.now = 140.0
    log.update(10)
    assert len(out.getvalue().splitlines()) == 1  # the next one 30 s after the last


def test_without_a_total_no_share_and_no_eta() -> None:
    clock, out = Clock(), io.StringIO()
    log = LogLines(None, interval=1.0, clock=clock, out=out)
    log.update(5)
    clock.now = 102.0
    log.update(15)
    assert out.getvalue() == "embedding: 20 lines, 8 lines/s\n"


@pytest.mark.parametrize("quiet", [False, True])
def test_embed_under_a_pipe_logs_progress_unless_quiet(
    toy_model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quiet: bool
) -> None:
    monkeypatch.setattr(progress, "LOG_INTERVAL", 0.0)  # every update prints
    src = write_input(tmp_path, b"a b\nc\nd e f\n")
    result = run("embed", src, tmp_path / "out.npz", "-m", toy_model_path,
                 *(["--quiet"] if quiet else []))
    assert result.exit_code == 0, result.output
    logged = [line for line in result.stderr.splitlines() if line.startswith("embedding: ")]
    if quiet:
        assert logged == []
    else:
        assert logged[-1].startswith("embedding: 3 of 3 lines (100.0%), ")
        assert logged[-1].endswith("ETA 00:00") or logged[-1].endswith("ETA --:--")
