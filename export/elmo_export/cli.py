"""`elmo convert`; the runtime's ``elmo`` group imports this module only when it is used.

Torch-free: converting published weights needs only ``pip install 'elmo-edge[convert]'``
(h5py on top of the runtime).
"""

from __future__ import annotations

from pathlib import Path

import click
from elmo_runtime.errors import CONVERT_HINT, ElmoError
from elmo_runtime.files import check_not_an_input
from elmo_runtime.format.contract import PARITY_ATOL
from elmo_runtime.models import HDF5_MAGIC, sniff


@click.command("convert")
@click.argument("options_json", metavar="OPTIONS_JSON|MODEL_DIR", type=click.Path())
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
def convert_command(options_json: str, weights_hdf5: str | None, output: str | None,
                    source_format: str, config_file: str | None, atol: float) -> None:
    """Convert ELMo weights to ONNX: bilm-tf / AllenNLP OPTIONS_JSON WEIGHTS_HDF5, or an
    ELMoForManyLangs (HIT-SCIR, 44 languages) MODEL_DIR.

    bilm-tf weights need no PyTorch; an ELMoForManyLangs directory's state
    dicts are read with torch.load(weights_only=True). The graph is checked
    against a float64 NumPy forward of the ELMo spec on random sentences of
    several batch sizes and lengths; a model that does not match is not
    written. Weights without cell projections (dim == projection_dim, no
    W_P_0) are converted too.
    """
    if source_format != "elmoformanylangs" and Path(options_json).is_dir() and not (
            Path(options_json) / "config.json").is_file():
        options_json, weights_hdf5 = _bilm_tf_files(Path(options_json), weights_hdf5)
    if source_format == "elmoformanylangs" or (source_format == "auto"
                                               and Path(options_json).is_dir()):
        from .efml_convert import convert_command_efml

        output = output or _default_output(options_json)
        check_not_an_input(output, [options_json, *([weights_hdf5] if weights_hdf5 else [])])

        return convert_command_efml(options_json, weights_hdf5, output, config_file, atol)
    if config_file is not None:
        raise ElmoError("--config is for ELMoForManyLangs model directories")
    if weights_hdf5 is None:
        raise ElmoError("missing WEIGHTS_HDF5: elmo convert OPTIONS_JSON WEIGHTS_HDF5 -o M.onnx "
                        "(or an ELMoForManyLangs model: elmo convert MODEL_DIR -o M.onnx)")
    if sniff(options_json) == HDF5_MAGIC:
        raise ElmoError(f"{options_json}: is an HDF5 file, not an options.json — arguments "
                        "swapped? elmo convert OPTIONS_JSON WEIGHTS_HDF5 -o M.onnx")
    output = output or _default_output(weights_hdf5)
    check_not_an_input(output, [options_json, weights_hdf5])
    try:
        import h5py  # noqa: F401  (read_weights needs it; say so before any work)

        from .convert import convert, written_line
    except ImportError as e:
        raise ElmoError(
            f"`elmo convert` needs the convert extra ({e.name} is not installed): {CONVERT_HINT}"
        ) from None

    click.echo(f"converting {weights_hdf5} ({options_json}) …", err=True)
    report = convert(options_json, weights_hdf5, output, atol=atol)
    click.echo(written_line(output, report, atol), err=True)


def _bilm_tf_files(directory: Path, weights_hdf5: str | None) -> tuple[str, str]:
    """A bilm-tf / AllenNLP folder: its one ``*options*.json`` and one ``*weights*.hdf5``.

    Raises ElmoError naming what the folder lacks (an ELMoForManyLangs model has a
    config.json and is not read here).
    """
    options = sorted(directory.glob("*options*.json"))
    weights = [Path(weights_hdf5)] if weights_hdf5 else sorted(directory.glob("*weights*.hdf5"))
    if len(options) != 1 or len(weights) != 1:
        raise ElmoError(
            f"{directory}: neither an ELMoForManyLangs model (no config.json) nor a bilm-tf folder "
            f"with one *options*.json and one *weights*.hdf5 (found {len(options)} and "
            f"{len(weights)}); name them: elmo convert OPTIONS_JSON WEIGHTS_HDF5 -o M.onnx")
    return str(options[0]), str(weights[0])


def _default_output(source: str) -> str:
    """``-o`` when it is not given: the source with the suffix .onnx (said on stderr)."""
    output = str(Path(source).with_suffix(".onnx"))
    click.echo(f"no -o given: writing {output}", err=True)
    return output
