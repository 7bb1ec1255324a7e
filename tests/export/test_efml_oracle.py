"""ELMoForManyLangs conversion checked against their own package (the oracle).

Random-weight models are built with their classes (``elmoformanylangs``,
oracle extra) in several configs, saved in their format, and embedded by their
``sents2elmo`` (all layers, encoder state reset before each call: their
encoder is stateful). Ours must agree per element within 1e-5: here the
float64 NumPy forward (elmo_export.graph.reference) on the converted weights and
packed ids (the weight mapping, the code-point scheme), in test_efml_cli.py the
converted ONNX model through ``elmo embed`` (the whole path).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
efml = pytest.importorskip("elmo_export.efml.model")
from elmo_export.efml import mapping as efml_map  # noqa: E402
from elmo_export.efml.convert import efml_options  # noqa: E402
from elmo_export.graph.reference import NumpyBiLM  # noqa: E402
from elmo_runtime.format import chars  # noqa: E402
from support import efml_random  # noqa: E402
from util import one_torch_thread  # noqa: E402,F401

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


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def oracle_model(request, tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    return make_oracle_model(request.param, tmp_path_factory)


def _max_diff(ours: list[np.ndarray], theirs: list[np.ndarray]) -> float:
    worst = 0.0
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert a.shape == b.shape, f"sentence {i}: shape {a.shape} vs theirs {b.shape}"
        if a.size:
            worst = max(worst, float(np.abs(a.astype(np.float64) - b).max()))
    return worst


def test_reference_forward_matches_their_package(oracle_model):
    directory, theirs = oracle_model
    ours = reference_layers(directory, SENTENCES)
    assert _max_diff(ours, theirs) <= ATOL
    # the comparison is not vacuous: every layer moves, every sentence differs
    assert all(np.abs(t).max() > 0.1 for t in theirs if t.size)


def test_their_state_reset_matters(oracle_model):
    """Why the oracle resets: their encoder carries state into the next call."""
    directory, theirs = oracle_model
    pkg, _, _ = their_package()
    embedder = pkg.Embedder(str(directory), batch_size=len(SENTENCES))
    embedder.model.encoder.reset_states()
    with torch.no_grad():
        embedder.sents2elmo(SENTENCES, output_layer=-2)
        again = embedder.sents2elmo(SENTENCES, output_layer=-2)
    assert _max_diff(again, theirs) > 1e-3


def test_clips_are_exercised():
    """The clipped configs really clip (else the clip mapping would go unchecked)."""
    kwargs, scale = CONFIGS["relu-2hw-words-2L"]
    config = efml_random.small_config(**kwargs)
    chars_, words = efml_random.default_vocabs(WORDS)
    te, enc = efml_random.random_state_dicts(config, len(chars_), len(words), scale=scale)
    model = efml.EfmlModel(Path("."), None, efml.parse_config(config, "c"), chars_, words, te,
                           enc)
    options = efml_options(model)
    weights = efml_map.elmo_weights(model)
    feed = chars.pack(SENTENCES, scheme=efml_map.scheme(model)).feed()
    clipped = NumpyBiLM(options, weights).run(feed)["layers"]
    free = NumpyBiLM(dataclasses.replace(options, cell_clip=None, proj_clip=None),
                     weights).run(feed)["layers"]
    assert np.abs(free).max() > 3.0
    assert not np.allclose(clipped, free)


def test_mapping_dumps_json_round_trip(oracle_model):
    """The scheme metadata survives JSON (non-BMP entries included)."""
    from elmo_runtime.format import codepoints

    directory, _ = oracle_model
    scheme = efml_map.scheme(efml.read_model(directory))
    back = codepoints.from_metadata(json.loads(codepoints.dumps(scheme)), "meta")
    tokens = [t for s in SENTENCES for t in s]
    np.testing.assert_array_equal(back.char_ids(tokens), scheme.char_ids(tokens))
    if scheme.has_words:
        np.testing.assert_array_equal(back.word_ids(tokens), scheme.word_ids(tokens))

