"""ELMoForManyLangs models built with their own package (the oracle, oracle extra) and run by
their ``sents2elmo``; and the same models through our reader, mapping and NumPy forward.

Random-weight models are built with their classes in several configs (:data:`CONFIGS`),
saved in their format, and embedded by their ``sents2elmo`` (all layers, encoder state reset
before each call: their encoder is stateful). Needs torch: import this module after
``pytest.importorskip("torch")``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from elmo_export.efml import mapping as efml_map
from elmo_export.efml import model as efml
from elmo_export.efml.convert import efml_options
from elmo_export.graph.reference import NumpyBiLM
from elmo_runtime.format import chars

from support import efml_random

ATOL = 1e-5
# Vocabulary words; "abcdefghij" is what a long token becomes at 12 chars.
WORDS = ["The", "the", "cat", "sat", "on", "mat", ".", "abcdefghij", "😀", "中文", "<bos>"]
SENTENCES = [
    ["The", "cat", "sat", "on", "the", "mat", "."],
    ["Unseenword", "zebra", "THE", "cat"],  # unseen words, case-sensitive lookup
    ["naïve", "ŝ", "Ωmega", "\u3000"],  # characters not in char.dic
    ["<bos>", "x", "<eos>", "<bos>"],  # literal boundary tokens
    ["a" * 30, "abcdefghijklmnopqrstuvwxyz", "supercalifragilisticexpialidocious"],  # > limit
    ["😀", "a😀b", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "🎉" * 20],  # non-BMP: seen and unseen, and cut
    [],
    ["中文", "字", "."],
    [],
]
CONFIGS = {
    # name: (small_config kwargs, weight scale)
    "relu-2hw-words-2L": (dict(), 1.5),
    "tanh-1hw-nowords-1L-noclip": (dict(activation="tanh", n_highway=1, word_dim=0,
                                        n_layers=1, cell_clip=0, proj_clip=0,
                                        max_chars=9), 1.0),
    "relu-1hw-words-3L-max7": (dict(n_highway=1, n_layers=3, max_chars=7, proj_clip=0,
                                    filters=((1, 3), (3, 5), (7, 4))), 1.0),
    "relu-0hw-words-1L": (dict(n_highway=0, n_layers=1, max_chars=50), 1.0),
}


def their_package():
    """Import elmoformanylangs with its one shim: identity ``overrides`` decorator.

    Their ``Highway.forward`` carries ``@overrides``, which on current
    ``overrides`` releases rejects the return annotation at import time.
    """
    overrides = pytest.importorskip("overrides", reason="elmoformanylangs (oracle extra) missing")
    original = overrides.overrides
    overrides.overrides = lambda method: method
    try:
        pkg = pytest.importorskip("elmoformanylangs",
                                  reason="elmoformanylangs (oracle extra) not installed")
        from elmoformanylangs import frontend
        from elmoformanylangs.modules.embedding_layer import EmbeddingLayer
    finally:
        overrides.overrides = original
    logging.getLogger("elmoformanylangs").setLevel(logging.ERROR)
    return pkg, frontend.Model, EmbeddingLayer


def build_with_their_classes(directory: Path, config: dict, scale: float, seed: int = 0,
                             legacy: bool = False) -> Path:
    """A model directory whose state dicts come from their Model, randomized (seeded)."""
    _, their_model, embedding_layer = their_package()
    chars, words = efml_random.default_vocabs(WORDS)
    word_layer = None
    if config["token_embedder"]["word_dim"] > 0:
        word_layer = embedding_layer(config["token_embedder"]["word_dim"], words,
                                     fix_emb=False)
    char_layer = embedding_layer(config["token_embedder"]["char_dim"], chars, fix_emb=False)
    model = their_model(config, word_layer, char_layer)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() == 1:
                std = 0.5
            elif "embedding" in name:
                std = 1.0
            else:
                std = scale * param[0].numel() ** -0.5
            param.copy_(std * torch.randn(param.shape, generator=gen))
    te = {k: v.numpy() for k, v in model.token_embedder.state_dict().items()}
    enc = {k: v.numpy() for k, v in model.encoder.state_dict().items()}
    return efml_random.write_model_dir(directory, config, chars,
                                       words if word_layer is not None else None, te, enc,
                                       config_path="/home/their/machine/configs/model.json",
                                       config_name="model.json", legacy=legacy)


def their_layers(model_dir: Path, sentences: list[list[str]]) -> list[np.ndarray]:
    """sents2elmo(output_layer=-2) in one batch from a reset encoder: (L+1, n, 2P) each."""
    pkg, _, _ = their_package()
    embedder = pkg.Embedder(str(model_dir), batch_size=len(sentences))
    embedder.model.encoder.reset_states()
    with torch.no_grad():
        return [np.asarray(a) for a in embedder.sents2elmo(sentences, output_layer=-2)]


def reference_layers(model_dir: Path, sentences: list[list[str]]) -> list[np.ndarray]:
    """Our reader, mapping and packer, and the float64 NumPy forward; boundaries stripped."""
    model = efml.read_model(model_dir)
    forward = NumpyBiLM(efml_options(model), efml_map.elmo_weights(model))
    packed = chars.pack(sentences, scheme=efml_map.scheme(model))
    layers = forward.run(packed.feed())["layers"]
    return [layers[i, :, 1 : 1 + len(s)] for i, s in enumerate(sentences)]


def make_oracle_model(name: str, tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    """A model of config ``name`` built with their classes, and their output on SENTENCES."""
    kwargs, scale = CONFIGS[name]
    config = efml_random.small_config(**kwargs)
    directory = build_with_their_classes(tmp_path_factory.mktemp(name), config, scale,
                                         legacy=name.startswith("tanh"))
    return directory, their_layers(directory, SENTENCES)


def max_diff(ours: list[np.ndarray], theirs: list[np.ndarray]) -> float:
    worst = 0.0
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert a.shape == b.shape, f"sentence {i}: shape {a.shape} vs theirs {b.shape}"
        if a.size:
            worst = max(worst, float(np.abs(a.astype(np.float64) - b).max()))
    return worst
