"""`elmo train` and `elmo export`: thin wrappers over train.train and export_checkpoint.

The runtime's `elmo` group loads these commands lazily (elmo_runtime.cli.LAZY_COMMANDS).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from .presets import preset_names
from .train_config import OPTIMIZERS, TrainConfig
from .train_processes import launched_rank

EXIT_INTERRUPTED = 130
# Settings a resumed run takes from its checkpoint unless given on the command line.
FROM_CHECKPOINT = ("batch_size", "unroll", "optimizer", "lr", "seed", "dropout", "clip_norm",
                   "n_samples", "eval_file", "eval_every", "checkpoint_every", "log_every",
                   "tokenize")


def _given(ctx: click.Context, name: str) -> bool:
    return ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)


def _resume_settings(ctx: click.Context, params: dict[str, Any]) -> dict[str, Any]:
    """On --resume, settings not given on the command line come from the checkpoint."""
    from .checkpoint import CHECKPOINT_NAME, load_checkpoint

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
    from .presets import resolve_options
    from .train import TrainingInterrupted, train

    if params["vocab_file"] and params["vocab_size"]:
        raise click.UsageError("give --vocab or --vocab-size, not both")
    if params["steps"] and params["epochs"]:
        raise click.UsageError("give --steps or --epochs, not both")
    if params["init_from"] and (params["resume"] or params["vocab_file"]
                                or params["vocab_size"]):
        raise click.UsageError("--init-from takes the checkpoint's vocabulary and starts a new "
                               "run: give it without --resume, --vocab and --vocab-size")
    if params["resume"]:
        params = _resume_settings(ctx, params)
    elif params["init_from"] and not _given(ctx, "options_value"):
        from .checkpoint import load_checkpoint

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
def export_command(checkpoint: str, output: str, fmt: str, atol: float | None) -> None:
    """Export a training CHECKPOINT (file or output directory) for inference."""
    from .checkpoint import export_checkpoint

    diff = export_checkpoint(checkpoint, output, fmt, atol)
    note = f"; max |ONNX − PyTorch| = {diff:.2g}" if diff is not None else ""
    click.echo(f"wrote {output}{note}", err=True)

