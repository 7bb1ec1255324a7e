"""`elmo info`: what a model is (the bundled default when no MODEL is given)."""

from __future__ import annotations

import json
from typing import Any

import click

from ..files import format_mib

NOT_RECORDED = "× max(1, |reference output|) (the applied value was not recorded at export)"


def _kv(d: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items()) or "-"


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
    if tolerance is None:
        held = f"tolerance atol {atol:.1e} {NOT_RECORDED}"
    else:
        held = f"tolerance applied {tolerance:.2e} (atol {atol:.1e} × {tolerance / atol:.3g})"
    return f"{where}{shapes}: max |diff| {diff:.2e}, {held}"


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
        ("parity", format_parity(d["parity"])),
    ]
    return "\n".join(f"{k:<13} {v}" for k, v in rows)


def describe(model: str | None) -> dict[str, Any]:
    """:func:`..session.describe_model` of a path or bundled name, with its registry entry."""
    from dataclasses import asdict

    from ..models import bundled_name, get, resolve_model
    from ..session import describe_model

    path = resolve_model(model)
    summary = describe_model(path)
    name = bundled_name(path)
    summary["bundled"] = asdict(get(name)) if name is not None else None
    return summary


@click.command()
@click.argument("model", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")
def info(model: str | None, as_json: bool) -> None:
    """Describe MODEL (a path or a bundled name; default: the bundled default model).

    Options, size, interface, quantization, and the parity measured at export
    with the tolerance actually applied.
    """
    summary = describe(model)
    click.echo(json.dumps(summary, indent=2) if as_json else format_info(summary))
