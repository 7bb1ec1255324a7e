"""Request parsing and response rendering for `elmo serve` (no HTTP here).

Every problem with a request becomes an :class:`ApiError` carrying the HTTP
status and a one-line message that names the field (``inputs[3][2]``) and
what was expected. Vectors are rendered with orjson, which writes float32
arrays directly (30 times faster than ``json`` on nested lists) and exactly
(the shortest text that reads back as the same float32).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from ..mix import MODES, Mix
from ..tokenize import tokenize

POOLINGS = ("none", "mean")
ENCODINGS = ("float", "base64")
EMBED_FIELDS = ("inputs", "mix", "pooling", "encoding_format")
OPENAI_FIELDS = ("input", "model", "encoding_format", "user", "dimensions")

Tokenizer = Callable[[str, int], list[str]]
"""``(text, limit) -> tokens``: at most ``limit + 1`` tokens (more than ``limit`` is too long)."""


def tokenizer_for(regex: bool) -> Tokenizer:
    """The runtime's tokenizer (``regex``) or whitespace splitting, both stopping one token past
    the limit: a 2 MB string of punctuation costs ``limit`` tokens of work, not two million."""
    return tokenize if regex else _split


def _split(text: str, limit: int) -> list[str]:
    return text.split(None, limit)  # the last part is the untokenized rest when over the limit


class ApiError(Exception):
    """A request the service refuses: HTTP ``status`` and a one-line ``message``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Limits:
    """What one request may ask for (``--max-client-batch-size``, ``--max-input-tokens``)."""

    max_client_batch_size: int
    max_input_tokens: int


@dataclass
class EmbedRequest:
    """A parsed ``POST /embed``: token lists and how to render their vectors."""

    sentences: list[list[str]]
    mix: str | None  # None: the server's mix
    pooling: str
    encoding: str


@dataclass
class OpenAIRequest:
    """A parsed ``POST /v1/embeddings``."""

    sentences: list[list[str]]
    encoding: str


def error_body(status: int, message: str) -> bytes:
    """The JSON body of every error: OpenAI's shape, on one line."""
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return orjson.dumps({"error": {"message": message, "type": kind, "code": status}})


def load_json(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object; 400 if it is not JSON, 422 if not an object."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ApiError(
            400, f"request body: not valid UTF-8 (byte 0x{body[e.start]:02x} at offset {e.start})"
        ) from None
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise ApiError(400, f"request body: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ApiError(422, f"request body: expected a JSON object, found {_kind(data)}")
    return data


def parse_embed(data: dict[str, Any], tokenizer: Tokenizer, limits: Limits) -> EmbedRequest:
    """Check a ``POST /embed`` body and turn its inputs into token lists."""
    _no_unknown(data, EMBED_FIELDS)
    inputs = _inputs(data, "inputs", "a list of token lists or of strings", "a list or a string")
    mix = data.get("mix")
    if mix is not None and mix not in MODES:
        raise ApiError(422, f"mix: expected one of {', '.join(MODES)}, found {_show(mix)}")
    pooling = _choice(data, "pooling", POOLINGS)
    encoding = _choice(data, "encoding_format", ENCODINGS)
    _check_count(len(inputs), "inputs", limits)
    sentences = []
    for i, value in enumerate(inputs):
        sentence = _sentence(value, f"inputs[{i}]", tokenizer, limits.max_input_tokens)
        _check_length(sentence, f"inputs[{i}]", limits, pooling == "mean", isinstance(value, list))
        sentences.append(sentence)
    return EmbedRequest(sentences, mix, pooling, encoding)


def parse_openai(
    data: dict[str, Any], tokenizer: Tokenizer, limits: Limits, dim: int
) -> OpenAIRequest:
    """Check a ``POST /v1/embeddings`` body (OpenAI's fields; ``user`` is ignored)."""
    _no_unknown(data, OPENAI_FIELDS)
    strings = "a string or a list of strings"
    inputs = _inputs(data, "input", strings, strings)
    for name in ("model", "user"):
        if data.get(name) is not None and not isinstance(data[name], str):
            raise ApiError(422, f"{name}: expected a string, found {_kind(data[name])}")
    dimensions = data.get("dimensions")
    if dimensions is not None and dimensions != dim:
        raise ApiError(
            422,
            f"dimensions: this model gives {dim} dimensions, asked {_show(dimensions)}",
        )
    encoding = _choice(data, "encoding_format", ENCODINGS)
    _check_count(len(inputs), "input", limits)
    sentences = []
    for i, text in enumerate(inputs):
        if not isinstance(text, str):
            hint = "; token ids are not supported, send text" if _is_ids(text) else ""
            raise ApiError(422, f"input[{i}]: expected a string, found {_kind(text)}{hint}")
        sentence = tokenizer(text, limits.max_input_tokens)
        _check_length(sentence, f"input[{i}]", limits, need_tokens=True, counted=False)
        sentences.append(sentence)
    return OpenAIRequest(sentences, encoding)


BYTES_PER_VALUE = {"float": 12, "base64": 16 / 3}  # JSON text of one float32, measured upper
# bound for orjson floats ("-0.123456789," is 13 at most; 12 on average) and base64 of 4 bytes


def check_response_size(values: Sequence[int], encoding: str, max_mb: float) -> None:
    """413 when an answer of ``values`` float32 per input (in ``encoding``) is estimated
    over ``max_mb`` MiB (``--max-response-mb``): refused before the model runs."""
    total = sum(values)
    size = total * BYTES_PER_VALUE[encoding]
    if size > max_mb * 2**20:
        raise ApiError(
            413,
            f"response: {total} values, about {size / 2**20:.0f} MiB, more than "
            f"--max-response-mb {max_mb:g}; send fewer inputs, or ask for mix top/average, "
            "pooling mean or encoding_format base64",
        )


EMBED_HEAD = b'{"embeddings":['
EMBED_TAIL = b"]}"
OPENAI_HEAD = b'{"object":"list","data":['


def reduce_embed(layers: np.ndarray, mix: Mix, pooling: str) -> np.ndarray:
    """One input's vectors as ``POST /embed`` answers them: the mix of its ``(L+1, n, 2P)``
    float32 layers, mean-pooled over tokens if asked."""
    v = mix(layers)
    if pooling == "mean":
        return mean_tokens(v)
    # a copy of a view (the top layer), so that it does not keep every layer in memory
    return np.array(v, dtype=np.float32, copy=v.base is not None, order="C")


def render_embed(vectors: Sequence[np.ndarray], encoding: str) -> memoryview:
    """The ``"embeddings"`` items of some inputs' reduced vectors (:func:`reduce_embed`), as
    comma-separated JSON without brackets (a view of orjson's output, not a copy). The answer
    is ``EMBED_HEAD + items + "," + items ... + EMBED_TAIL``.

    float: nested lists of the array's shape; base64: ``{"shape": [...], "data":
    <little-endian float32 bytes, base64>}``.
    """
    out = [_encode(v, encoding, with_shape=True) for v in vectors]
    return memoryview(orjson.dumps(out, option=orjson.OPT_SERIALIZE_NUMPY))[1:-1]


def reduce_openai(layers: np.ndarray, mix: Mix) -> np.ndarray:
    """One input's vector as OpenAI's embeddings answer has it: the mean over tokens of the
    mix of its ``(L+1, n, 2P)`` float32 layers, ``(2P,)`` float32."""
    return mean_tokens(mix(layers))


def render_openai(vectors: Sequence[np.ndarray], first: int, encoding: str) -> memoryview:
    """The ``"data"`` items of OpenAI's embeddings answer for inputs ``first, first + 1, ...``
    (comma-separated JSON, a view of orjson's output) of their :func:`reduce_openai` vectors."""
    data = [
        {"object": "embedding", "index": first + i, "embedding": _encode(v, encoding)}
        for i, v in enumerate(vectors)
    ]
    return memoryview(orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY))[1:-1]


def openai_tail(sentences: Sequence[Sequence[str]], model: str) -> bytes:
    """What follows the ``"data"`` items: the model's name and the token counts."""
    tokens = sum(len(s) for s in sentences)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    rest = orjson.dumps({"model": model, "usage": usage})
    return b"]," + rest[1:]


def mean_tokens(vectors: np.ndarray) -> np.ndarray:
    """Mean over the token axis (second to last), float32: ``(n, D)`` -> ``(D,)``."""
    return vectors.mean(axis=-2, dtype=np.float64).astype(np.float32)


def _encode(v: np.ndarray, encoding: str, with_shape: bool = False) -> Any:
    v = np.ascontiguousarray(v, dtype=np.float32)
    if encoding == "float":
        return v
    data = base64.b64encode(v.astype("<f4", copy=False).tobytes()).decode("ascii")
    return {"shape": list(v.shape), "data": data} if with_shape else data


def _inputs(data: dict[str, Any], name: str, required: str, expected: str) -> list[Any]:
    """``data[name]`` as a list (a string is a list of one); 422 when absent or not a list."""
    if name not in data:
        raise ApiError(422, f"{name}: required ({required})")
    inputs = data[name]
    if isinstance(inputs, str):
        return [inputs]
    if not isinstance(inputs, list):
        raise ApiError(422, f"{name}: expected {expected}, found {_kind(inputs)}")
    return inputs


def _sentence(value: Any, where: str, tokenizer: Tokenizer, limit: int) -> list[str]:
    if isinstance(value, str):
        return tokenizer(value, limit)
    if not isinstance(value, list):
        raise ApiError(422, f"{where}: expected a string or a list of tokens, found {_kind(value)}")
    for j, token in enumerate(value):
        if not isinstance(token, str) or not token:
            found = "an empty string" if token == "" else _kind(token)
            raise ApiError(422, f"{where}[{j}]: expected a non-empty string token, found {found}")
    return value


def _check_count(count: int, where: str, limits: Limits) -> None:
    if count == 0:
        raise ApiError(422, f"{where}: empty list, expected at least one input")
    if count > limits.max_client_batch_size:
        raise ApiError(
            413,
            f"{where}: {count} inputs, more than --max-client-batch-size "
            f"{limits.max_client_batch_size}",
        )


def _check_length(
    sentence: list[str], where: str, limits: Limits, need_tokens: bool, counted: bool
) -> None:
    """413 over ``--max-input-tokens`` (the count is named when ``counted``: a token list; a
    string is tokenized only one token past the limit), 422 when empty and ``need_tokens``."""
    limit = limits.max_input_tokens
    if len(sentence) > limit:
        if counted:
            raise ApiError(413, f"{where}: {len(sentence)} tokens, more than --max-input-tokens "
                           f"{limit}")
        raise ApiError(413, f"{where}: more than {limit} tokens (--max-input-tokens)")
    if need_tokens and not sentence:
        raise ApiError(422, f"{where}: no tokens, nothing to average")


def _choice(data: dict[str, Any], name: str, choices: tuple[str, ...]) -> str:
    value = data.get(name)
    if value is None:
        return choices[0]
    if value not in choices:
        raise ApiError(422, f"{name}: expected one of {', '.join(choices)}, found {_show(value)}")
    return value


def _no_unknown(data: dict[str, Any], fields: tuple[str, ...]) -> None:
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ApiError(
            422, f"request body: unknown field {_show(unknown[0])}; expected {', '.join(fields)}"
        )


def _is_ids(value: Any) -> bool:
    if isinstance(value, list):
        return all(isinstance(x, int) for x in value)
    return isinstance(value, int)


def _show(value: Any, limit: int = 40) -> str:
    """A value as it may appear in a one-line message: its repr, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }.get(type(value), type(value).__name__)
