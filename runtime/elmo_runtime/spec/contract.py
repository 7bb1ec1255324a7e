"""The ONNX contract between the exporter and the runtime, declared once.

An elmo-edge model is self-describing: its ``metadata_props`` hold the
options, the char-id scheme, the format version, how it was made and how it
was quantized. The exporter writes :func:`make_metadata`; the runtime reads
:func:`parse_metadata` and refuses files it does not understand.

Graph interface (``B`` = batch, ``T`` = steps incl. ``<S>``/``</S>``, ``N`` =
distinct tokens encoded by this run, ``M`` = token vectors fed from a cache):

==============  =====  =================  =========================================
name            dtype  shape              meaning
==============  =====  =================  =========================================
token_chars     int32  [N, C]             shifted char ids of each distinct token
                                          to encode (N >= 1)
cached_vectors  float  [M, P]             token vectors computed earlier (a
                                          cache); optional, defaults to [0, P]
token_index     int32  [B, T]             row of concat(encoded, cached_vectors)
                                          at each step; -1 = padding
state_c         float  [2, L, B or 1, D]  initial cells (direction, layer);
                                          optional, defaults to zeros
state_h         float  [2, L, B or 1, P]  initial outputs; optional, zeros
layers          float  [B, L+1, T, 2P]    layer 0 = [x; x], l = [fwd_l; bwd_l],
                                          zero at padded steps
mask            int32  [B, T]             1 where a token (or boundary) is
final_state_c   float  [2, L, B, D]       cells after each row's last step
final_state_h   float  [2, L, B, P]       outputs after each row's last step
token_vectors   float  [N, P]             the encoded token_chars rows (char CNN,
                                          highway, projection): what a cache keeps
==============  =====  =================  =========================================

The char CNN runs once per distinct token, not once per step: the runtime
deduplicates a batch's tokens and may skip tokens it has cached
(:mod:`elmo_runtime.token_cache`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ModelError
from . import chars
from .options import ElmoOptions, parse_options

FORMAT_NAME = "elmo-edge-onnx"
FORMAT_VERSION = 2  # 1: char_ids [B, T, C] input, no token cache
# Largest |ONNX - PyTorch| an export accepts by default (checked before writing).
PARITY_ATOL = 1e-5

INPUT_TOKEN_CHARS = "token_chars"
INPUT_CACHED_VECTORS = "cached_vectors"
INPUT_TOKEN_INDEX = "token_index"
INPUT_STATE_C = "state_c"
INPUT_STATE_H = "state_h"
OUTPUT_LAYERS = "layers"
OUTPUT_MASK = "mask"
OUTPUT_STATE_C = "final_state_c"
OUTPUT_STATE_H = "final_state_h"
OUTPUT_TOKEN_VECTORS = "token_vectors"
INPUTS = (INPUT_TOKEN_CHARS, INPUT_CACHED_VECTORS, INPUT_TOKEN_INDEX, INPUT_STATE_C,
          INPUT_STATE_H)
REQUIRED_INPUTS = (INPUT_TOKEN_CHARS, INPUT_TOKEN_INDEX)  # the others have defaults
OUTPUTS = (OUTPUT_LAYERS, OUTPUT_MASK, OUTPUT_STATE_C, OUTPUT_STATE_H, OUTPUT_TOKEN_VECTORS)
# Symbolic dimensions; every other dimension is fixed by the options.
DYNAMIC_AXES = {
    INPUT_TOKEN_CHARS: {0: "distinct_tokens"},
    INPUT_CACHED_VECTORS: {0: "cached_tokens"},
    INPUT_TOKEN_INDEX: {0: "batch", 1: "tokens"},
    OUTPUT_TOKEN_VECTORS: {0: "distinct_tokens"},
    OUTPUT_LAYERS: {0: "batch", 2: "tokens"},
    OUTPUT_MASK: {0: "batch", 1: "tokens"},
    INPUT_STATE_C: {2: "state_batch"},
    INPUT_STATE_H: {2: "state_batch"},
    OUTPUT_STATE_C: {2: "batch"},
    OUTPUT_STATE_H: {2: "batch"},
}

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

    @property
    def max_chars(self) -> int:
        return self.options.max_characters_per_token


def make_metadata(
    options: ElmoOptions,
    source: dict[str, Any],
    parity: dict[str, Any] | None = None,
    quantization: dict[str, Any] | None = None,
) -> dict[str, str]:
    """metadata_props for an exported model (all values are strings)."""
    from .. import __version__

    return {
        KEY_FORMAT: FORMAT_NAME,
        KEY_VERSION: str(FORMAT_VERSION),
        KEY_PRODUCER: f"elmo-edge {__version__}",
        KEY_OPTIONS: options.to_json(),
        KEY_CHARS: json.dumps({**chars.scheme(), "max_chars": options.max_characters_per_token}),
        KEY_LAYOUT: json.dumps(LAYOUT),
        KEY_SOURCE: json.dumps(source, sort_keys=True),
        KEY_PARITY: json.dumps(parity or {}, sort_keys=True),
        KEY_QUANT: json.dumps(quantization or {"mode": "none"}, sort_keys=True),
    }


def _json_field(meta: dict[str, str], key: str, where: str) -> Any:
    try:
        return json.loads(meta[key])
    except (KeyError, json.JSONDecodeError):
        raise ModelError(f"{where}: metadata field {key!r} is missing or not JSON") from None


def parse_metadata(meta: dict[str, str], where: str) -> ModelInfo:
    """Validate an elmo-edge model's metadata; ``where`` names the file in errors."""
    fmt = meta.get(KEY_FORMAT)
    if fmt != FORMAT_NAME:
        raise ModelError(
            f"{where}: not an elmo-edge model (metadata {KEY_FORMAT!r} is {fmt!r}, "
            f"expected {FORMAT_NAME!r}); convert ELMo weights with `elmo convert`"
        )
    version = meta.get(KEY_VERSION)
    if version != str(FORMAT_VERSION):
        older = version is not None and version.isdigit() and int(version) < FORMAT_VERSION
        advice = ("re-export it with this elmo-edge (`elmo export` / `elmo convert`)" if older
                  else "upgrade elmo-edge")
        raise ModelError(
            f"{where}: elmo-edge model format version {version!r} is not supported "
            f"(this runtime reads version {FORMAT_VERSION}); {advice}"
        )
    try:
        options = parse_options(_json_field(meta, KEY_OPTIONS, where))
    except ModelError:
        raise
    except Exception as e:  # OptionsError and friends
        raise ModelError(f"{where}: embedded options are invalid: {e}") from None
    scheme = _json_field(meta, KEY_CHARS, where)
    expected = {**chars.scheme(), "max_chars": options.max_characters_per_token}
    if scheme != expected:
        raise ModelError(
            f"{where}: model uses char ids {scheme}, this runtime produces {expected}"
        )
    return ModelInfo(
        options=options,
        producer_version=meta.get(KEY_PRODUCER, "unknown"),
        source=_json_field(meta, KEY_SOURCE, where) if KEY_SOURCE in meta else {},
        parity=_json_field(meta, KEY_PARITY, where) if KEY_PARITY in meta else {},
        quantization=_json_field(meta, KEY_QUANT, where) if KEY_QUANT in meta else {"mode": "none"},
    )


def char_ids_feed(ids: np.ndarray) -> dict[str, np.ndarray]:
    """The graph inputs for a padded batch of char ids ``(B, T, C)`` (zero rows = padding).

    For callers that hold char ids already (tests, parity checks, fixtures);
    :class:`elmo_runtime.Embedder` builds its inputs from token strings instead.
    """
    token_chars, token_index = chars.index_char_ids(ids)
    return {INPUT_TOKEN_CHARS: token_chars, INPUT_TOKEN_INDEX: token_index}
