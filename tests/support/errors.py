"""One check for every one-line user error: a CLI result or a raised exception."""

from __future__ import annotations

import pytest
from click.testing import Result


def one_line_error(outcome: Result | pytest.ExceptionInfo | BaseException, message: str = "",
                   code: int = 1) -> str:
    """The error of ``outcome`` is one line holding ``message``; returns that line.

    ``outcome`` is either a click :class:`~click.testing.Result` of an ``elmo`` command or an
    exception (as raised, or as :func:`pytest.raises` caught it).

    A command must have failed with exit status ``code``, without a traceback, with nothing on
    stdout and one line on stderr. An ElmoError (1) is ``Error: ...``; an interrupt (130) and
    an internal error (2) are said plainly; a usage error (2) ends click's usage text with
    ``Error: ...``. An exception's ``str()`` must be that one line (``code`` does not apply).
    """
    if isinstance(outcome, Result):
        return _command_error(outcome, message, code)
    error = outcome.value if isinstance(outcome, pytest.ExceptionInfo) else outcome
    text = str(error)
    assert "\n" not in text, text
    assert message in text, text
    return text


def _command_error(result: Result, message: str, code: int) -> str:
    from elmo_runtime.cli import EXIT_INTERRUPTED

    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert result.stdout == "", result.output
    lines = result.stderr.strip().splitlines()
    if not (code == 2 and lines and lines[0].startswith("Usage:")):
        assert len(lines) == 1, result.stderr
    if code != EXIT_INTERRUPTED and not message.startswith("internal error"):
        assert lines[-1].startswith("Error: "), result.stderr
    assert message in lines[-1], result.stderr
    return lines[-1]
