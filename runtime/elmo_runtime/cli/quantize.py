"""`elmo quantize`: a thin wrapper over :func:`elmo_runtime.quantize.quantize_model`."""

from __future__ import annotations

from pathlib import Path

import click

from ..files import format_mib
from ..quantize import BATCH_TOLERANCE, DEFAULT_BLOCK_SIZE, MODES, THRESHOLDS, QuantizeReport


def format_report(report: QuantizeReport) -> str:
    """Sizes before/after and the per-layer cosine table, as `elmo quantize` prints them."""
    lines = [
        f"{report.mode}: {report.source} ({format_mib(report.size_before)}) → {report.output} "
        f"({format_mib(report.size_after)}, {100 * report.ratio:.1f}% of the source)"
    ]
    check = report.check
    if check is None:
        lines.append("check: skipped (--no-check); the error of this model is not measured")
        return "\n".join(lines)
    lines.append(
        f"cosine to the float32 source, per token ({check.tokens} tokens in "
        f"{check.sentences} sentences, {check.provider}):"
    )
    lines.append(f"  {'layer':>5}  {'mean':>8}  {'min':>8}")
    lines.extend(f"  {c.layer:>5}  {c.mean:8.5f}  {c.min:8.5f}" for c in check.layers)
    if check.batch_max_abs_diff is not None:
        limit = (f"≤ {check.batch_tolerance:g} required" if check.batch_tolerance is not None
                 else "reported only")
        if check.batch_tolerance is None:  # fp16: float16 rounding, not held to a tolerance
            state = "within float16 rounding"
        else:
            state = "independent" if check.batch_independent else "DEPENDENT"
        lines.append(
            f"batch independence: each sentence alone vs in its batch, max |diff| "
            f"{check.batch_max_abs_diff:.3g} ({limit}) — {state}"
        )
    verdict = "passed" if check.passed else "FAILED (written because of --force)"
    lines.append(f"threshold: mean ≥ {check.threshold} on every layer — {verdict}")
    return "\n".join(lines)


_HELP = f"""Write an int8, fp16 or int4 variant of the float32 elmo-edge MODEL.

The result is compared with MODEL on sentences: mean and minimum cosine
similarity of every token's vector, per layer, and each sentence embedded
alone vs inside its batch. Below a mean of
{", ".join(f"{mode} {value}" for mode, value in THRESHOLDS.items())} on any
layer, or when alone and batched differ by more than
{", ".join(f"{m} {t:g}" for m, t in BATCH_TOLERANCE.items() if t is not None)},
nothing is written, unless --force.
"""


@click.command("quantize", help=_HELP)
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Where to write the quantized model.")
@click.option("--mode", type=click.Choice(MODES), default="int8", show_default=True,
              help="int8: exact int8, scales per token (CPU); fp16: float16 (GPU); "
              "int4: 4-bit weights.")
@click.option("--per-channel/--per-tensor", default=None,
              help="int8: one weight scale per output channel (the default) or one per tensor.")
@click.option("--block-size", type=int, default=None,
              help=f"int4: weights per scale, a power of two ≥ 16 [default: {DEFAULT_BLOCK_SIZE}].")
@click.option("--check", "check_file", type=click.Path(dir_okay=False), default=None,
              metavar="FILE",
              help="Sentences (one a line, tokens split on whitespace) to compare the quantized "
              "model with the source on [default: a built-in sample of 30].")
@click.option("--no-check", is_flag=True, help="Skip the comparison with the source.")
@click.option("--force", is_flag=True,
              help="Write the model even when it fails the check (with a warning).")
@click.option("--overwrite", is_flag=True, help="Replace an existing OUTPUT file.")
def quantize_command(
    model: str,
    output: str,
    mode: str,
    per_channel: bool | None,
    block_size: int | None,
    check_file: str | None,
    no_check: bool,
    force: bool,
    overwrite: bool,
) -> None:
    from ..loading.model_file import locate
    from ..quantize import load_sentences, quantize_model
    from ..quantize.model_io import check_destination

    # a bundled name ("default") or a path; a directory, bilm-tf weights/options: one line
    file = locate(model)
    if check_file is not None and no_check:
        raise click.UsageError("--check FILE and --no-check exclude each other")
    sentences = load_sentences(check_file) if check_file is not None else None
    check_destination(file.path, Path(output), overwrite)  # before a word is printed
    click.echo(f"quantizing {file.path} ({mode}) …", err=True)
    report = quantize_model(
        file,
        output,
        mode=mode,
        per_channel=per_channel,
        block_size=block_size,
        check=not no_check,
        sentences=sentences,
        force=force,
        overwrite=overwrite,
    )
    click.echo(format_report(report))
