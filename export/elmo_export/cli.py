"""`elmo convert`; the runtime's ``elmo`` group imports this module only when it is used."""

from __future__ import annotations

from pathlib import Path

import click
from elmo_runtime.errors import ElmoError
from elmo_runtime.spec.contract import PARITY_ATOL


@click.command("convert")
@click.argument("options_json", type=click.Path(dir_okay=False))
@click.argument("weights_hdf5", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Where to write the ONNX model.")
@click.option("--atol", default=PARITY_ATOL, show_default=True,
              help="Largest ONNX-vs-PyTorch difference accepted by the parity check.")
def convert_command(options_json: str, weights_hdf5: str, output: str, atol: float) -> None:
    """Convert published ELMo weights (bilm-tf / AllenNLP options.json + weights.hdf5) to ONNX.

    The graph is checked against the PyTorch model on random sentences of
    several batch sizes and lengths; a model that does not match is not written.
    """
    try:
        from .onnx_export import convert
    except ImportError as e:
        raise ElmoError(
            f"`elmo convert` needs the export extra ({e.name} is not installed): "
            "pip install 'elmo-edge[export]'"
        ) from None

    click.echo(f"converting {weights_hdf5} ({options_json}) …", err=True)
    report = convert(options_json, weights_hdf5, output, atol=atol)
    size = Path(output).stat().st_size / 2**20
    diff = f"{report.max_abs_diff:.2g}" if report else "not checked"
    click.echo(f"wrote {output} ({size:.1f} MiB); max |ONNX − PyTorch| = {diff}", err=True)
