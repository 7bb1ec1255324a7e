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
from support.efml_oracle import (  # noqa: E402
    ATOL,
    CONFIGS,
    SENTENCES,
    WORDS,
    make_oracle_model,
    max_diff,
    reference_layers,
    their_package,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def oracle_model(request, tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    return make_oracle_model(request.param, tmp_path_factory)


def test_reference_forward_matches_their_package(oracle_model):
    directory, theirs = oracle_model
    ours = reference_layers(directory, SENTENCES)
    assert max_diff(ours, theirs) <= ATOL
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
    assert max_diff(again, theirs) > 1e-3


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

