"""`elmo embed`: a thin command over an embed job (:mod:`..output.job`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..batching import DEFAULT_BATCH_SIZE
from ..corpus import MAX_TOKENS
from ..fasta import INPUT_FORMATS
from ..output.job import REDUCTIONS, EmbedJob, JobResult, count_lines, run_job
from ..output.shards import DEFAULT_SHARD_SIZE
from ..output.values import DTYPES
from ..output.writers import FORMATS
from .options import embedder_options, mix_asked, pop_settings
from .params import Finite
from .progress import LOG_INTERVAL, line_progress


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


@click.command()
# Both optional for click, checked below: with nargs=-1 first, click fills OUTPUT before
# INPUT, so its own message for `elmo embed in.txt` would blame INPUT.
@click.argument("inputs", metavar="INPUT...", nargs=-1, required=False)
@click.argument("output", metavar="OUTPUT", required=False)
@embedder_options
@click.option("--tokenize", is_flag=True,
              help="INPUT is raw text: split it with elmo_runtime.tokenize (the tokenizer the "
              "bundled model was trained with) instead of on whitespace.")
@click.option("--input-format", type=click.Choice(INPUT_FORMATS),
              help="What INPUT holds: text (one sentence a line) or fasta (protein records, "
              "one residue per token, keyed by id; the layers summed per residue as SeqVec "
              "users do) [default: fasta when the file's first non-blank line starts with "
              "'>', else text; stdin is text unless given].")
@click.option("--reduce", type=click.Choice(REDUCTIONS),
              help="FASTA: one vector per protein, the mean over its residues.")
@click.option("--max-sentence-tokens", type=click.IntRange(min=1), default=MAX_TOKENS,
              show_default=True, metavar="N",
              help="The most tokens (FASTA: residues) a line or record may have; memory grows "
              "with it (original ELMo size: ~0.5 MB a token, see README).")
@click.option("--batch-size", default=DEFAULT_BATCH_SIZE, show_default=True,
              type=click.IntRange(min=1), help="Sentences per forward pass.")
@click.option("--format", "fmt", type=click.Choice(FORMATS),
              help="Output format [default: by OUTPUT's extension: .hdf5/.h5, .npz, .parquet/.pq; "
              "npz for OUTPUT -; Parquet with --engine ray]. Any other extension, or one of "
              "another format, is refused.")
@click.option("--dtype", type=click.Choice(DTYPES), default="float32", show_default=True,
              help="Stored float type; float16 halves the size.")
@click.option("--stateful", is_flag=True,
              help="Carry LSTM states across batches by row (bilm-tf style).")
@click.option("--errors", type=click.Choice(["strict", "replace"]), default="strict",
              show_default=True, help="What to do with invalid UTF-8 (replace: U+FFFD).")
@click.option("--shard-size", type=click.IntRange(min=1), metavar="N",
              help=f"Write OUTPUT as a resumable directory of N-line shards [default: "
              f"{DEFAULT_SHARD_SIZE:,} when OUTPUT is a directory or ends with /].")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing OUTPUT file, or the earlier run in an OUTPUT directory "
              "instead of resuming or refusing it. Without it nothing is replaced.")
@click.option("--quiet", "-q", is_flag=True,
              help="No progress (the bar on a terminal; elsewhere, one line every "
              f"{LOG_INTERVAL:.0f} s with lines done, rate and ETA).")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local",
              show_default=True,
              help="local: this process; ray: Ray Data actors, Parquet output (elmo-edge[ray]).")
@click.option("--address", help="Ray cluster to join (e.g. auto) [default: start a local Ray].")
@click.option("--actors", type=click.IntRange(min=1),
              help="Ray actors, one onnxruntime session each [default: as many as the CPUs "
              "allow].")
@click.option("--gpus-per-actor", type=Finite(), default=0.0,
              help="GPUs of each Ray actor (a fraction shares a GPU) [default: 0].")
@click.option("--ray-temp-dir", metavar="DIR",
              help="Where a local Ray keeps its files and logs [default: a new temp dir, "
              "removed after].")
def embed(inputs: tuple[str, ...], output: str | None, fmt: str | None, batch_size: int,
          stateful: bool, max_sentence_tokens: int, ray_temp_dir: str | None, quiet: bool,
          **options: Any) -> None:
    """Embed INPUT (one whitespace-tokenized sentence a line, "-" = stdin) into OUTPUT
    ("-" = stdout, as npz).

    A protein FASTA INPUT (--input-format fasta, or found by its first '>'): one
    dataset per record named by its id, the sum of the layers per residue (n, 2P), or
    with --reduce mean one vector per protein.

    OUTPUT holds one array per line under keys "0", "1", … and
    "sentence_to_index" (AllenNLP's `elmo` layout: each stripped input line
    to its key; Parquet: one row per line); it appears only when every line
    is done. Lines end at \\n, \\r\\n or a lone \\r. An existing OUTPUT
    file is never replaced without --overwrite, and never when it is an
    input (the file on stdin included).

    A directory OUTPUT (existing, ending with /, or with --shard-size) gets
    shards and a manifest instead: run the same command again after an
    interruption and it resumes, redoing only shards that are missing or
    corrupt. With --engine ray, OUTPUT is a directory of Parquet files and
    several INPUTs may be given.
    """
    if output is None:
        raise click.UsageError("missing INPUT and OUTPUT: elmo embed INPUT OUTPUT")
    if not inputs:
        raise click.UsageError(f"missing OUTPUT (after INPUT {output}): elmo embed INPUT OUTPUT")
    mix_given = mix_asked(options)
    settings = pop_settings(options, stateful=stateful, batch_size=batch_size,
                            max_sentence_tokens=max_sentence_tokens)
    job = EmbedJob(inputs=inputs, output=output, embedder=settings, mix_given=mix_given,
                   format=fmt, ray_temp_dir=ray_temp_dir, **options)
    length = None
    if job.layout != "ray" and inputs[0] != "-" and not quiet:
        length = count_lines(inputs[0])  # None for a pipe: progress without a share or ETA
    try:
        with line_progress(length, quiet) as progress:
            result = run_job(job, progress)
    except KeyboardInterrupt:
        if job.layout == "shards" and Path(output).is_dir():
            raise KeyboardInterrupt(
                f"interrupted; the complete shards stay in {output}: run the same command "
                "again to resume"
            ) from None
        raise
    click.echo(summary(job, result), err=True)


def summary(job: EmbedJob, result: JobResult) -> str:
    """The one line `elmo embed` prints when it is done."""
    sentences = _count(result.lines, "record" if job.fasta else "sentence")
    if result.lines == 0 and not result.done_before:
        where = "stdin" if job.inputs == ("-",) else ", ".join(job.inputs)
        return f"nothing was embedded: {where} has no lines (wrote an empty {job.output})"
    if result.layout == "ray":
        done = "already complete:" if result.done_before else "wrote"
        return f"{done} {sentences} in {_count(result.files, 'Parquet file')} in {job.output}"
    if result.layout == "shards":
        done = f"{sentences} in {_count(result.files, 'shard')}"
        if result.done_before:
            return f"{job.output}: already complete ({done}, verified)"
        resumed = f" ({result.resumed} resumed)" if result.resumed else ""
        return f"wrote {done} to {job.output}{resumed}"
    return f"wrote {sentences} to {'stdout (npz)' if job.output == '-' else job.output}"
