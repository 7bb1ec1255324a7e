"""Progress on stderr for long commands: a bar with an ETA from the measured rate on a
terminal, one log line every :data:`LOG_INTERVAL` seconds elsewhere (a pipe, nohup,
systemd, CI); signals.

The ETA is the lines left divided by the rate measured *since the first
lines were done*: the model load, the first window read and sorted and the
first batches' warm-up are not averaged into it (click's own ETA averages
from the start and showed 1:28 for a 3-second run). Until the rate has been
measured for :data:`MIN_SECONDS`, the ETA shows ``--:--``.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

MIN_SECONDS = 0.5
LOG_INTERVAL = 30.0  # seconds between progress lines when stderr is not a terminal


class _Interrupts:
    """SIGINT and SIGTERM raise KeyboardInterrupt, so writers clean up as on Ctrl-C.

    A signal that lands inside a callback (a weakref callback, ``__del__``)
    has its exception swallowed by Python ("Exception ignored in …"), so it
    is also remembered, :meth:`check` raises it at the next safe point, and
    the swallowed copy is not printed.
    """

    def __init__(self) -> None:
        self.received = False
        self._hook = sys.unraisablehook

    def __call__(self, signum: int, frame: Any) -> None:
        self.received = True
        raise KeyboardInterrupt

    def check(self) -> None:
        if self.received:
            raise KeyboardInterrupt

    def _unraisable(self, unraisable: Any) -> None:
        if not (self.received and isinstance(unraisable.exc_value, KeyboardInterrupt)):
            self._hook(unraisable)

    @contextmanager
    def installed(self) -> Iterator[None]:
        self.received = False
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        self._hook, sys.unraisablehook = sys.unraisablehook, self._unraisable
        try:
            with handled_signals(self):
                yield
        finally:
            sys.unraisablehook = self._hook


@contextmanager
def handled_signals(handler: Callable[[int, Any], Any]) -> Iterator[None]:
    """``handler`` on SIGTERM and SIGINT (unless SIGINT is ignored: nohup & co.), then restored.

    Outside the main thread (where Python cannot set handlers) it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = [signal.SIGTERM]
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signals.append(signal.SIGINT)
    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


INTERRUPTS = _Interrupts()


class RateEta:
    """Seconds left for ``total`` lines, from the rate measured after the first lines.

    ``clock`` is injectable for tests (seconds, monotonic).
    """

    def __init__(self, total: int, clock: Callable[[], float] = time.monotonic):
        self.total = total
        self.done = 0
        self._clock = clock
        self._start: tuple[float, int] | None = None  # (time, lines) at the first update

    def update(self, lines: int) -> None:
        self.done += lines
        if self._start is None:
            self._start = (self._clock(), self.done)

    def rate(self) -> float | None:
        """Lines per second since the first update; None until measured for
        :data:`MIN_SECONDS`."""
        if self._start is None:
            return None
        t0, done0 = self._start
        elapsed = self._clock() - t0
        if elapsed < MIN_SECONDS or self.done <= done0:
            return None
        return (self.done - done0) / elapsed

    def seconds_left(self) -> float | None:
        """None until the rate has been measured for :data:`MIN_SECONDS`."""
        rate = self.rate()
        return None if rate is None else max(0.0, (self.total - self.done) / rate)

    def text(self) -> str:
        left = self.seconds_left()
        if left is None:
            return "ETA --:--"
        minutes, seconds = divmod(round(left), 60)
        hours, minutes = divmod(minutes, 60)
        return f"ETA {hours}:{minutes:02d}:{seconds:02d}" if hours else (
            f"ETA {minutes:02d}:{seconds:02d}"
        )


class LogLines:
    """Progress as one line every ``interval`` seconds, for a stderr that is no terminal::

        embedding: 12,800 of 1,000,000 lines (1.3%), 410 lines/s, ETA 0:40:07

    (``total`` None: no share and no ETA.) ``clock`` and ``out`` are injectable for tests.
    """

    def __init__(self, total: int | None, interval: float = LOG_INTERVAL,
                 clock: Callable[[], float] = time.monotonic, out: Any = None):
        self.eta = RateEta(total or 0, clock)
        self.total = total
        self.interval = interval
        self._clock = clock
        self._out = out
        self._last = clock()

    def update(self, lines: int) -> None:
        self.eta.update(lines)
        now = self._clock()
        if now - self._last >= self.interval:
            self._last = now
            click.echo(self.line(), err=self._out is None, file=self._out)

    def line(self) -> str:
        done = self.eta.done
        parts = [f"embedding: {done:,} lines" if self.total is None
                 else f"embedding: {done:,} of {self.total:,} lines "
                      f"({100 * done / max(self.total, 1):.1f}%)"]
        rate = self.eta.rate()
        parts.append("-- lines/s" if rate is None else f"{rate:,.0f} lines/s")
        if self.total is not None:
            parts.append(self.eta.text())
        return ", ".join(parts)


@contextmanager
def line_progress(length: int | None, quiet: bool = False,
                  interval: float | None = None) -> Iterator[Callable[[int], None]]:
    """A callback counting lines done; raises on a signal.

    On a terminal: a bar (``length`` known) with an ETA. Elsewhere (a pipe, a log
    file): one :class:`LogLines` line every ``interval`` seconds (default
    :data:`LOG_INTERVAL`). ``quiet``: neither.
    """
    if quiet:
        yield lambda lines: INTERRUPTS.check()
        return
    if not sys.stderr.isatty() or length is None:
        log = LogLines(length, LOG_INTERVAL if interval is None else interval)

        def log_update(lines: int) -> None:
            INTERRUPTS.check()
            log.update(lines)

        yield log_update
        return
    eta = RateEta(length)
    with click.progressbar(
        length=length,
        label="embedding",
        file=sys.stderr,
        update_min_steps=32,
        show_eta=False,
        item_show_func=lambda _: eta.text(),
    ) as bar:

        def update(lines: int) -> None:
            INTERRUPTS.check()
            eta.update(lines)
            bar.update(lines)

        yield update
