"""Read an ELMoForManyLangs (HIT-SCIR) model directory, refusing anything unexpected.

A model directory holds ``config.json`` (training arguments; its
``config_path`` names the model config), ``char.dic`` and ``word.dic``
(``entry<TAB>id`` lines) and two PyTorch state dicts, ``token_embedder.pkl``
and ``encoder.pkl``. This module reads them the way their package does (see
``../shared/EFML_NOTES.md``) without importing it, and without unpickling
anything but plain tensors: the state dicts go through
``torch.load(weights_only=True)``. Every tensor's name and shape is checked
against the config and the vocabularies before anything uses it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from elmo_runtime.errors import ElmoError
from elmo_runtime.format import codepoints

CONFIG_FILE = "config.json"
CHAR_DIC = "char.dic"
WORD_DIC = "word.dic"
TOKEN_EMBEDDER = "token_embedder.pkl"
ENCODER = "encoder.pkl"
FAMILY = "elmoformanylangs"

# The model config their package ships under both of these names (byte-identical
# files); used when a model directory names one of them and lacks the file, as
# their loader falls back to its own copy. From elmoformanylangs 0.0.4.post2,
# configs/*.json, MIT License, Copyright (c) 2020 HIT-SCIR
# (哈工大社会计算与信息检索研究中心).
_SHIPPED = {
    "encoder": {"name": "elmo", "projection_dim": 512, "cell_clip": 3, "proj_clip": 3,
                "dim": 4096, "n_layers": 2},
    "token_embedder": {"name": "cnn", "activation": "relu",
                       "filters": [[1, 32], [2, 32], [3, 64], [4, 128], [5, 256], [6, 512],
                                   [7, 1024]],
                       "n_highway": 2, "word_dim": 100, "char_dim": 50,
                       "max_characters_per_token": 50},
    "classifier": {"name": "sampled_softmax", "n_samples": 8192},
    "dropout": 0.1,
}
SHIPPED_CONFIGS = {
    "cnn_50_100_512_4096_sample.json": _SHIPPED,
    "cnn_0_100_512_4096_sample.json": _SHIPPED,
}


class EfmlError(ElmoError):
    """An ELMoForManyLangs model directory that cannot be converted."""


@dataclass(frozen=True)
class EfmlConfig:
    """The parts of their model config the biLM depends on."""

    projection_dim: int
    lstm_dim: int
    n_layers: int
    cell_clip: float | None  # 0 in their config = no clip
    proj_clip: float | None
    activation: str
    filters: tuple[tuple[int, int], ...]
    n_highway: int
    word_dim: int
    char_dim: int
    max_chars: int

    @property
    def n_filters(self) -> int:
        return sum(n for _, n in self.filters)


@dataclass(frozen=True)
class EfmlModel:
    """A checked model: config, vocabularies ({entry: id}) and float32 state dicts."""

    directory: Path
    config_file: Path | None  # None: their shipped config, by name
    config: EfmlConfig
    chars: dict[str, int]
    words: dict[str, int] | None
    token_embedder: dict[str, np.ndarray]
    encoder: dict[str, np.ndarray]


def is_model_dir(path: str | Path) -> bool:
    """True when ``path`` is a directory that looks like an ELMoForManyLangs model."""
    p = Path(path)
    return p.is_dir() and (p / CONFIG_FILE).is_file() and (p / ENCODER).exists()


def _read_json(path: Path) -> Any:
    try:  # utf-8-sig: a byte-order mark (a file saved on Windows) is skipped
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise EfmlError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError) as e:
        raise EfmlError(f"{path}: cannot read ({e})") from None
    except json.JSONDecodeError as e:
        raise EfmlError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None


def find_config(model_dir: Path, config: str | Path | None = None) -> tuple[Path | None, dict]:
    """The model config as their loader finds it, or ``config`` when given.

    Their order: ``model_dir/config_path`` (an absolute ``config_path`` stays
    absolute), the basename of ``config_path`` inside ``model_dir``, then
    their package's copy (shipped here for the two names they ship). Returns
    ``(path or None for the shipped copy, parsed JSON)``; EfmlError otherwise.
    """
    if config is not None:
        path = Path(config)
        return path, _read_json(path)
    args = _read_json(model_dir / CONFIG_FILE)
    name = args.get("config_path") if isinstance(args, dict) else None
    if not isinstance(name, str) or not name:
        raise EfmlError(f"{model_dir / CONFIG_FILE}: no 'config_path' field naming the model "
                        "config; name it with --config FILE")
    base = os.path.basename(name)
    for candidate in (Path(os.path.join(model_dir, name)), model_dir / base):
        if candidate.is_file():
            return candidate, _read_json(candidate)
    if base in SHIPPED_CONFIGS:
        return None, SHIPPED_CONFIGS[base]
    raise EfmlError(f"{model_dir / CONFIG_FILE}: model config {name!r} not found (looked for "
                    f"{base} in {model_dir}; it is not one of the configs their package ships); "
                    "name it with --config FILE")


def _field(d: Any, section: str, key: str, kind: type, where: str) -> Any:
    sub = d.get(section) if isinstance(d, dict) else None
    value = sub.get(key) if isinstance(sub, dict) else None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise EfmlError(f"{where}: field {section}.{key} is missing or not {kind.__name__} "
                        f"(found {value!r})")
    return value


def parse_config(data: Any, where: str) -> EfmlConfig:
    """Validate their model config; refuse variants no released model uses, by name."""
    for section, expected in (("encoder", "elmo"), ("token_embedder", "cnn")):
        name = _field(data, section, "name", str, where)
        if name.lower() != expected:
            raise EfmlError(f"{where}: {section} {name!r} is not supported (only {expected!r}, "
                            "as in every released ELMoForManyLangs model)")
    filters = _field(data, "token_embedder", "filters", list, where)
    ok = all(isinstance(f, list) and len(f) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in f) for f in filters)
    if not filters or not ok:
        raise EfmlError(f"{where}: token_embedder.filters must be [[width, count], ...]")
    activation = _field(data, "token_embedder", "activation", str, where)
    if activation not in ("relu", "tanh"):
        raise EfmlError(f"{where}: token_embedder.activation {activation!r} is not relu or tanh")
    ints = {k: _field(data, s, k, int, where) for s, k in (
        ("encoder", "projection_dim"), ("encoder", "dim"), ("encoder", "n_layers"),
        ("token_embedder", "n_highway"), ("token_embedder", "word_dim"),
        ("token_embedder", "char_dim"), ("token_embedder", "max_characters_per_token"))}
    for key in ("projection_dim", "dim", "n_layers"):
        if ints[key] <= 0:
            raise EfmlError(f"{where}: encoder.{key} must be positive, found {ints[key]}")
    if ints["char_dim"] <= 0:
        raise EfmlError(f"{where}: token_embedder.char_dim is {ints['char_dim']}: models "
                        "without the character CNN are not supported")
    if ints["word_dim"] < 0 or ints["n_highway"] < 0:
        raise EfmlError(f"{where}: token_embedder.word_dim and n_highway must be >= 0")
    max_chars = ints["max_characters_per_token"]
    widest = max(w for w, _ in filters)
    if max_chars < max(3, widest):
        raise EfmlError(f"{where}: token_embedder.max_characters_per_token {max_chars} is "
                        f"below 3 or the widest filter ({widest})")
    clips = [_field(data, "encoder", k, float, where) for k in ("cell_clip", "proj_clip")]
    return EfmlConfig(
        projection_dim=ints["projection_dim"], lstm_dim=ints["dim"], n_layers=ints["n_layers"],
        cell_clip=clips[0] or None, proj_clip=clips[1] or None, activation=activation,
        filters=tuple((int(w), int(n)) for w, n in filters), n_highway=ints["n_highway"],
        word_dim=ints["word_dim"], char_dim=ints["char_dim"], max_chars=max_chars,
    )


def read_dic(path: Path) -> dict[str, int]:
    """``entry<TAB>id`` lines as their reader reads them: ``{entry: id}``.

    Lines split as ``codecs`` splits them (``str.splitlines``), each stripped
    and split on TAB; a one-field line is the entry ``'\\u3000'``; a later
    line for the same entry wins. EfmlError (file and line) for a line their
    reader would fail on, and for two entries with the same id.
    """
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise EfmlError(f"{path}: missing") from None
    except UnicodeDecodeError as e:
        raise EfmlError(f"{path}: not UTF-8 (byte {e.start})") from None
    vocab: dict[str, int] = {}
    seen_at: dict[int, tuple[str, int]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.strip().split("\t")
        if len(fields) == 1:
            fields.insert(0, "\u3000")
        try:
            entry, index = fields[0], int(fields[1]) if len(fields) == 2 else -1
        except ValueError:
            index = -1
        if index < 0:
            raise EfmlError(f"{path}: line {number}: expected 'entry<TAB>id', found {line!r}")
        if entry in vocab:  # their dict keeps the later line
            seen_at.pop(vocab[entry], None)
        if index in seen_at:
            other, at = seen_at[index]
            raise EfmlError(f"{path}: line {number}: id {index} of {entry!r} is also the id of "
                            f"{other!r} (line {at})")
        vocab[entry] = index
        seen_at[index] = (entry, number)
    return vocab


def load_state_dict(path: Path) -> dict[str, np.ndarray]:
    """A ``torch.save``-d state dict as float32 arrays, loaded with ``weights_only=True``.

    Both the zip and the legacy serialization load; a pickle that holds
    anything but a mapping of names to float tensors is refused (its code
    is never run): EfmlError naming the file.
    """
    import torch

    from ..pytorch.safe_load import TorchFileError, load_tensors

    if not path.is_file():
        raise EfmlError(f"{path}: missing")
    try:
        data = load_tensors(path)
    except TorchFileError as e:
        raise EfmlError(f"{path}: not a plain state dict: {e}" if e.refused else
                        f"{path}: not a readable torch.save file ({e})") from None
    if not isinstance(data, dict):
        raise EfmlError(f"{path}: holds a {type(data).__name__}, expected a state dict")
    out = {}
    for name, tensor in data.items():
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise EfmlError(f"{path}: entry {name!r} is a {type(tensor).__name__}, "
                            "expected a tensor")
        if not tensor.is_floating_point():
            raise EfmlError(f"{path}: tensor {name!r} has dtype {tensor.dtype}, expected float")
        out[name] = tensor.detach().to(torch.float32).numpy().copy()
    return out


def expected_shapes(config: EfmlConfig, n_chars: int, n_words: int | None
                    ) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
    """Names and shapes of both state dicts (token embedder, encoder)."""
    c, n, p, d = config.char_dim, config.n_filters, config.projection_dim, config.lstm_dim
    te: dict[str, tuple[int, ...]] = {}
    if config.word_dim > 0:
        te["word_emb_layer.embedding.weight"] = (n_words or 0, config.word_dim)
    te["char_emb_layer.embedding.weight"] = (n_chars, c)
    for i, (width, num) in enumerate(config.filters):
        te[f"convolutions.{i}.weight"] = (num, c, width)
        te[f"convolutions.{i}.bias"] = (num,)
    for k in range(config.n_highway):
        te[f"highways._layers.{k}.weight"] = (2 * n, n)
        te[f"highways._layers.{k}.bias"] = (2 * n,)
    te["projection.weight"] = (p, config.word_dim + n)
    te["projection.bias"] = (p,)
    enc: dict[str, tuple[int, ...]] = {}
    for layer in range(config.n_layers):
        for direction in ("forward", "backward"):
            prefix = f"{direction}_layer_{layer}"
            enc[f"{prefix}.input_linearity.weight"] = (4 * d, p)
            enc[f"{prefix}.state_linearity.weight"] = (4 * d, p)
            enc[f"{prefix}.state_linearity.bias"] = (4 * d,)
            enc[f"{prefix}.state_projection.weight"] = (p, d)
    return te, enc


def check_state_dict(state: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]],
                     path: Path) -> None:
    """Every expected tensor present with its shape and finite; nothing else."""
    for name, shape in shapes.items():
        if name not in state:
            raise EfmlError(f"{path}: tensor {name!r} is missing (expected shape {shape})")
        if tuple(state[name].shape) != shape:
            raise EfmlError(f"{path}: tensor {name!r} has shape {tuple(state[name].shape)}, "
                            f"the config and vocabularies expect {shape}")
        if not np.isfinite(state[name]).all():
            raise EfmlError(f"{path}: tensor {name!r} holds NaN or infinite values")
    extra = sorted(set(state) - set(shapes))
    if extra:
        raise EfmlError(f"{path}: unexpected tensor {extra[0]!r} (shape "
                        f"{tuple(state[extra[0]].shape)}); not part of this config's model")


def _check_vocab(vocab: dict[str, int], specials: tuple[str, ...], path: Path) -> None:
    missing = [s for s in specials if s not in vocab]
    if missing:
        raise EfmlError(f"{path}: lacks the entries {', '.join(missing)}")
    top = max(vocab.values())
    if top >= len(vocab):
        raise EfmlError(f"{path}: id {top} is out of range for {len(vocab)} entries "
                        f"(their embedding has one row per entry)")


def read_model(model_dir: str | Path, config: str | Path | None = None) -> EfmlModel:
    """Read and check a whole model directory; EfmlError names the file and what is wrong."""
    directory = Path(model_dir)
    if not directory.is_dir():
        raise EfmlError(f"{directory}: not a directory (an ELMoForManyLangs model is a "
                        f"directory with {CONFIG_FILE}, {CHAR_DIC}, {WORD_DIC}, "
                        f"{TOKEN_EMBEDDER}, {ENCODER})")
    config_file, data = find_config(directory, config)
    cfg = parse_config(data, str(config_file or "their shipped config"))
    chars = read_dic(directory / CHAR_DIC)
    _check_vocab(chars, codepoints.CHAR_SPECIALS, directory / CHAR_DIC)
    words = None
    if cfg.word_dim > 0:
        words = read_dic(directory / WORD_DIC)
        _check_vocab(words, codepoints.WORD_SPECIALS, directory / WORD_DIC)
    te_shapes, enc_shapes = expected_shapes(cfg, len(chars), len(words) if words else None)
    token_embedder = load_state_dict(directory / TOKEN_EMBEDDER)
    check_state_dict(token_embedder, te_shapes, directory / TOKEN_EMBEDDER)
    encoder = load_state_dict(directory / ENCODER)
    check_state_dict(encoder, enc_shapes, directory / ENCODER)
    return EfmlModel(directory, config_file, cfg, chars, words, token_embedder, encoder)


def n_parameters(model: EfmlModel) -> int:
    """Parameters in both state dicts."""
    return sum(math.prod(a.shape) for d in (model.token_embedder, model.encoder)
               for a in d.values())
