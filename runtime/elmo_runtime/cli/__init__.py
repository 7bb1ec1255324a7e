"""The `elmo` command: thin wrappers over the library.

Every :class:`ElmoError` becomes ``Error: <message>`` and exit status 1; an
interrupt (Ctrl-C or SIGTERM) exits with 130; anything unexpected prints one
line and exits with 2 (``ELMO_DEBUG=1`` shows the traceback). The export
commands (`elmo convert`, …) come from elmo_export when it is installed.
"""

from __future__ import annotations

import importlib
import itertools
import json
import os
import signal
import stat
import sys
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, BinaryIO

import click

from .. import __version__
from ..batching import DEFAULT_BATCH_SIZE
from ..corpus import read_sentences
from ..errors import ElmoError
from ..output.shards import DEFAULT_SHARD_SIZE
from ..output.writers import DTYPES, FORMATS
from ..session import PROVIDERS
from ..token_cache import DEFAULT_CACHE_MB

EXIT_INTERNAL = 2
EXIT_INTERRUPTED = 130
EXPORT_HINT = "pip install 'elmo-edge[export]'"


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
        signals = [signal.SIGTERM]
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # respect nohup & co.
            signals.append(signal.SIGINT)
        previous = {s: signal.signal(s, self) for s in signals}
        self._hook, sys.unraisablehook = sys.unraisablehook, self._unraisable
        try:
            yield
        finally:
            sys.unraisablehook = self._hook
            for s, handler in previous.items():
                signal.signal(s, handler)


INTERRUPTS = _Interrupts()


def _show_warning(message: Any, category: type, *args: Any, **kwargs: Any) -> None:
    click.echo(f"Warning: {message}", err=True)


# Commands defined elsewhere, imported only when used, so `elmo embed` starts
# without loading torch: name -> (module, attribute, needs the export extra).
LAZY_COMMANDS = {
    "convert": ("elmo_export.cli", "convert_command", True),
    "export": ("elmo_export.train_cli", "export_command", True),
    "quantize": ("elmo_runtime.cli.quantize", "quantize_command", False),
    "train": ("elmo_export.train_cli", "train_command", True),
}


def _needs_export(name: str, reason: str) -> click.Command:
    def callback(args: tuple[str, ...]) -> None:
        raise ElmoError(f"`elmo {name}` needs the export extra ({reason}): {EXPORT_HINT}")

    return click.Command(
        name,
        callback=callback,
        params=[click.Argument(["args"], nargs=-1, type=click.UNPROCESSED)],
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        help=f"(needs the export extra: {EXPORT_HINT})",
    )


class ElmoGroup(click.Group):
    """A click group that turns every failure into one line and an exit status."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is not None or name not in LAZY_COMMANDS:
            return command
        module, attr, export_side = LAZY_COMMANDS[name]
        try:
            return getattr(importlib.import_module(module), attr)
        except ImportError as e:
            if not export_side:
                raise
            return _needs_export(name, f"{e.name or 'a module'} is not installed")

    def invoke(self, ctx: click.Context) -> Any:
        try:
            with INTERRUPTS.installed(), warnings.catch_warnings():
                warnings.showwarning = _show_warning
                return super().invoke(ctx)
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
            first = (str(e).strip().splitlines() or [""])[0]
            click.echo(
                f"internal error: {type(e).__name__}: {first} (set ELMO_DEBUG=1 for the traceback)",
                err=True,
            )
            ctx.exit(EXIT_INTERNAL)


@click.group("elmo", cls=ElmoGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="elmo")
def main() -> None:
    """ELMo contextual word vectors from an exported ONNX model (NumPy + onnxruntime)."""


# ---------------------------------------------------------------------------- embed


def count_lines(path: str) -> int | None:
    """Number of lines of a regular file (None for pipes and the like)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        count, last = 0, b"\n"
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                count += block.count(b"\n")
                last = block[-1:]
    except OSError:
        return None
    return count + (last != b"\n")


@contextmanager
def open_input(name: str) -> Iterator[BinaryIO]:
    """The input as a binary stream; "-" is stdin."""
    if name == "-":
        yield sys.stdin.buffer
        return
    try:
        f = open(name, "rb")  # noqa: SIM115 (closed by the with below)
    except FileNotFoundError:
        raise ElmoError(f"{name}: no such input file") from None
    except OSError as e:
        raise ElmoError(f"{name}: cannot read the input ({e.strerror})") from None
    with f:
        yield f


def _progress(items: Iterable[Any], length: int | None) -> AbstractContextManager[Iterable[Any]]:
    """A progress bar on stderr when it is a terminal (never in logs)."""
    if not sys.stderr.isatty():
        return nullcontext(items)
    return click.progressbar(
        items, length=length, label="embedding", file=sys.stderr, update_min_steps=32
    )


@contextmanager
def _line_progress(length: int | None) -> Iterator[Callable[[int], None]]:
    """A callback counting lines done: a progress bar on a terminal; it raises on a signal."""
    if not sys.stderr.isatty() or length is None:
        yield lambda lines: INTERRUPTS.check()
        return
    with click.progressbar(
        length=length, label="embedding", file=sys.stderr, update_min_steps=32
    ) as bar:

        def update(lines: int) -> None:
            INTERRUPTS.check()
            bar.update(lines)

        yield update


RAY_ONLY = ("address", "actors", "gpus_per_actor", "ray_temp_dir")


@main.command()
@click.argument("inputs", metavar="INPUT...", nargs=-1, required=True)
@click.argument("output")
@click.option("--model", "-m", metavar="PATH", help="elmo-edge .onnx model [default: bundled].")
@click.option("--all", "mode", flag_value="all", default=True, help="All L+1 layers (default).")
@click.option("--top", "mode", flag_value="top", help="The top layer only.")
@click.option("--average", "mode", flag_value="average", help="The average of the layers.")
@click.option(
    "--mix",
    "mix_file",
    metavar="FILE",
    help='A scalar-mix JSON file: {"weights": [L+1 numbers], "gamma": 1.0, '
    '"do_layer_norm": false}.',
)
@click.option(
    "--batch-size",
    default=DEFAULT_BATCH_SIZE,
    show_default=True,
    type=click.IntRange(min=1),
    help="Sentences per forward pass.",
)
@click.option(
    "--provider",
    type=click.Choice(PROVIDERS),
    default="auto",
    show_default=True,
    help="onnxruntime execution provider.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    help="Intra-op threads [default: all; with --engine ray: the CPUs of each actor, 1].",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    help="Output format [default: npz for *.npz, parquet for *.parquet/*.pq and with "
    "--engine ray, else hdf5].",
)
@click.option(
    "--dtype",
    type=click.Choice(DTYPES),
    default="float32",
    show_default=True,
    help="Stored float type; float16 halves the size.",
)
@click.option(
    "--stateful", is_flag=True, help="Carry LSTM states across batches by row (bilm-tf style)."
)
@click.option(
    "--token-cache",
    "token_cache_mb",
    type=click.FloatRange(min=0),
    default=DEFAULT_CACHE_MB,
    show_default=True,
    metavar="MIB",
    help="Memory for the vectors of tokens seen before, so the char CNN runs once per "
    "distinct token; 0 turns it off. Results do not depend on it.",
)
@click.option(
    "--errors",
    type=click.Choice(["strict", "replace"]),
    default="strict",
    show_default=True,
    help="What to do with invalid UTF-8.",
)
@click.option(
    "--shard-size",
    type=click.IntRange(min=1),
    metavar="N",
    help=f"Write OUTPUT as a resumable directory of N-line shards [default: {DEFAULT_SHARD_SIZE:,} "
    "when OUTPUT is a directory or ends with /].",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace the earlier run in the OUTPUT directory instead of resuming or refusing it.",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="local: this process; ray: Ray Data actors, Parquet output (elmo-edge[ray]).",
)
@click.option("--address", help="Ray cluster to join (e.g. auto) [default: start a local Ray].")
@click.option(
    "--actors",
    type=click.IntRange(min=1),
    help="Ray actors, one onnxruntime session each [default: as many as the CPUs allow].",
)
@click.option(
    "--gpus-per-actor",
    type=click.FloatRange(min=0),
    default=0.0,
    help="GPUs of each Ray actor (a fraction shares a GPU) [default: 0].",
)
@click.option(
    "--ray-temp-dir",
    metavar="DIR",
    help="Where a local Ray keeps its files and logs [default: a new temp dir, removed after].",
)
@click.pass_context
def embed(
    ctx: click.Context,
    inputs: tuple[str, ...],
    output: str,
    model: str | None,
    mode: str,
    mix_file: str | None,
    batch_size: int,
    provider: str,
    threads: int | None,
    fmt: str | None,
    dtype: str,
    stateful: bool,
    token_cache_mb: float,
    errors: str,
    shard_size: int | None,
    overwrite: bool,
    engine: str,
    address: str | None,
    actors: int | None,
    gpus_per_actor: float,
    ray_temp_dir: str | None,
) -> None:
    """Embed INPUT (one whitespace-tokenized sentence a line, "-" = stdin) into OUTPUT.

    OUTPUT holds one array per line under keys "0", "1", … and
    "sentence_to_index" (AllenNLP's `elmo` layout; Parquet: one row per
    line); it appears only when every line is done.

    A directory OUTPUT (existing, ending with /, or with --shard-size) gets
    shards and a manifest instead: run the same command again after an
    interruption and it resumes, redoing only shards that are missing or
    corrupt. With --engine ray, OUTPUT is a directory of Parquet files and
    several INPUTs may be given.
    """
    mix = Path(mix_file) if mix_file else mode
    if mix_file and ctx.get_parameter_source("mode") is click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError("--mix cannot be combined with --all, --top or --average")
    if engine == "ray":
        _check_ray_options(inputs, fmt, stateful, shard_size)
        from ..output.ray_engine import embed_files

        run = embed_files(
            list(inputs),
            output,
            model,
            mix=mix,
            dtype=dtype,
            batch_size=batch_size,
            provider=provider,
            threads=threads or 1,
            errors=errors,
            overwrite=overwrite,
            address=address,
            actors=actors,
            gpus_per_actor=gpus_per_actor,
            temp_dir=ray_temp_dir,
        )
        done = "already complete:" if run.done_before else "wrote"
        files = _count(run.files, "Parquet file")
        click.echo(f"{done} {_count(run.lines, 'sentence')} in {files} in {output}", err=True)
        return
    given = [f"--{p.replace('_', '-')}" for p in RAY_ONLY if ctx.params[p] not in (None, 0.0)]
    if given:
        raise click.UsageError(f"{', '.join(given)} need --engine ray")
    if len(inputs) > 1:
        raise click.UsageError("several INPUTs need --engine ray (or concatenate them into -)")
    input_path = inputs[0]
    sharded = shard_size is not None or output.endswith(("/", os.sep)) or Path(output).is_dir()
    from ..embedder import Embedder
    from ..output.writers import open_writer

    length = count_lines(input_path) if input_path != "-" and sys.stderr.isatty() else None
    if sharded:
        with open_input(input_path) as stream:
            emb = Embedder(model, stateful=stateful, provider=provider, threads=threads, mix=mix,
                           token_cache_mb=token_cache_mb)
            _embed_sharded(
                emb,
                stream,
                input_path,
                output,
                length,
                mix=mix,
                fmt=fmt or "hdf5",
                dtype=dtype,
                shard_size=shard_size or DEFAULT_SHARD_SIZE,
                batch_size=batch_size,
                errors=errors,
                overwrite=overwrite,
            )
        return
    with open_input(input_path) as stream, open_writer(output, fmt, dtype) as writer:
        emb = Embedder(model, stateful=stateful, provider=provider, threads=threads, mix=mix,
                       token_cache_mb=token_cache_mb)
        sentences, to_embed = itertools.tee(read_sentences(stream, input_path, errors))
        pairs = zip(sentences, emb.embed_sentences(to_embed, batch_size), strict=True)
        with _progress(pairs, length) as bar:
            for tokens, vectors in bar:
                INTERRUPTS.check()
                writer.write(tokens, vectors)
    click.echo(f"wrote {writer.count} sentences to {output}", err=True)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _check_ray_options(
    inputs: tuple[str, ...], fmt: str | None, stateful: bool, shard_size: int | None
) -> None:
    if fmt not in (None, "parquet"):
        raise click.UsageError("--engine ray writes Parquet; drop --format or use --format parquet")
    if stateful:
        raise click.UsageError("--stateful needs the local engine (Ray batches are independent)")
    if shard_size is not None:
        raise click.UsageError("--shard-size is for the local engine (Ray sizes its own files)")
    if "-" in inputs:
        raise click.UsageError("--engine ray reads files, not stdin")


def _embed_sharded(
    emb: Any,
    stream: BinaryIO,
    input_path: str,
    output: str,
    length: int | None,
    mix: str | Path,
    **options: Any,
) -> None:
    """`elmo embed` into a directory of shards (:func:`.shards.embed_sharded`)."""
    from ..mix import load_mix
    from ..output.shards import embed_sharded

    if isinstance(mix, Path):
        mix = load_mix(mix, emb.info.options.n_output_layers)
    try:
        with _line_progress(length) as progress:
            run = embed_sharded(
                emb, stream, input_path, output, mix=mix, progress=progress, **options
            )
    except KeyboardInterrupt:
        raise KeyboardInterrupt(
            f"interrupted; the complete shards stay in {output}: run the same command "
            "again to resume"
        ) from None
    done = f"{_count(run.lines, 'sentence')} in {_count(run.shards, 'shard')}"
    if run.shards and run.resumed == run.shards:
        click.echo(f"{output}: already complete ({done}, verified)", err=True)
    else:
        resumed = f" ({run.resumed} resumed)" if run.resumed else ""
        click.echo(f"wrote {done} to {output}{resumed}", err=True)


# ---------------------------------------------------------------------------- info


def _kv(d: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items()) or "-"


def _shape(arg: dict[str, Any]) -> str:
    dims = ", ".join(str(d) for d in arg["shape"])
    note = " (optional, zeros by default)" if arg["optional"] else ""
    return f"{arg['name']} {arg['type']} [{dims}]{note}"


def format_info(d: dict[str, Any]) -> str:
    """The human-readable `elmo info` report."""
    lstm, cnn = d["options"]["lstm"], d["options"]["char_cnn"]
    filters = cnn["filters"]
    rows = [
        ("model", f"{d['path']} ({d['file_size'] / 1e6:.1f} MB)"),
        (
            "format",
            f"{d['format']} v{d['format_version']}, ONNX opset {d['opset']}, IR {d['ir_version']}",
        ),
        ("producer", d["producer"]),
        ("source", _kv(d["source"])),
        (
            "char CNN",
            f"{len(filters)} filters {filters} ({sum(n for _, n in filters)} outputs), "
            f"embedding {cnn['embedding']['dim']}, {cnn['n_highway']} highway, "
            f"{cnn['activation']}, {cnn['max_characters_per_token']} chars/token, "
            f"{cnn['n_characters']} characters",
        ),
        (
            "LSTM",
            f"{lstm['n_layers']} layers, dim {lstm['dim']}, projection "
            f"{lstm['projection_dim']}, cell clip {lstm.get('cell_clip', 'none')}, "
            f"proj clip {lstm.get('proj_clip', 'none')}, skip connections "
            f"{'yes' if lstm['use_skip_connections'] else 'no'}",
        ),
        ("parameters", f"{d['n_parameters']:,} ({d['n_parameters'] / 1e6:.1f}M)"),
        *(("inputs" if i == 0 else "", _shape(a)) for i, a in enumerate(d["inputs"])),
        *(("outputs" if i == 0 else "", _shape(a)) for i, a in enumerate(d["outputs"])),
        ("quantization", _kv(d["quantization"])),
        ("parity", _kv(d["parity"])),
    ]
    return "\n".join(f"{k:<13} {v}" for k, v in rows)


@main.command()
@click.argument("model")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")
def info(model: str, as_json: bool) -> None:
    """Describe an elmo-edge MODEL: options, size, interface, quantization, parity."""
    from ..session import describe_model

    summary = describe_model(model)
    click.echo(json.dumps(summary, indent=2) if as_json else format_info(summary))


if __name__ == "__main__":
    main()
