"""Child processes that the tests signal: default signal dispositions, whatever the runner's."""

from __future__ import annotations

import signal


def default_signals() -> None:
    """``preexec_fn`` of a child that a test will signal: SIGINT and SIGTERM as a fresh process
    has them.

    A runner started in the background (``cmd &``, some CI shells, nohup) ignores SIGINT, and
    an ignored signal stays ignored across exec: Python then installs no KeyboardInterrupt
    handler, elmo's commands leave SIGINT alone (as nohup asks), and a test's SIGINT would do
    nothing. Sets two signals in the forked child, takes no lock.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
