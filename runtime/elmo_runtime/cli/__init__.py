"""The `elmo` command: thin wrappers over the library.

Every :class:`ElmoError` becomes ``Error: <message>`` and exit status 1 (a
:class:`UsageError`, options that cannot go together, exit status 2); an
interrupt (Ctrl-C or SIGTERM) exits with 130; a reader of standard output that
leaves early (``elmo embed in.txt - | head -c 4``) ends the command quietly with 141,
the status of a tool killed by SIGPIPE (not the user's error: nothing is printed);
anything unexpected prints one line and exits with 2 (``ELMO_DEBUG=1`` shows the
traceback). The commands
live in their own modules: `embed` (cli/embed.py), `info` (cli/info.py),
`cache` (cli/cache.py), `pull` (cli/pull.py),
`quantize` (cli/quantize.py); the export side's commands (`elmo convert`,
`train`, `export`) come from the ``elmo_edge.commands`` entry-point group
(pyproject.toml), so the runtime never imports elmo_export.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
import warnings
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import click

from ..corpus import read_sentences
from ..errors import ElmoError, UsageError, first_line, missing_extra, pip_hint
from ..output.job import count_lines
from ..version import __version__
from .progress import INTERRUPTS

__all__ = ["INTERRUPTS", "ElmoGroup", "count_lines", "main", "read_sentences"]

EXIT_INTERNAL = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what `cat`, `yes`, ... report when the reader leaves


def _show_warning(message: Any, category: type, *args: Any, **kwargs: Any) -> None:
    click.echo(f"Warning: {first_line(message) if isinstance(message, Exception) else message}",
               err=True)


# The runtime's commands defined elsewhere, imported only when used, so `elmo embed`
# starts fast: name -> (module, attribute).
LAZY_COMMANDS = {
    "pull": ("elmo_runtime.cli.pull", "pull_command"),
    "quantize": ("elmo_runtime.cli.quantize", "quantize_command"),
    "serve": ("elmo_runtime.serve.command", "serve_command"),
    "web": ("elmo_runtime.webserve", "web_command"),
}
# Commands of other packages (elmo_export's convert, train, export), found in the installed
# metadata: `name = "module:attribute [extra]"`, the extra naming what installs its imports.
COMMAND_GROUP = "elmo_edge.commands"


@functools.cache
def plugin_commands() -> dict[str, EntryPoint]:
    """The ``elmo_edge.commands`` entry points by command name (read once per process)."""
    return {ep.name: ep for ep in entry_points(group=COMMAND_GROUP)}


def _needs_extra(name: str, extra: str, error: ImportError) -> click.Command:
    """A stand-in for a command whose imports failed: running it is the one-line error."""
    hint = pip_hint(extra)

    def callback(args: tuple[str, ...]) -> None:
        raise missing_extra(name, extra, error)

    return click.Command(
        name,
        callback=callback,
        params=[click.Argument(["args"], nargs=-1, type=click.UNPROCESSED)],
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        help=f"(needs the {extra} extra: {hint})",
    )


class ElmoGroup(click.Group):
    """A click group that turns every failure into one line and an exit status."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS, *plugin_commands()})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is not None:
            return command
        if name in LAZY_COMMANDS:
            module, attr = LAZY_COMMANDS[name]
            return getattr(importlib.import_module(module), attr)
        entry = plugin_commands().get(name)
        if entry is None:
            return None
        try:
            return entry.load()
        except ImportError as e:  # a missing extra; a module of its own package is a bug
            own = (e.name or "").partition(".")[0] == entry.module.partition(".")[0]
            if own or not entry.extras:
                raise
            return _needs_extra(name, entry.extras[0], e)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            with INTERRUPTS.installed(), warnings.catch_warnings():
                warnings.showwarning = _show_warning
                return super().invoke(ctx)
        except UsageError as e:
            raise click.UsageError(str(e)) from None
        except ElmoError as e:
            raise click.ClickException(str(e)) from None
        except KeyboardInterrupt as e:
            click.echo(str(e) or "interrupted; nothing was written", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except BrokenPipeError:  # `elmo embed in.txt - | head -c 4`: the reader left
            _silence_stdout()
            ctx.exit(EXIT_BROKEN_PIPE)
        except Exception as e:
            if os.environ.get("ELMO_DEBUG", "") not in ("", "0"):
                raise
            click.echo(
                f"internal error: {type(e).__name__}: {first_line(e)} "
                "(set ELMO_DEBUG=1 for the traceback)",
                err=True,
            )
            ctx.exit(EXIT_INTERNAL)


def _silence_stdout() -> None:
    """Point fd 1 at /dev/null so that the interpreter's final flush of a closed pipe is quiet
    (the recipe of Python's documentation, signal module, "Note on SIGPIPE")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no real fd behind stdout (a test runner's capture)
        pass


@click.group("elmo", cls=ElmoGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="elmo")
def main() -> None:
    """ELMo contextual word vectors from an exported ONNX model (NumPy + onnxruntime)."""


def _register() -> None:
    from .cache import cache_command
    from .embed import embed
    from .info import info

    main.add_command(cache_command)
    main.add_command(embed)
    main.add_command(info)


_register()

if __name__ == "__main__":
    main()
