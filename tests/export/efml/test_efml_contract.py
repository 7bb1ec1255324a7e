"""The contract's code-point additions: options, metadata (version 3), word_ids, packing."""

from __future__ import annotations

import json

import numpy as np
import pytest
from elmo_runtime.errors import ModelError, OptionsError
from elmo_runtime.format import chars, codepoints, contract
from elmo_runtime.format.options import parse_options

VOCAB_CHARS = {c: i for i, c in enumerate(["a", "b", "ü", "😀", *codepoints.CHAR_SPECIALS])}
VOCAB_WORDS = {w: i for i, w in enumerate([*codepoints.WORD_SPECIALS, "ab", "Ab"])}


def _options(words: bool = True, **changes):
    data = {
        "lstm": {"dim": 6, "projection_dim": 4, "n_layers": 1, "use_skip_connections": True},
        "char_cnn": {"embedding": {"dim": 3}, "n_characters": len(VOCAB_CHARS) + 1,
                     "vocabulary": "codepoint", "max_characters_per_token": 8,
                     "activation": "relu", "n_highway": 1, "filters": [[1, 2], [2, 3]]},
    }
    if words:
        data["word_embedding"] = {"dim": 5, "n_words": len(VOCAB_WORDS)}
    data["char_cnn"].update(changes)
    return parse_options(data)


def _vocab(words: bool = True) -> codepoints.CodepointScheme:
    return codepoints.CodepointScheme(VOCAB_CHARS, 8, VOCAB_WORDS if words else None)


def test_options_round_trip_and_validation():
    o = _options()
    assert o.char_vocabulary == "codepoint" and o.has_word_branch and o.n_words == 6
    assert parse_options(json.loads(o.to_json())) == o
    bytes_options = parse_options({**o.to_dict(), "char_cnn": {
        **o.to_dict()["char_cnn"], "vocabulary": "bytes", "n_characters": 262}})
    assert "vocabulary" not in bytes_options.to_dict()["char_cnn"]
    with pytest.raises(OptionsError, match="vocabulary must be one of"):
        _options(vocabulary="letters")
    with pytest.raises(OptionsError, match="at least 7"):
        _options(n_characters=5)
    with pytest.raises(OptionsError, match="n_characters must be 261 or 262"):
        _options(vocabulary="bytes")
    # the word table counts: W * V_w more parameters, and W more projection inputs
    no_words = _options(words=False)
    assert o.n_parameters() - no_words.n_parameters() == 5 * 6 + 5 * 4


def test_metadata_version_3_round_trip():
    o, vocab = _options(), _vocab()
    meta = contract.make_metadata(o, {"kind": "test"}, vocabulary=vocab)
    assert meta[contract.KEY_VERSION] == "3"
    info = contract.parse_metadata(meta, "m.onnx")
    assert info.vocabulary == vocab and info.char_scheme == codepoints.SCHEME_NAME
    tokens = ["ab", "Ab", "xyz", "😀ü", "<bos>"]
    np.testing.assert_array_equal(info.vocabulary.char_ids(tokens), vocab.char_ids(tokens))
    with pytest.raises(ValueError, match="vocabulary"):
        contract.make_metadata(o, {"kind": "test"})


def test_a_version_2_runtime_refuses_by_version(monkeypatch):
    """What a released runtime (reading version 2 only) says about a code-point model."""
    meta = contract.make_metadata(_options(), {"kind": "test"}, vocabulary=_vocab())
    monkeypatch.setattr(contract, "READABLE_VERSIONS", (2,))
    with pytest.raises(ModelError, match="format version '3' is not supported.*upgrade"):
        contract.parse_metadata(meta, "m.onnx")


def test_inconsistent_metadata_is_refused():
    o, vocab = _options(), _vocab()
    meta = contract.make_metadata(o, {"kind": "test"}, vocabulary=vocab)
    bad = {**meta, contract.KEY_VERSION: "2"}
    with pytest.raises(ModelError, match="disagree"):
        contract.parse_metadata(bad, "m.onnx")
    fewer = codepoints.CodepointScheme(VOCAB_CHARS, 8, {**VOCAB_WORDS, "extra": 6})
    bad = {**meta, contract.KEY_CHARS: codepoints.dumps(fewer)}
    with pytest.raises(ModelError, match="7 words for word_embedding.n_words 6"):
        contract.parse_metadata(bad, "m.onnx")
    bad = {**meta, contract.KEY_CHARS: json.dumps({"scheme": codepoints.SCHEME_NAME,
                                                   "id_shift": 1, "max_chars": 8,
                                                   "chars": {"a": "one"}})}
    with pytest.raises(ModelError, match="chars vocabulary is not"):
        contract.parse_metadata(bad, "m.onnx")


def test_word_ids_is_required_exactly_with_a_word_branch():
    o = _options()
    spec = contract.TENSORS[contract.INPUT_WORD_IDS]
    names = [s.name for s in contract.input_specs(o)]
    assert names[:2] == [contract.INPUT_TOKEN_CHARS, contract.INPUT_WORD_IDS]
    assert contract.INPUT_WORD_IDS not in [s.name for s in contract.input_specs(
        _options(words=False))]
    base = {s.name: (contract.DTYPES[s.dtype], s.resolve(o)) for s in contract.INPUT_SPECS
            if not s.optional}
    inits = {s.name: (contract.DTYPES[s.dtype], [1 if isinstance(d, str) else d
                                                 for d in s.resolve(o)])
             for s in contract.INPUT_SPECS if s.optional}
    outs = {s.name: (contract.DTYPES[s.dtype], s.resolve(o)) for s in contract.OUTPUT_SPECS}
    problems = contract.check_graph(base, inits, outs, o)
    assert any("word_ids is missing" in p for p in problems)
    with_words = {**base, spec.name: ("tensor(int32)", spec.resolve(o))}
    assert not [p for p in contract.check_graph(with_words, inits, outs, o) if "word" in p]
    problems = contract.check_graph(with_words, inits, outs, _options(words=False))
    assert any("word_ids is not in the contract of a model without has_word_branch" in p
               for p in problems)


def test_pack_with_a_code_point_scheme():
    vocab = _vocab()
    packed = chars.pack([["ab", "xyz", "<bos>"], [], ["Ab", "ab"]], scheme=vocab)
    rows = ["<bos>", "<eos>", "ab", "xyz", "Ab"]
    np.testing.assert_array_equal(packed.token_chars, vocab.char_ids(rows))
    np.testing.assert_array_equal(packed.word_ids, vocab.word_ids(rows))
    assert packed.token_index.tolist() == [[0, 2, 3, 0, 1], [0, 1, -1, -1, -1],
                                           [0, 4, 2, 1, -1]]
    assert set(packed.feed()) == {"token_chars", "token_index", "word_ids"}
    # the grid agrees with the scheme's own batch form
    grid, _, lengths = vocab.batch_ids([["ab", "xyz", "<bos>"], [], ["Ab", "ab"]])
    np.testing.assert_array_equal(packed.char_ids(), grid)
    assert packed.lengths.tolist() == lengths.tolist()
    # no word branch: no word_ids; bilm-tf literal <S> is plain text here
    plain = chars.pack([["<S>"]], scheme=_vocab(words=False))
    assert plain.word_ids is None and plain.token_index.tolist() == [[0, 2, 1]]


def test_vocabulary_must_fit_max_chars():
    meta = contract.make_metadata(_options(), {"kind": "test"}, vocabulary=_vocab())
    wider = codepoints.CodepointScheme(VOCAB_CHARS, 9, VOCAB_WORDS)
    with pytest.raises(ModelError, match="max_chars 9 vs 8"):
        contract.parse_metadata({**meta, contract.KEY_CHARS: codepoints.dumps(wider)}, "m")
