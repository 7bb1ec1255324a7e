"""The `elmo` command: thin wrappers over the library.

Every :class:`ElmoError` becomes ``Error: <message>`` and exit status 1 (a
:class:`UsageError`, options that cannot go together, exit status 2); an
interrupt (Ctrl-C or SIGTERM) exits with 130; anything unexpected prints one
line and exits with 2 (``ELMO_DEBUG=1`` shows the traceback). The commands
live in their own modules: `embed` (cli/embed.py), `info` (cli/info.py),
`cache` (cli/cache.py),
`quantize` (cli/quantize.py); the export commands (`elmo convert`, …) come
from elmo_export when it is installed.
"""

from __future__ import annotations

import importlib
import os
import warnings
from typing import Any

import click

from .. import __version__
from ..corpus import read_sentences
from ..errors import ElmoError, UsageError, first_line, pip_hint
from ..output.job import count_lines
from .progress import INTERRUPTS

__all__ = ["INTERRUPTS", "ElmoGroup", "count_lines", "main", "read_sentences"]

EXIT_INTERNAL = 2
EXIT_INTERRUPTED = 130


def _show_warning(message: Any, category: type, *args: Any, **kwargs: Any) -> None:
    click.echo(f"Warning: {first_line(message) if isinstance(message, Exception) else message}",
               err=True)


# Commands defined elsewhere, imported only when used, so `elmo embed` starts
# without loading torch: name -> (module, attribute, the extra it needs, or None).
LAZY_COMMANDS = {
    "convert": ("elmo_export.cli", "convert_command", "convert"),
    "export": ("elmo_export.train_cli", "export_command", "export"),
    "quantize": ("elmo_runtime.cli.quantize", "quantize_command", None),
    "serve": ("elmo_runtime.serve.command", "serve_command", None),
    "train": ("elmo_export.train_cli", "train_command", "export"),
    "web": ("elmo_runtime.webserve", "web_command", None),
}


def _needs_extra(name: str, extra: str, reason: str) -> click.Command:
    hint = pip_hint(extra)

    def callback(args: tuple[str, ...]) -> None:
        raise ElmoError(f"`elmo {name}` needs the {extra} extra ({reason}): {hint}")

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
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is not None or name not in LAZY_COMMANDS:
            return command
        module, attr, extra = LAZY_COMMANDS[name]
        try:
            return getattr(importlib.import_module(module), attr)
        except ImportError as e:
            if extra is None:
                raise
            return _needs_extra(name, extra, f"{e.name or 'a module'} is not installed")

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
        except Exception as e:
            if os.environ.get("ELMO_DEBUG", "") not in ("", "0"):
                raise
            click.echo(
                f"internal error: {type(e).__name__}: {first_line(e)} "
                "(set ELMO_DEBUG=1 for the traceback)",
                err=True,
            )
            ctx.exit(EXIT_INTERNAL)


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
