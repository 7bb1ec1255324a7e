"""What a training run reports: the progress line on stderr and ``metrics.jsonl``.

``metrics.jsonl`` holds one JSON record a line: ``{"step", "epoch",
"train_loss", "tokens_per_s", "tokens"}`` every ``log_every`` steps and
``{"step", "heldout_perplexity"}`` after each evaluation. Only the main
process writes either.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from elmo_runtime.files import atomic_path

METRICS_NAME = "metrics.jsonl"


def duration(seconds: float) -> str:
    """``m:ss``, or ``h:mm:ss`` from an hour on."""
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"


class Progress:
    """One status line on stderr: redrawn on a terminal, a line every 30 s in a log.

    ``stream`` defaults to the ``sys.stderr`` of the moment the line is made.
    """

    def __init__(self, total: int, start_step: int, enabled: bool,
                 stream: TextIO | None = None) -> None:
        self.total, self.start_step, self.enabled = total, start_step, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.t0 = self.last = time.monotonic()
        self.extra: dict[str, str] = {}

    def perplexity(self, ppl: float | None) -> None:
        """Show this held-out perplexity on the following lines (None: nothing yet)."""
        if ppl is not None:
            self.extra["ppl"] = f"held-out ppl {ppl:.1f}"

    def update(self, step: int, loss: float, tokens_per_s: float, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self.last < (0.25 if self.tty else 30.0):
            return
        self.last = now
        done = step - self.start_step
        eta = (now - self.t0) / done * (self.total - step) if done else 0.0
        parts = [f"step {step}/{self.total} ({100 * step / self.total:.0f}%)",
                 f"loss {loss:.3f}", f"{tokens_per_s:,.0f} tok/s", f"ETA {duration(eta)}",
                 *self.extra.values()]
        line = " | ".join(parts)
        self.stream.write(f"\r{line}\033[K" if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


class MetricsLog:
    """``metrics.jsonl`` of an output directory, appended to by the main process."""

    def __init__(self, out: Path, enabled: bool) -> None:
        self.path = out / METRICS_NAME
        self.file: TextIO | None = None
        self.enabled = enabled

    def open(self, resumed_step: int | None) -> None:
        """Start appending; on resume first drop records past the checkpoint's step."""
        if not self.enabled:
            return
        if resumed_step is not None:
            self.trim(resumed_step)
        self.file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def trim(self, step: int) -> None:
        """Drop records past ``step`` (written after the checkpoint a run resumes from)."""
        keep = [line for line in self._lines() if json.loads(line).get("step", 0) <= step]
        with atomic_path(self.path) as tmp:
            tmp.write_text("".join(keep), encoding="utf-8")

    def last(self, key: str) -> Any | None:
        """The value of ``key`` in the last record that has it (None if none)."""
        for line in reversed(self._lines()):
            value = json.loads(line).get(key)
            if value is not None:
                return value
        return None

    def _lines(self) -> list[str]:
        if not self.path.exists():
            return []
        text = self.path.read_text(encoding="utf-8")
        return [line for line in text.splitlines(keepends=True) if line.strip()]

    def log(self, record: dict[str, Any]) -> None:
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
