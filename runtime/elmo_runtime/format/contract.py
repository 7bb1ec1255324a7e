"""The ONNX contract between the exporter and the runtime, declared once.

:data:`TENSORS` is the one table of the graph's interface: each tensor's
name, dtype and dims, where a dim is a fixed int, the name of an
:class:`~elmo_runtime.format.options.ElmoOptions` field (fixed by the model's
options) or an :class:`Axis` (a named symbolic dimension). The graph builder
(``elmo_export.graph.builder``) declares its inputs and outputs from it, the
session (:mod:`elmo_runtime.loading.session`) validates a loaded graph against it
(names, dtypes, fixed dims, axis names), and ``elmo info`` and the export
parity check read it. Optional inputs have a default (zeros, with the
``default`` axis sizes) stored in the graph as an overridable initializer.

An elmo-edge model is self-describing: its ``metadata_props`` hold the
options, the char-id scheme (by name, :mod:`elmo_runtime.format.chars`), the
format version, how it was made and how it was quantized. The exporter writes
:func:`make_metadata`; the runtime reads :func:`parse_metadata` and refuses
files it does not understand.

The char CNN runs once per distinct token, not once per step: the runtime
deduplicates a batch's tokens (:func:`elmo_runtime.format.chars.pack`) and may
skip tokens it has cached (:mod:`elmo_runtime.token_cache`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ModelError
from . import chars, codepoints
from .names import (
    INPUT_CACHED_VECTORS,
    INPUT_STATE_C,
    INPUT_STATE_H,
    INPUT_TOKEN_CHARS,
    INPUT_TOKEN_INDEX,
    INPUT_WORD_IDS,
    OUTPUT_LAYERS,
    OUTPUT_MASK,
    OUTPUT_STATE_C,
    OUTPUT_STATE_H,
    OUTPUT_TOKEN_VECTORS,
)
from .options import ElmoOptions, parse_options

FORMAT_NAME = "elmo-edge-onnx"
FORMAT_VERSION = 2  # 1: char_ids [B, T, C] input, no token cache
# 3: version 2 + a learned code-point char vocabulary and an optional word_ids input
# (ELMoForManyLangs conversions); written only for such models, so that runtimes
# reading version 2 alone refuse them by version. This runtime reads both.
CODEPOINT_FORMAT_VERSION = 3
READABLE_VERSIONS = (FORMAT_VERSION, CODEPOINT_FORMAT_VERSION)
# Largest |ONNX - reference| an export accepts by default (checked before writing).
PARITY_ATOL = 1e-5


@dataclass(frozen=True)
class Axis:
    """A symbolic dimension: the graph declares it as ``dim_param`` ``name``."""

    name: str


BATCH = Axis("batch")  # sentences in the run
TOKENS = Axis("tokens")  # steps per sentence, <S> and </S> included
DISTINCT = Axis("distinct_tokens")  # token_chars rows encoded by this run
CACHED = Axis("cached_tokens")  # token vectors fed from a cache
STATE_BATCH = Axis("state_batch")  # rows of fed states: B, or 1 to broadcast

Dim = int | str | Axis  # fixed | ElmoOptions field or property | symbolic
DTYPES = {"int32": "tensor(int32)", "float32": "tensor(float)"}  # numpy name → ORT type


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: ``dims`` as ints, option field names or axes.

    ``default``: for optional inputs, the sizes of the axes of their default
    value (all zeros), e.g. ``{"state_batch": 1}``; None for a required input
    or an output. ``in_every_model``: False for a tensor only some models have
    (e.g. an input of one char-id scheme): a graph without it is valid, a
    graph with it is checked.
    """

    name: str
    dtype: str  # a key of DTYPES
    dims: tuple[Dim, ...]
    doc: str
    default: dict[str, int] | None = None
    in_every_model: bool = True
    # for a tensor not in every model: the ElmoOptions property saying which models have it
    when: str | None = None

    @property
    def optional(self) -> bool:
        return self.default is not None

    def present(self, options: ElmoOptions) -> bool:
        """Whether a model with ``options`` has this tensor."""
        return self.in_every_model or (self.when is not None and bool(getattr(options,
                                                                             self.when)))

    def resolve(self, options: ElmoOptions) -> list[int | str]:
        """Dims for ``options``: ints for fixed dims, axis names for symbolic ones."""
        out: list[int | str] = []
        for dim in self.dims:
            if isinstance(dim, Axis):
                out.append(dim.name)
            elif isinstance(dim, str):
                out.append(int(getattr(options, dim)))
            else:
                out.append(int(dim))
        return out

    def default_value(self, options: ElmoOptions) -> np.ndarray:
        """The zeros an optional input takes when not fed."""
        if self.default is None:
            raise ValueError(f"{self.name} is required, it has no default")
        sizes = self.default
        shape = [sizes[d] if isinstance(d, str) else d for d in self.resolve(options)]
        return np.zeros(shape, dtype=self.dtype)



# The graph's interface, in order. Inputs first (required before optional where
# the runtime feeds them), then outputs.
INPUT_SPECS: tuple[TensorSpec, ...] = (
    TensorSpec(INPUT_TOKEN_CHARS, "int32", (DISTINCT, "max_characters_per_token"),
               "shifted char ids of each distinct token to encode (N >= 1)"),
    TensorSpec(INPUT_CACHED_VECTORS, "float32", (CACHED, "projection_dim"),
               "token vectors computed earlier (a cache)", default={CACHED.name: 0}),
    TensorSpec(INPUT_TOKEN_INDEX, "int32", (BATCH, TOKENS),
               "row of concat(encoded, cached_vectors) at each step; -1 = padding"),
    TensorSpec(INPUT_STATE_C, "float32", (2, "n_layers", STATE_BATCH, "lstm_dim"),
               "initial cells [direction, layer, row or 1, D]", default={STATE_BATCH.name: 1}),
    TensorSpec(INPUT_STATE_H, "float32", (2, "n_layers", STATE_BATCH, "projection_dim"),
               "initial outputs [direction, layer, row or 1, P]", default={STATE_BATCH.name: 1}),
)
OUTPUT_SPECS: tuple[TensorSpec, ...] = (
    TensorSpec(OUTPUT_LAYERS, "float32", (BATCH, "n_output_layers", TOKENS, "output_dim"),
               "layer 0 = [x; x], layer l = [fwd_l; bwd_l]; zero at padded steps"),
    TensorSpec(OUTPUT_MASK, "int32", (BATCH, TOKENS), "1 where a token (or boundary) is"),
    TensorSpec(OUTPUT_STATE_C, "float32", (2, "n_layers", BATCH, "lstm_dim"),
               "cells after each row's last step"),
    TensorSpec(OUTPUT_STATE_H, "float32", (2, "n_layers", BATCH, "projection_dim"),
               "outputs after each row's last step"),
    TensorSpec(OUTPUT_TOKEN_VECTORS, "float32", (DISTINCT, "projection_dim"),
               "the encoded token_chars rows (char CNN, highway, projection)"),
)
# Inputs only some models have (``when``): required there, absent elsewhere.
BRANCH_SPECS: tuple[TensorSpec, ...] = (
    TensorSpec(INPUT_WORD_IDS, "int32", (DISTINCT,),
               "word id of each token_chars row (models with a word-embedding branch)",
               in_every_model=False, when="has_word_branch"),
)
TENSORS = {t.name: t for t in (*INPUT_SPECS, *BRANCH_SPECS, *OUTPUT_SPECS)}


def input_specs(options: ElmoOptions) -> tuple[TensorSpec, ...]:
    """The inputs of a model with ``options``, in graph order."""
    base = tuple(t for t in INPUT_SPECS if t.present(options))
    present = tuple(t for t in BRANCH_SPECS if t.present(options))
    return (*base[:1], *present, *base[1:])

INPUTS = tuple(t.name for t in INPUT_SPECS)
OUTPUTS = tuple(t.name for t in OUTPUT_SPECS)


def tensor_table() -> list[dict[str, Any]]:
    """The table as JSON-ready rows (``elmo info``, docs): dims as ints or names."""
    rows = []
    for kind, specs in (("input", INPUT_SPECS), ("output", OUTPUT_SPECS)):
        for t in specs:
            dims = [d.name if isinstance(d, Axis) else d for d in t.dims]
            rows.append({"name": t.name, "kind": kind, "dtype": t.dtype, "dims": dims,
                         "optional": t.optional, "doc": t.doc})
    return rows


def check_graph(
    inputs: dict[str, tuple[str, list[int | str | None]]],
    initializers: dict[str, tuple[str, list[int | str | None]]],
    outputs: dict[str, tuple[str, list[int | str | None]]],
    options: ElmoOptions,
) -> list[str]:
    """Every way a graph's interface differs from :data:`TENSORS`, as messages.

    Each argument maps a name to ``(ORT type string, dims)``, dims as ints,
    symbolic names or None: ``inputs`` the graph's required inputs,
    ``initializers`` its overridable initializers (optional inputs).
    """
    problems: list[str] = []
    for spec in INPUT_SPECS:
        if spec.name in inputs:
            have = inputs[spec.name]
        elif spec.name in initializers and spec.optional:
            have = initializers[spec.name]
        elif spec.name in initializers:
            problems.append(f"input {spec.name} is required but the graph gives it a default")
            continue
        else:
            if spec.in_every_model:
                problems.append(f"input {spec.name} is missing")
            continue
        problems += _check_tensor(spec, *have, options)
    for spec in BRANCH_SPECS:
        if spec.present(options) and spec.name in inputs:
            problems += _check_tensor(spec, *inputs[spec.name], options)
        elif spec.present(options):
            problems.append(f"input {spec.name} is missing (the options say {spec.when})")
        elif spec.name in inputs or spec.name in initializers:
            problems.append(f"input {spec.name} is not in the contract of a model without "
                            f"{spec.when} (nothing would feed it)")
    for name in inputs:
        if name not in TENSORS or name in OUTPUTS:
            problems.append(f"input {name} is not in the contract (nothing would feed it)")
    for spec in OUTPUT_SPECS:
        if spec.name not in outputs:
            if spec.in_every_model:
                problems.append(f"output {spec.name} is missing")
            continue
        problems += _check_tensor(spec, *outputs[spec.name], options)
    return problems


def _check_tensor(spec: TensorSpec, type_: str, dims: list[int | str | None],
                  options: ElmoOptions) -> list[str]:
    problems = []
    if type_ != DTYPES[spec.dtype]:
        problems.append(f"{spec.name} has type {type_}, expected {DTYPES[spec.dtype]}")
    want = spec.resolve(options)
    fixed = ["?" if isinstance(w, str) else w for w in want]
    if len(dims) != len(want) or any(
        isinstance(w, int) and h != w for h, w in zip(dims, want, strict=True)
    ):
        return [*problems, f"{spec.name} has shape {dims}, but the model's options imply {fixed}"]
    for axis, (have, expect) in enumerate(zip(dims, want, strict=True)):
        if isinstance(expect, int):
            continue
        if spec.default and isinstance(have, int) and have == spec.default.get(expect):
            continue  # an optional input's default value fixes its own axis
        if have != expect:
            problems.append(f"{spec.name} dim {axis} is {have!r}, expected axis {expect!r}")
    return problems


# metadata_props keys
KEY_FORMAT = "elmo_edge.format"
KEY_VERSION = "elmo_edge.format_version"
KEY_PRODUCER = "elmo_edge.producer_version"
KEY_OPTIONS = "elmo_edge.options"
KEY_CHARS = "elmo_edge.char_ids"
KEY_LAYOUT = "elmo_edge.layout"
KEY_SOURCE = "elmo_edge.source"
KEY_PARITY = "elmo_edge.parity"
KEY_QUANT = "elmo_edge.quantization"

LAYOUT = {
    "boundaries": "added by the runtime: token_index holds <S> tokens </S>, then -1",
    "tokens": "token_chars [distinct, max_chars] are encoded once each; token_index "
    "[batch, tokens] points into concat(encoded, cached_vectors)",
    "layers": "[batch, n_layers+1, tokens, 2*projection_dim]; layer 0 = [x; x], "
    "layer l = [forward_l; backward_l]; zeros at padded steps",
    "mask": "[batch, tokens] int32, 1 for real steps (boundaries included)",
    "state": "[direction (0 fwd, 1 bwd), layer, batch, dim]; zeros when not fed",
}


@dataclass(frozen=True)
class ModelInfo:
    """What the runtime knows about a model from its metadata."""

    options: ElmoOptions
    producer_version: str
    source: dict[str, Any] = field(default_factory=dict)
    parity: dict[str, Any] = field(default_factory=dict)
    quantization: dict[str, Any] = field(default_factory=lambda: {"mode": "none"})
    # the learned vocabularies of a code-point model (ELMoForManyLangs); None: bilm-tf bytes
    vocabulary: codepoints.CodepointScheme | None = None

    @property
    def max_chars(self) -> int:
        return self.options.max_characters_per_token

    @property
    def char_scheme(self) -> str:
        """The char-id scheme's name: ``bilm-tf-bytes`` or ``codepoint-vocab``."""
        return chars.SCHEME_NAME if self.vocabulary is None else codepoints.SCHEME_NAME


def make_metadata(
    options: ElmoOptions,
    source: dict[str, Any],
    parity: dict[str, Any] | None = None,
    quantization: dict[str, Any] | None = None,
    vocabulary: codepoints.CodepointScheme | None = None,
) -> dict[str, str]:
    """metadata_props for an exported model (all values are strings).

    ``vocabulary``: the vocabularies of a code-point model (required exactly
    when ``options.char_vocabulary`` is "codepoint"; written as version 3).
    """
    from ..version import __version__

    if (vocabulary is None) != (options.char_vocabulary == "bytes"):
        raise ValueError("a vocabulary goes with char_vocabulary 'codepoint', and only there")
    version = FORMAT_VERSION if vocabulary is None else CODEPOINT_FORMAT_VERSION
    char_ids = (json.dumps({**chars.scheme(), "max_chars": options.max_characters_per_token})
                if vocabulary is None else codepoints.dumps(vocabulary))
    return {
        KEY_FORMAT: FORMAT_NAME,
        KEY_VERSION: str(version),
        KEY_PRODUCER: f"elmo-edge {__version__}",
        KEY_OPTIONS: options.to_json(),
        KEY_CHARS: char_ids,
        KEY_LAYOUT: json.dumps(LAYOUT),
        KEY_SOURCE: json.dumps(source, sort_keys=True),
        KEY_PARITY: json.dumps(parity or {}, sort_keys=True),
        KEY_QUANT: json.dumps(quantization or {"mode": "none"}, sort_keys=True),
    }


def _json_field(meta: dict[str, str], key: str, where: str, default: Any = None) -> Any:
    try:  # an absent key reads as ``default`` when one is given (then it must be an object)
        value = json.loads(meta[key] if default is None else meta.get(key, json.dumps(default)))
    except (KeyError, json.JSONDecodeError, RecursionError):
        raise ModelError(f"{where}: metadata field {key!r} is missing or not JSON") from None
    if isinstance(default, dict) and not isinstance(value, dict):
        raise ModelError(f"{where}: metadata field {key!r} must be a JSON object: {value!r:.40}")
    return value


def parse_metadata(meta: dict[str, str], where: str) -> ModelInfo:
    """Validate an elmo-edge model's metadata; ``where`` names the file in errors."""
    fmt = meta.get(KEY_FORMAT)
    if fmt != FORMAT_NAME:
        raise ModelError(
            f"{where}: not an elmo-edge model (metadata {KEY_FORMAT!r} is {fmt!r}, "
            f"expected {FORMAT_NAME!r}); convert ELMo weights with `elmo convert`"
        )
    version = meta.get(KEY_VERSION)
    if version not in [str(v) for v in READABLE_VERSIONS]:
        older = version is not None and version.isdigit() and int(version) < FORMAT_VERSION
        advice = ("re-export it with this elmo-edge (`elmo export` / `elmo convert`)" if older
                  else "upgrade elmo-edge")
        raise ModelError(
            f"{where}: elmo-edge model format version {version!r} is not supported "
            f"(this runtime reads versions {' and '.join(map(str, READABLE_VERSIONS))}); "
            f"{advice}"
        )
    try:
        options = parse_options(_json_field(meta, KEY_OPTIONS, where))
    except ModelError:
        raise
    except Exception as e:  # OptionsError and friends
        raise ModelError(f"{where}: embedded options are invalid: {e}") from None
    scheme = _json_field(meta, KEY_CHARS, where)
    vocabulary = _vocabulary(scheme, options, version, where)
    if isinstance(scheme, dict) and vocabulary is None:  # no name: bilm-tf bytes
        scheme = {"scheme": chars.SCHEME_NAME, **scheme}
    expected = {**chars.scheme(), "max_chars": options.max_characters_per_token}
    if vocabulary is None and scheme != expected:
        raise ModelError(
            f"{where}: model uses char ids {scheme}, this runtime produces {expected}"
        )
    return ModelInfo(
        options=options,
        producer_version=meta.get(KEY_PRODUCER, "unknown"),
        source=_json_field(meta, KEY_SOURCE, where, {}),
        parity=_json_field(meta, KEY_PARITY, where, {}),
        quantization=_json_field(meta, KEY_QUANT, where, {"mode": "none"}),
        vocabulary=vocabulary,
    )


def _vocabulary(scheme: Any, options: ElmoOptions, version: str | None,
                where: str) -> codepoints.CodepointScheme | None:
    """The code-point vocabularies of a version-3 model, checked against its options."""
    named = scheme.get("scheme") if isinstance(scheme, dict) else None
    codepoint = options.char_vocabulary == "codepoint"
    if codepoint != (named == codepoints.SCHEME_NAME) or codepoint != (
            version == str(CODEPOINT_FORMAT_VERSION)):
        raise ModelError(f"{where}: format version {version}, char-id scheme {named!r} and "
                         f"options char_cnn.vocabulary {options.char_vocabulary!r} disagree")
    if not codepoint:
        return None
    return codepoints.from_metadata(scheme, where, n_characters=options.n_characters,
                                    max_chars=options.max_characters_per_token,
                                    n_words=options.n_words)


def char_ids_feed(ids: np.ndarray) -> dict[str, np.ndarray]:
    """The graph inputs for a padded batch of char ids ``(B, T, C)`` (zero rows = padding).

    For callers that hold char ids already (tests, parity checks, fixtures);
    :class:`elmo_runtime.Embedder` builds its inputs from token strings instead.
    """
    token_chars, token_index = chars.index_char_ids(ids)
    return {INPUT_TOKEN_CHARS: token_chars, INPUT_TOKEN_INDEX: token_index}
