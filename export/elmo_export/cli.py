"""`elmo convert`; the runtime's ``elmo`` group imports this module only when it is used.

Torch-free: converting published weights needs only ``pip install 'elmo-edge[convert]'``
(h5py on top of the runtime).
"""

from __future__ import annotations

from pathlib import Path

import click
from elmo_runtime.errors import CONVERT_HINT, ElmoError
from elmo_runtime.spec.contract import PARITY_ATOL


@click.command("convert")
@click.argument("options_json", type=click.Path(dir_okay=False))
@click.argument("weights_hdf5", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Where to write the ONNX model.")
@click.option("--atol", default=PARITY_ATOL, show_default=True,
              help="Largest ONNX-vs-reference difference accepted by the parity check "
                   "(times the output's largest absolute value, at least 1).")
def convert_command(options_json: str, weights_hdf5: str, output: str, atol: float) -> None:
    """Convert published ELMo weights (bilm-tf / AllenNLP options.json + weights.hdf5) to ONNX.

    Needs no PyTorch. The graph is checked against a float64 NumPy forward of
    the ELMo spec on random sentences of several batch sizes and lengths; a
    model that does not match is not written. Weights without cell projections
    (dim == projection_dim, no W_P_0) are converted too.
    """
    try:
        import h5py  # noqa: F401  (read_weights needs it; say so before any work)

        from .convert import convert
    except ImportError as e:
        raise ElmoError(
            f"`elmo convert` needs the convert extra ({e.name} is not installed): {CONVERT_HINT}"
        ) from None

    click.echo(f"converting {weights_hdf5} ({options_json}) …", err=True)
    report = convert(options_json, weights_hdf5, output, atol=atol)
    size = Path(output).stat().st_size / 2**20
    click.echo(f"wrote {output} ({size:.1f} MiB); max |ONNX − float64 reference| = "
               f"{report.max_abs_diff:.2g} (tolerance {atol:g} x max(1, |output|))", err=True)
