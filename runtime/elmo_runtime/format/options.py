"""The ELMo options.json schema: parsed and validated once, read by both sides.

The export side (PyTorch model, weight files, ONNX builder) and the runtime
(state shapes, `elmo info`) both use :class:`ElmoOptions`; the JSON format is
the one bilm-tf and AllenNLP publish next to ``weights.hdf5``. The weight
file's layout (TF variable names) lives on the export side,
``elmo_export.bilm_tf.weights``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import OptionsError
from ..files import read_json
from .chars import CHAR_VOCAB, N_CHARACTERS

ACTIVATIONS = ("relu", "tanh")
CHAR_VOCABULARIES = ("bytes", "codepoint")
MIN_CODEPOINT_ROWS = 7  # <bos> <eos> <oov> <pad> <bow> <eow> + the zero row
# added to the forget gate at run time, not stored in B (docs/elmo-spec.md, "LSTM with projection")
FORGET_BIAS = 1.0


@dataclass(frozen=True)
class ElmoOptions:
    """Hyperparameters of one biLM (see docs/elmo-spec.md)."""

    lstm_dim: int
    projection_dim: int
    n_layers: int
    cell_clip: float | None
    proj_clip: float | None
    use_skip_connections: bool
    char_embed_dim: int
    n_characters: int
    max_characters_per_token: int
    activation: str
    n_highway: int
    filters: tuple[tuple[int, int], ...]
    # "bytes": bilm-tf's UTF-8 ids; "codepoint": a learned code-point vocabulary of
    # n_characters - 1 entries (ELMoForManyLangs; elmo_runtime.format.codepoints)
    char_vocabulary: str = "bytes"
    word_dim: int = 0  # width of a word-embedding branch before the projection (0: none)
    n_words: int = 0  # rows of its table

    @property
    def has_word_branch(self) -> bool:
        """Whether token vectors also use a word embedding (graph input ``word_ids``)."""
        return self.word_dim > 0

    @property
    def n_filters(self) -> int:
        """F: the char CNN's output width (sum of filter counts)."""
        return sum(n for _, n in self.filters)

    @property
    def output_dim(self) -> int:
        """Width of every representation layer: 2 · projection_dim."""
        return 2 * self.projection_dim

    @property
    def n_output_layers(self) -> int:
        """L + 1: the token layer plus one per LSTM layer."""
        return self.n_layers + 1

    def to_dict(self) -> dict[str, Any]:
        """The options.json structure (round-trips through :func:`parse_options`)."""
        lstm: dict[str, Any] = {
            "dim": self.lstm_dim,
            "projection_dim": self.projection_dim,
            "n_layers": self.n_layers,
            "use_skip_connections": self.use_skip_connections,
        }
        if self.cell_clip is not None:
            lstm["cell_clip"] = self.cell_clip
        if self.proj_clip is not None:
            lstm["proj_clip"] = self.proj_clip
        out: dict[str, Any] = {
            "lstm": lstm,
            "char_cnn": {
                "embedding": {"dim": self.char_embed_dim},
                "n_characters": self.n_characters,
                "max_characters_per_token": self.max_characters_per_token,
                "activation": self.activation,
                "n_highway": self.n_highway,
                "filters": [list(f) for f in self.filters],
            },
        }
        if self.char_vocabulary != "bytes":
            out["char_cnn"]["vocabulary"] = self.char_vocabulary
        if self.word_dim:
            out["word_embedding"] = {"dim": self.word_dim, "n_words": self.n_words}
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def n_parameters(self) -> int:
        """Learned values of a biLM with these options (char_embed has 261 rows, W_P_0 counted)."""
        e, f, p, d = self.char_embed_dim, self.n_filters, self.projection_dim, self.lstm_dim
        rows = CHAR_VOCAB if self.char_vocabulary == "bytes" else self.n_characters - 1
        cnn = rows * e + sum(w * e * n + n for w, n in self.filters)
        highway = self.n_highway * 2 * (f * f + f)
        lstm = 2 * self.n_layers * (2 * p * 4 * d + 4 * d + d * p)
        words = self.n_words * self.word_dim
        return cnn + highway + (self.word_dim + f) * p + p + lstm + words


def _get(d: dict, key: str, where: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(d, dict) or key not in d:
        raise OptionsError(f"options: missing field {where}{key}")
    value = d[key]
    if kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) and kind is not bool:
        raise OptionsError(f"options: field {where}{key} must be {kind}, found {value!r}")
    if not isinstance(value, kind):
        raise OptionsError(f"options: field {where}{key} has the wrong type: {value!r}")
    return value


def _positive(value: int, name: str) -> int:
    if value <= 0:
        raise OptionsError(f"options: {name} must be positive, found {value}")
    return value


def _clip(lstm: dict, key: str) -> float | None:
    value = lstm.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise OptionsError(f"options: lstm.{key} must be a positive number, found {value!r}")
    return float(value)


def parse_options(data: dict[str, Any]) -> ElmoOptions:
    """Validate an options.json structure; raise OptionsError naming the bad field."""
    if not isinstance(data, dict):
        raise OptionsError("options: expected a JSON object with 'lstm' and 'char_cnn'")
    if data.get("bidirectional", True) is not True:
        raise OptionsError("options: bidirectional is not true (a one-direction language "
                           "model); elmo-edge runs bidirectional ELMo only")
    if "char_cnn" not in data and isinstance(data.get("lstm"), dict):
        raise OptionsError("options: no char_cnn: a word-input bilm-tf model (it needs its "
                           "token embedding file), which elmo-edge does not run")
    lstm = _get(data, "lstm", "", dict)
    cnn = _get(data, "char_cnn", "", dict)
    emb = _get(cnn, "embedding", "char_cnn.", dict)
    raw_filters = _get(cnn, "filters", "char_cnn.", list)
    filters = []
    for f in raw_filters:
        ok = isinstance(f, (list, tuple)) and len(f) == 2
        ok = ok and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in f)
        if not ok:
            raise OptionsError(
                f"options: char_cnn.filters must be [[width, count], …], found {f!r}"
            )
        filters.append((int(f[0]), int(f[1])))
    if not filters:
        raise OptionsError("options: char_cnn.filters is empty")
    activation = _get(cnn, "activation", "char_cnn.", str)
    if activation not in ACTIVATIONS:
        raise OptionsError(
            f"options: char_cnn.activation must be one of {ACTIVATIONS}, found {activation!r}"
        )
    n_chars = _get(cnn, "n_characters", "char_cnn.", int)
    vocabulary = cnn.get("vocabulary", "bytes")
    if vocabulary not in CHAR_VOCABULARIES:
        raise OptionsError(f"options: char_cnn.vocabulary must be one of {CHAR_VOCABULARIES}, "
                           f"found {vocabulary!r}")
    word_dim, n_words = _word_embedding(data)
    if vocabulary == "codepoint":
        if n_chars < MIN_CODEPOINT_ROWS:
            raise OptionsError(f"options: char_cnn.n_characters of a code-point vocabulary must "
                               f"be at least {MIN_CODEPOINT_ROWS}, found {n_chars}")
    elif n_chars not in N_CHARACTERS:
        raise OptionsError(
            f"options: char_cnn.n_characters must be {' or '.join(map(str, N_CHARACTERS))}, "
            f"found {n_chars}"
        )
    max_chars = _positive(
        _get(cnn, "max_characters_per_token", "char_cnn.", int),
        "char_cnn.max_characters_per_token",
    )
    if max_chars < 3:
        raise OptionsError("options: char_cnn.max_characters_per_token must be at least 3")
    widest = max(w for w, _ in filters)
    if widest > max_chars:
        raise OptionsError(
            f"options: a filter of width {widest} is wider than max_characters_per_token "
            f"{max_chars}"
        )
    n_highway = _get(cnn, "n_highway", "char_cnn.", int)
    if n_highway < 0:
        raise OptionsError(f"options: char_cnn.n_highway must be >= 0, found {n_highway}")
    return ElmoOptions(
        lstm_dim=_positive(_get(lstm, "dim", "lstm.", int), "lstm.dim"),
        projection_dim=_positive(_get(lstm, "projection_dim", "lstm.", int), "lstm.projection_dim"),
        n_layers=_positive(_get(lstm, "n_layers", "lstm.", int), "lstm.n_layers"),
        cell_clip=_clip(lstm, "cell_clip"),
        proj_clip=_clip(lstm, "proj_clip"),
        use_skip_connections=bool(lstm.get("use_skip_connections", False)),
        char_embed_dim=_positive(_get(emb, "dim", "char_cnn.embedding.", int), "embedding.dim"),
        n_characters=n_chars,
        max_characters_per_token=max_chars,
        activation=activation,
        n_highway=n_highway,
        filters=tuple(filters),
        char_vocabulary=vocabulary,
        word_dim=word_dim,
        n_words=n_words,
    )


def _word_embedding(data: dict[str, Any]) -> tuple[int, int]:
    """(dim, n_words) of the optional ``word_embedding`` section; (0, 0) when absent."""
    if "word_embedding" not in data:
        return 0, 0
    section = _get(data, "word_embedding", "", dict)
    dim = _positive(_get(section, "dim", "word_embedding.", int), "word_embedding.dim")
    n_words = _positive(_get(section, "n_words", "word_embedding.", int), "word_embedding.n_words")
    return dim, n_words


def load_options(path: str | Path) -> ElmoOptions:
    """Read and validate an options.json file."""
    path = Path(path)
    data = read_json(path, OptionsError, "options file")
    try:
        return parse_options(data)
    except OptionsError as e:
        raise OptionsError(f"{path}: {e}") from None
