"""An ELMoForManyLangs model → a parity-checked elmo-edge ONNX file (:func:`convert_efml`).

Read and checked by :mod:`.model`, mapped onto the ELMo weight layout by
:mod:`.mapping`, built by :mod:`elmo_export.graph.builder` (with the word branch and the
``word_ids`` input when the model has one) and checked against the float64
NumPy forward (:mod:`elmo_export.graph.reference`) on sentences drawn from the model's own
vocabularies, packed with its code-point scheme. The file carries the
vocabularies in its metadata (format version 3), so the runtime packs text
for it without the model directory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from elmo_runtime.errors import OptionsError
from elmo_runtime.files import sha256_file
from elmo_runtime.format import codepoints
from elmo_runtime.format.options import ElmoOptions, parse_options

from ..graph.convert import check_directory, convert_weights
from ..graph.parity import DEFAULT_ATOL, ParityReport, SentenceMaker, sentences_of
from .mapping import elmo_weights, options_dict, scheme
from .model import (
    CHAR_DIC,
    ENCODER,
    FAMILY,
    TOKEN_EMBEDDER,
    WORD_DIC,
    EfmlError,
    EfmlModel,
    n_parameters,
    read_model,
)

# tokens the parity sentences mix in: literal boundaries, likely-unseen characters
_EXTRAS = ("<bos>", "<eos>", "\U0001f9ea", "\u01c2", "<S>")


def efml_options(model: EfmlModel) -> ElmoOptions:
    """The converted model's options (code-point vocabulary, word branch)."""
    try:
        return parse_options(options_dict(model))
    except OptionsError as e:
        raise EfmlError(f"{model.directory}: {e}") from None


def vocab_sentences(vocab: codepoints.CodepointScheme) -> SentenceMaker:
    """A parity-sentence generator over ``vocab``: its words, tokens of its characters,
    literal boundaries, unseen characters and tokens longer than max_chars."""
    specials = set(codepoints.CHAR_SPECIALS) | set(codepoints.WORD_SPECIALS)
    pool = [c for c in vocab.chars if len(c) == 1] or list("abc")
    words = [w for w in (vocab.words or {}) if w not in specials]

    def token(rng: np.random.Generator) -> str:
        r = rng.random()
        if r < 0.3 and words:
            return str(words[rng.integers(len(words))])
        if r < 0.35:
            return _EXTRAS[rng.integers(len(_EXTRAS))]
        size = vocab.max_chars + 3 if r > 0.97 else int(rng.integers(1, 12))
        return "".join(pool[i] for i in rng.integers(len(pool), size=size))

    return sentences_of(token)


def convert_efml(model_dir: str | Path, output: str | Path, config: str | Path | None = None,
                 atol: float = DEFAULT_ATOL) -> ParityReport:
    """An ELMoForManyLangs model directory → elmo-edge ONNX at ``output``.

    ``config``: their model config when the one ``config.json`` names is not
    found. Raises EfmlError for a bad directory, ExportError when the graph
    does not match the NumPy reference within ``atol`` (nothing is written).
    """
    output = Path(output)
    check_directory(output)
    model = read_model(model_dir, config)
    options = efml_options(model)
    weights = elmo_weights(model)
    vocab = scheme(model)
    directory = model.directory
    files = [TOKEN_EMBEDDER, ENCODER, CHAR_DIC] + ([WORD_DIC] if model.words is not None else [])
    source = {
        "kind": FAMILY,
        "model_dir": directory.resolve().name,
        "config": model.config_file.name if model.config_file else "their shipped config",
        "sha256": {name: sha256_file(directory / name) for name in files},
        "parameters": n_parameters(model),
    }
    return convert_weights(options, weights, output, source, atol=atol, vocabulary=vocab,
                           sentences=vocab_sentences(vocab))
