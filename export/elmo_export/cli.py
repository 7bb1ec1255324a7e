"""Export-side commands, attached to the runtime's ``elmo`` group when torch is installed."""

from __future__ import annotations

from pathlib import Path

import click

from .onnx_export import DEFAULT_ATOL


@click.command("convert")
@click.argument("options_json", type=click.Path(dir_okay=False))
@click.argument("weights_hdf5", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Where to write the ONNX model.")
@click.option("--atol", default=DEFAULT_ATOL, show_default=True,
              help="Largest ONNX-vs-PyTorch difference accepted by the parity check.")
def convert_command(options_json: str, weights_hdf5: str, output: str, atol: float) -> None:
    """Convert published ELMo weights (bilm-tf / AllenNLP options.json + weights.hdf5) to ONNX.

    The graph is checked against the PyTorch model on random sentences of
    several batch sizes and lengths; a model that does not match is not written.
    """
    from .onnx_export import convert

    click.echo(f"converting {weights_hdf5} ({options_json}) …", err=True)
    report = convert(options_json, weights_hdf5, output, atol=atol)
    size = Path(output).stat().st_size / 2**20
    diff = f"{report.max_abs_diff:.2g}" if report else "not checked"
    click.echo(f"wrote {output} ({size:.1f} MiB); max |ONNX − PyTorch| = {diff}", err=True)


def register(group: click.Group) -> None:
    """Add the export-side commands to the ``elmo`` group."""
    group.add_command(convert_command)
    try:
        from .train_cli import register_train
    except ImportError:  # training commands not available in this build
        return
    register_train(group)
