"""A random-weight model directory in the ELMoForManyLangs format (tests, benches; not shipped).

The files are those their training writes: ``config.json`` naming a model
config, that config, ``char.dic``/``word.dic`` and the two state dicts saved
with ``torch.save`` (zip, or the legacy serialization with ``legacy=True``).
Tensor names and shapes come from :func:`elmo_export.efml.model.expected_shapes`;
the oracle tests check them against their package's own classes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from elmo_export.efml.model import (
    CHAR_DIC,
    CONFIG_FILE,
    ENCODER,
    TOKEN_EMBEDDER,
    WORD_DIC,
    expected_shapes,
    parse_config,
)

CHAR_SPECIALS = ("<bos>", "<eos>", "<oov>", "<pad>", "<bow>", "<eow>")
WORD_SPECIALS = ("<oov>", "<bos>", "<eos>", "<pad>")
SAMPLE_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:!?'-" \
    "äöüßéèçñøåжизнь中文字😀🎉"


def small_config(word_dim: int = 6, n_layers: int = 2, n_highway: int = 2,
                 activation: str = "relu", max_chars: int = 12, cell_clip: float = 3,
                 proj_clip: float = 3, filters: tuple[tuple[int, int], ...] = ((1, 4), (2, 6),
                                                                                (3, 8))
                 ) -> dict[str, Any]:
    """A model config in their JSON structure, small enough for tests."""
    return {
        "encoder": {"name": "elmo", "projection_dim": 8, "cell_clip": cell_clip,
                    "proj_clip": proj_clip, "dim": 12, "n_layers": n_layers},
        "token_embedder": {"name": "cnn", "activation": activation,
                           "filters": [list(f) for f in filters], "n_highway": n_highway,
                           "word_dim": word_dim, "char_dim": 5,
                           "max_characters_per_token": max_chars},
        "classifier": {"name": "sampled_softmax", "n_samples": 8192},
        "dropout": 0.1,
    }


def default_vocabs(words: list[str] | None = None, chars: str = SAMPLE_CHARS
                   ) -> tuple[dict[str, int], dict[str, int]]:
    """char.dic / word.dic contents in their training's order (corpus entries, specials)."""
    char_list = list(dict.fromkeys(chars)) + list(CHAR_SPECIALS)
    word_list = list(WORD_SPECIALS) + [w for w in (words or []) if w not in WORD_SPECIALS]
    return ({c: i for i, c in enumerate(char_list)},
            {w: i for i, w in enumerate(word_list)})


def write_dic(path: Path, vocab: dict[str, int]) -> None:
    """``entry<TAB>id`` lines, as their training writes them."""
    path.write_text("".join(f"{k}\t{i}\n" for k, i in vocab.items()), encoding="utf-8")


def random_state_dicts(config: dict[str, Any], n_chars: int, n_words: int | None,
                       seed: int = 0, scale: float = 1.0
                       ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Seeded float32 tensors of every expected name: N(0, 1/fan_in)·scale, biases 0.3·N."""
    rng = np.random.default_rng(seed)
    out = []
    for shapes in expected_shapes(parse_config(config, "config"), n_chars, n_words):
        state = {}
        for name, shape in shapes.items():
            fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
            std = 0.3 if len(shape) == 1 else (1.0 if "embedding" in name else fan_in ** -0.5)
            state[name] = (scale * std * rng.standard_normal(shape)).astype(np.float32)
        out.append(state)
    return out[0], out[1]


def save_state_dict(path: Path, state: dict[str, np.ndarray], legacy: bool = False) -> None:
    """``torch.save`` of an OrderedDict of tensors (their format)."""
    from collections import OrderedDict

    import torch

    tensors = OrderedDict((k, torch.from_numpy(np.ascontiguousarray(v))) for k, v in state.items())
    torch.save(tensors, path, _use_new_zipfile_serialization=not legacy)


def write_model_dir(directory: str | Path, config: dict[str, Any], chars: dict[str, int],
                    words: dict[str, int] | None, token_embedder: dict[str, np.ndarray],
                    encoder: dict[str, np.ndarray], config_name: str = "model_config.json",
                    config_path: str | None = None, legacy: bool = False) -> Path:
    """Write every file of a model directory; ``config_path`` goes into config.json as is
    (default: ``config_name``); the config itself is written as ``config_name`` (None: not)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    args = {"config_path": config_path or config_name, "model": str(d), "seed": 1}
    (d / CONFIG_FILE).write_text(json.dumps(args), encoding="utf-8")
    if config_name:
        (d / config_name).write_text(json.dumps(config, indent=1), encoding="utf-8")
    write_dic(d / CHAR_DIC, chars)
    if words is not None:
        write_dic(d / WORD_DIC, words)
    save_state_dict(d / TOKEN_EMBEDDER, token_embedder, legacy)
    save_state_dict(d / ENCODER, encoder, legacy)
    return d


def write_random_model(directory: str | Path, config: dict[str, Any] | None = None,
                       words: list[str] | None = None, seed: int = 0, scale: float = 1.0,
                       legacy: bool = False) -> Path:
    """A complete random model directory; returns its path."""
    config = config or small_config()
    chars, word_vocab = default_vocabs(words)
    has_words = config["token_embedder"]["word_dim"] > 0
    te, enc = random_state_dicts(config, len(chars), len(word_vocab) if has_words else None,
                                 seed, scale)
    return write_model_dir(directory, config, chars, word_vocab if has_words else None, te, enc,
                           legacy=legacy)
