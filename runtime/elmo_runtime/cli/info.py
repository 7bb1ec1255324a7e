"""`elmo info`: what a model is (the bundled default when no MODEL is given).

:func:`describe_model` gathers it (metadata, interface, contract table,
opset) as JSON-ready values; :func:`format_info` prints it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from typing import Any

import click

from ..files import format_mib
from ..format import contract
from ..loading.loaded import open_model
from ..loading.model_file import ModelFile, load_proto
from ..models import bundled_name, get

WIDTH = 100  # plain metadata values longer than this together go one a line
NOT_RECORDED = "× max(1, |reference output|) (the applied value was not recorded at export)"


def _value(v: Any) -> str:
    """One metadata value, readable: floats to 6 digits, dicts as k=v, lists of dicts by item."""
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, dict):
        return _kv(v)
    if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
        return "; ".join(_kv(x) for x in v)
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return str(v)


def _kv(d: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_value(v)}" for k, v in d.items()) or "-"


def _block(d: dict[str, Any]) -> list[str]:
    """A metadata dict as lines: its plain values on the first, each nested one on its own."""
    nested = {k: v for k, v in d.items() if isinstance(v, (dict, list))}
    plain = _kv({k: v for k, v in d.items() if k not in nested})
    if len(plain) > WIDTH:  # one value a line
        lines = [_kv({k: v}) for k, v in d.items() if k not in nested]
    else:
        lines = [] if plain == "-" and nested else [plain]
    for key, value in nested.items():
        if isinstance(value, dict) and any(isinstance(x, (dict, list)) for x in value.values()):
            lines += [f"{key}: {line}" for line in _block(value)]
        else:
            lines.append(f"{key}: {_value(value)}")
    return lines


def _shape(arg: dict[str, Any]) -> str:
    dims = ", ".join(str(d) for d in arg["shape"])
    note = " (optional, zeros by default)" if arg["optional"] else ""
    return f"{arg['name']} {arg['type']} [{dims}]{note}"


def format_parity(parity: dict[str, Any]) -> str:
    """The parity line: the difference measured and the tolerance it was actually held to.

    The exporter holds each output to ``atol`` times the largest absolute
    value of the reference output (at least 1), so a difference above
    ``atol`` alone can pass; the line prints the tolerance applied.
    """
    if not parity.get("checked"):
        return "not checked" + (f" ({_kv(parity)})" if len(parity) > 1 else "")
    diff, atol = parity.get("max_abs_diff"), parity.get("atol")
    where = f"against {parity['reference']}" if parity.get("reference") else "checked"
    shapes = f" on {len(parity['shapes'])} shapes" if parity.get("shapes") else ""
    if diff is None or atol is None:
        return f"{where}{shapes}: {_kv(parity)}"
    tolerance = parity.get("tolerance")
    if tolerance is None:  # a model exported before the applied value was recorded
        return (f"{where}{shapes}: passed at export with max |diff| {diff:.2e}; "
                f"tolerance atol {atol:.1e} {NOT_RECORDED}")
    else:
        held = f"tolerance applied {tolerance:.2e} (atol {atol:.1e} × {tolerance / atol:.3g})"
    return f"{where}{shapes}: max |diff| {diff:.2e}, {held}"


def _rows(name: str, lines: list[str]) -> list[tuple[str, str]]:
    return [(name if i == 0 else "", line) for i, line in enumerate(lines)]


def _family(d: dict[str, Any]) -> str:
    """Model family and vocabularies: bilm-tf bytes, or ELMoForManyLangs' learned ones."""
    vocab = d.get("vocabulary", {})
    if d.get("family") != "elmoformanylangs":
        return "bilm-tf (char ids: UTF-8 bytes)"
    words = f"{vocab['words']:,} words" if vocab.get("words") else "no word branch"
    return (f"ELMoForManyLangs (char ids: {vocab['chars']:,} code points learned; "
            f"{words})")


def format_info(d: dict[str, Any]) -> str:
    """The human-readable `elmo info` report."""
    lstm, cnn = d["options"]["lstm"], d["options"]["char_cnn"]
    filters = cnn["filters"]
    bundled = d.get("bundled")
    rows = [
        ("model", f"{d['path']} ({format_mib(d['file_size'])})"),
        *(
            [("bundled", f"{bundled['name']}: {bundled['description']}; license: "
                         f"{bundled['license']}; sha256 {bundled['sha256'][:16]}…")]
            if bundled else []
        ),
        (
            "format",
            f"{d['format']} v{d['format_version']}, ONNX opset {d['opset']}, IR {d['ir_version']}",
        ),
        ("producer", d["producer"]),
        ("family", _family(d)),
        *_rows("source", _block(d["source"])),
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
        *_rows("quantization", _block(d["quantization"])),
        ("parity", format_parity(d["parity"])),
    ]
    return "\n".join(f"{k:<13} {v}" for k, v in rows)


def _describe_args(args: list[Any], optional: bool = False) -> list[dict[str, Any]]:
    return [
        {"name": a.name, "type": a.type, "shape": list(a.shape), "optional": optional} for a in args
    ]


def _contract_order(name: str, names: tuple[str, ...]) -> int:
    return names.index(name) if name in names else len(names)


def _vocabulary_summary(info: contract.ModelInfo) -> dict[str, Any]:
    """The char-id scheme and vocabulary sizes (`elmo info`)."""
    vocab = info.vocabulary
    if vocab is None:
        return {"char_ids": info.char_scheme, "chars": "UTF-8 bytes", "words": 0}
    return {"char_ids": info.char_scheme, "chars": len(vocab.chars),
            "words": len(vocab.words) if vocab.words is not None else 0}


def describe_model(model: str | os.PathLike | ModelFile | None) -> dict[str, Any]:
    """Everything `elmo info` reports about a model (a path, a bundled name, a located
    :class:`ModelFile`; None: the default), as JSON-ready values.

    Opened without a prepared copy (no cache side effect). Raises what
    :func:`elmo_runtime.loading.loaded.open_model` raises.
    """
    loaded = open_model(model, "cpu", threads=1, prepare=False)
    session, info, path = loaded.session, loaded.info, loaded.path
    proto = load_proto(path, load_external_data=False)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    return {
        "path": str(path),
        "file_size": path.stat().st_size,
        "format": contract.FORMAT_NAME,
        "format_version": (contract.FORMAT_VERSION if info.vocabulary is None
                           else contract.CODEPOINT_FORMAT_VERSION),
        "producer": info.producer_version,
        "family": "bilm-tf" if info.vocabulary is None else "elmoformanylangs",
        "vocabulary": _vocabulary_summary(info),
        "source": info.source,
        "options": info.options.to_dict(),
        "n_parameters": info.options.n_parameters(),
        "opset": opset,
        "ir_version": proto.ir_version,
        "inputs": sorted(
            _describe_args(session.get_inputs())
            + _describe_args(session.get_overridable_initializers(), optional=True),
            key=lambda a: _contract_order(a["name"], contract.INPUTS),
        ),
        "outputs": _describe_args(session.get_outputs()),
        "contract": contract.tensor_table(),
        "quantization": info.quantization,
        "parity": info.parity,
    }


def describe(model: str | None) -> dict[str, Any]:
    """:func:`describe_model` of a path or bundled name, with its registry entry."""
    summary = describe_model(model)
    name = bundled_name(summary["path"])
    summary["bundled"] = asdict(get(name)) if name is not None else None
    return summary


@click.command()
@click.argument("model", required=False)
@click.option("--model", "-m", "model_option", metavar="NAME|PATH",
              help="The model, as in the other commands (the same as MODEL).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")
def info(model: str | None, model_option: str | None, as_json: bool) -> None:
    """Describe MODEL (a path or a bundled name; default: the bundled default model).

    Options, size, interface, quantization, and the parity measured at export
    with the tolerance actually applied.
    """
    if model is not None and model_option is not None:
        raise click.UsageError("give the model once: MODEL or --model, not both")
    summary = describe(model if model is not None else model_option)
    click.echo(json.dumps(summary, indent=2) if as_json else format_info(summary))
