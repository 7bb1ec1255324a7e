"""The export side's `elmo` commands: `convert`, `train`, `export`.

The runtime's ``elmo`` group finds them through the ``elmo_edge.commands`` entry-point group
(pyproject.toml) and imports this module only when one is used. It imports no torch and no
torch room at module level (an import-graph test holds it): `elmo convert` of bilm-tf weights
needs only ``pip install 'elmo-edge[convert]'`` (h5py on top of the runtime); each command
imports the rooms it runs when it runs, and a missing extra is one line naming it.
"""

from __future__ import annotations

import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource
from elmo_runtime.compat.sources import SourceError, extract, locate
from elmo_runtime.errors import EXPORT_HINT, ElmoError, missing_extra
from elmo_runtime.files import check_output
from elmo_runtime.format.contract import PARITY_ATOL
from elmo_runtime.loading.model_file import HDF5_MAGIC, sniff

from .presets import preset_names, resolve_options
from .train.config import OPTIMIZERS, TrainConfig

OWN_PACKAGES = ("elmo_runtime", "elmo_export")


def is_zip(path: Path) -> bool:
    """A ZIP file (an NLPL or SeqVec download), by content."""
    return path.is_file() and zipfile.is_zipfile(path)


@contextmanager
def needs(command: str, extra: str) -> Iterator[None]:
    """An import inside this block that fails: `elmo COMMAND needs the EXTRA extra` (one line).

    A module of elmo-edge itself that fails to import is a bug, not a missing extra: re-raised.
    """
    try:
        yield
    except ImportError as e:
        if (e.name or "").partition(".")[0] in OWN_PACKAGES:
            raise
        raise missing_extra(command, extra, e) from None


@click.command("convert")
@click.argument("options_json", metavar="OPTIONS_JSON|MODEL_DIR|MODEL.zip", type=click.Path())
@click.argument("weights_hdf5", required=False, type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Where to write the ONNX model [default: WEIGHTS_HDF5 (or MODEL_DIR) with "
                   "the suffix .onnx].")
@click.option("--from", "source_format", default="auto", show_default=True,
              type=click.Choice(["auto", "bilm-tf", "elmoformanylangs"]),
              help="Input format; auto: a directory is an ELMoForManyLangs model.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="ELMoForManyLangs: the model config, when the one config.json names is "
                   "not found.")
@click.option("--atol", default=PARITY_ATOL, show_default=True,
              help="Largest ONNX-vs-reference difference accepted by the parity check "
                   "(times the output's largest absolute value, at least 1).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
def convert_command(options_json: str, weights_hdf5: str | None, output: str | None,
                    source_format: str, config_file: str | None, atol: float,
                    overwrite: bool) -> None:
    """Convert ELMo weights to ONNX: bilm-tf / AllenNLP OPTIONS_JSON WEIGHTS_HDF5, a model
    folder or ZIP as published (NLPL, SeqVec, bilm-tf), or an ELMoForManyLangs (HIT-SCIR,
    44 languages) MODEL_DIR.

    bilm-tf weights need no PyTorch; an ELMoForManyLangs directory's state
    dicts are read with torch.load(weights_only=True). The graph is checked
    against a float64 NumPy forward of the ELMo spec on random sentences of
    several batch sizes and lengths; a model that does not match is not
    written. Weights without cell projections (dim == projection_dim, no
    W_P_0) are converted too.
    """
    path = Path(options_json)
    published = path.is_dir() and not (path / "config.json").is_file() or is_zip(path)
    if source_format != "elmoformanylangs" and published:
        if weights_hdf5 is not None:
            raise ElmoError(f"{path}: a folder or ZIP holds its weights; unexpected argument "
                            f"{weights_hdf5!r} (elmo convert MODEL_DIR|MODEL.zip -o M.onnx)")
        return _convert_published(path, output, atol, overwrite)
    if source_format == "elmoformanylangs" or (source_format == "auto"
                                               and Path(options_json).is_dir()):
        output = output or _default_output(options_json)
        check_output(output, [options_json, *([weights_hdf5] if weights_hdf5 else [])],
                     overwrite)
        return _convert_efml(options_json, weights_hdf5, output, config_file, atol)
    if config_file is not None:
        raise ElmoError("--config is for ELMoForManyLangs model directories")
    if weights_hdf5 is None:
        raise ElmoError("missing WEIGHTS_HDF5: elmo convert OPTIONS_JSON WEIGHTS_HDF5 -o M.onnx "
                        "(or an ELMoForManyLangs model: elmo convert MODEL_DIR -o M.onnx)")
    if sniff(options_json) == HDF5_MAGIC:
        raise ElmoError(f"{options_json}: is an HDF5 file, not an options.json — arguments "
                        "swapped? elmo convert OPTIONS_JSON WEIGHTS_HDF5 -o M.onnx")
    output = output or _default_output(weights_hdf5)
    check_output(output, [options_json, weights_hdf5], overwrite)
    with needs("convert", "convert"):
        import h5py  # noqa: F401  (read_weights needs it; say so before any work)

        from .graph.convert import convert_bilm_tf, written_line

    click.echo(f"converting {weights_hdf5} ({options_json}) …", err=True)
    report = convert_bilm_tf(options_json, weights_hdf5, output, atol=atol)
    click.echo(written_line(output, report, atol), err=True)


def _convert_published(path: Path, output: str | None, atol: float, overwrite: bool) -> None:
    """`elmo convert` of a model as published: a bilm-tf / NLPL / SeqVec folder or ZIP
    (:mod:`elmo_runtime.compat.sources`; a ZIP's members are checked, then copied into a
    temporary folder and removed after)."""
    try:
        source = locate(path)
    except SourceError as e:
        reason = str(e).removeprefix(f"{path}: ")
        kind = "ZIP" if is_zip(path) else "folder"
        raise ElmoError(
            f"{path}: neither an ELMoForManyLangs model (no config.json) nor an ELMo {kind} "
            f"with options.json and model.hdf5, one *weights*.hdf5 or one *.hdf5 ({reason}); "
            "name them: elmo convert OPTIONS_JSON WEIGHTS_HDF5 -o M.onnx") from None
    output = output or _default_output(str(path))
    check_output(output, [path, *source.files], overwrite)
    with needs("convert", "convert"):
        import h5py  # noqa: F401  (read_weights needs it; say so before any work)

        from .graph.convert import convert_bilm_tf, written_line

    click.echo(f"converting {source.describe()} …", err=True)
    with tempfile.TemporaryDirectory(prefix="elmo-convert-") as tmp:
        options, weights = extract(source, Path(tmp))
        report = convert_bilm_tf(options, weights, output, atol=atol)
    click.echo(written_line(output, report, atol), err=True)


def _default_output(source: str) -> str:
    """``-o`` when it is not given: the source with the suffix .onnx (said on stderr)."""
    output = str(Path(source).with_suffix(".onnx"))
    click.echo(f"no -o given: writing {output}", err=True)
    return output


def _convert_efml(model_dir: str, extra: str | None, output: str, config: str | None,
                  atol: float) -> None:
    """The `elmo convert MODEL_DIR` path (messages on stderr)."""
    if extra is not None:
        raise ElmoError(f"an ELMoForManyLangs model is one directory; unexpected argument "
                        f"{extra!r} (elmo convert MODEL_DIR -o M.onnx)")
    try:
        import torch  # noqa: F401  (their state dicts are torch.save files)
    except ImportError:
        raise ElmoError("reading an ELMoForManyLangs model needs PyTorch (torch.load with "
                        f"weights_only=True): {EXPORT_HINT}") from None
    from .efml.convert import convert_efml
    from .graph.convert import written_line

    click.echo(f"converting ELMoForManyLangs model {model_dir} …", err=True)
    report = convert_efml(model_dir, output, config, atol=atol)
    click.echo(written_line(output, report, atol), err=True)


# ---------------------------------------------------------------------- train, export

EXIT_INTERRUPTED = 130
# Settings a resumed run takes from its checkpoint unless given on the command line.
FROM_CHECKPOINT = ("batch_size", "unroll", "optimizer", "lr", "seed", "dropout", "clip_norm",
                   "n_samples", "eval_file", "eval_every", "checkpoint_every", "log_every",
                   "tokenize")


def _given(ctx: click.Context, name: str) -> bool:
    return ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)


def _resume_settings(ctx: click.Context, params: dict[str, Any]) -> dict[str, Any]:
    """On --resume, settings not given on the command line come from the checkpoint."""
    from .train.checkpoint import CHECKPOINT_NAME, load_checkpoint

    ckpt = load_checkpoint(Path(params["output_dir"]) / CHECKPOINT_NAME)
    saved = ckpt["config"]
    for name in FROM_CHECKPOINT:
        if not _given(ctx, name):
            params[name] = saved[name]
    if not (_given(ctx, "steps") or _given(ctx, "epochs")):
        params["steps"], params["epochs"] = saved["steps"], saved["epochs"]
    if not _given(ctx, "options_value"):
        params["options"] = ckpt["options"]
    return params


@click.command("train")
@click.argument("corpus", nargs=-1, required=True)
@click.option("--output-dir", "-o", required=True, metavar="DIR",
              help="Checkpoint, metrics.jsonl, vocab.txt and options.json go here.")
@click.option("--options", "options_value", default="small", show_default=True,
              metavar="PRESET|JSON",
              help=f"A preset ({', '.join(preset_names())}) or an options JSON file.")
@click.option("--vocab", "vocab_file", metavar="FILE",
              help="A bilm-tf vocabulary (<S>, </S>, <UNK>, then one token a line) "
              "[default: built from the corpus].")
@click.option("--vocab-size", type=click.IntRange(min=4),
              help="Keep this many of the corpus's most frequent tokens (specials included).")
@click.option("--steps", type=click.IntRange(min=1), help="Training steps [default: 1 epoch].")
@click.option("--epochs", type=click.FloatRange(min=0, min_open=True),
              help="Passes over the corpus (instead of --steps).")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1),
              help="Streams (rows) per process.")
@click.option("--unroll", default=20, show_default=True, type=click.IntRange(min=1),
              help="Steps of truncated backpropagation through time.")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="adam", show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True),
              help="Learning rate [default: 1e-3 for adam, 0.2 for adagrad].")
@click.option("--seed", default=0, show_default=True)
@click.option("--dropout", default=0.1, show_default=True,
              type=click.FloatRange(0, 1, max_open=True))
@click.option("--clip-norm", default=10.0, show_default=True, type=click.FloatRange(min=0),
              help="Clip the global gradient norm to this; 0 turns clipping off.")
@click.option("--samples", "n_samples", default=8192, show_default=True,
              type=click.IntRange(min=1), help="Sampled-softmax negatives (full softmax when "
              "the vocabulary is not larger).")
@click.option("--eval-file", metavar="FILE", help="Held-out sentences for perplexity.")
@click.option("--eval-every", default=500, show_default=True, type=click.IntRange(min=1))
@click.option("--checkpoint-every", default=500, show_default=True, type=click.IntRange(min=1))
@click.option("--log-every", default=10, show_default=True, type=click.IntRange(min=1),
              help="Steps between metrics.jsonl records.")
@click.option("--tokenize", is_flag=True, help="Tokenize raw text (default: split on spaces).")
@click.option("--threads", type=click.IntRange(min=1),
              help="Torch threads per process [default: torch's]; 1 is often fastest on a "
              "busy machine (the recurrent loop is many small operations).")
@click.option("--resume", is_flag=True, help="Continue the checkpoint in the output directory.")
@click.option("--init-from", metavar="CHECKPOINT",
              help="Start from this checkpoint's weights (its options and vocabulary) with a "
              "new optimizer and data order: fine-tune a biLM on CORPUS.")
@click.option("--overwrite", is_flag=True,
              help="A new run may replace options.json, vocab.txt and metrics.jsonl already in "
              "the output directory (never a checkpoint, nor an input).")
@click.option("--quiet", "-q", is_flag=True, help="No progress line.")
@click.pass_context
def train_command(ctx: click.Context, corpus: tuple[str, ...], quiet: bool,
                  options_value: str, **params: Any) -> None:
    """Train a biLM on CORPUS (text files, one sentence a line) with bilm-tf's objective.

    Ctrl-C stops after the current step and saves a checkpoint; --resume
    continues it exactly; --init-from fine-tunes a trained biLM on new text.
    A loss that blows up stops the run at that step without saving.
    For N data-parallel processes:

    \b
    torchrun --standalone --nproc-per-node N -m elmo_runtime train CORPUS... -o DIR
    """
    if params["vocab_file"] and params["vocab_size"]:
        raise click.UsageError("give --vocab or --vocab-size, not both")
    if params["steps"] and params["epochs"]:
        raise click.UsageError("give --steps or --epochs, not both")
    if params["init_from"] and (params["resume"] or params["vocab_file"]
                                or params["vocab_size"]):
        raise click.UsageError("--init-from takes the checkpoint's vocabulary and starts a new "
                               "run: give it without --resume, --vocab and --vocab-size")
    with needs("train", "export"):
        from .train.checkpoint import load_checkpoint
        from .train.loop import TrainingInterrupted, train
        from .train.processes import launched_rank

    if params["resume"]:
        params = _resume_settings(ctx, params)
    elif params["init_from"] and not _given(ctx, "options_value"):
        params["options"] = load_checkpoint(params["init_from"])["options"]
    if "options" not in params:
        params["options"] = resolve_options(options_value)
    config = TrainConfig(corpus=corpus, progress=not quiet, **params)
    main_process = launched_rank() == 0  # under torchrun, one closing message
    try:
        train(config)
    except TrainingInterrupted as e:
        if main_process:
            click.echo(str(e), err=True)
        ctx.exit(EXIT_INTERRUPTED)
    if main_process:
        click.echo(f"done; checkpoint and metrics in {config.output_dir}", err=True)


@click.command("export")
@click.argument("checkpoint")
@click.option("-o", "--output", required=True, metavar="PATH",
              help="The .onnx file, or the directory for --format hdf5.")
@click.option("--format", "fmt", type=click.Choice(["onnx", "hdf5"]), default="onnx",
              show_default=True, help="onnx: elmo-edge model; hdf5: ELMo options.json + "
              "weights.hdf5 (AllenNLP, bilm-tf).")
@click.option("--atol", type=float, help="Largest ONNX-vs-PyTorch difference accepted.")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing output file (--format hdf5: the files in the directory).")
def export_command(checkpoint: str, output: str, fmt: str, atol: float | None,
                   overwrite: bool) -> None:
    """Export a training CHECKPOINT (file or output directory) for inference."""
    with needs("export", "export"):
        from .train.checkpoint import export_checkpoint

    diff = export_checkpoint(checkpoint, output, fmt, atol, overwrite)
    note = f"; max |ONNX − PyTorch| = {diff:.2g}" if diff is not None else ""
    click.echo(f"wrote {output}{note}", err=True)

