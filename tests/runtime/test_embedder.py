"""Embedder plumbing: shapes, order, boundaries, bucketing, stateful rows, mixes, input checks."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from elmo_runtime import Embedder
from elmo_runtime.batching import chunks
from elmo_runtime.embedder import default_model_path
from elmo_runtime.errors import ElmoError, InputError, MixError, ModelError
from elmo_runtime.format import chars, contract
from elmo_runtime.mix import ScalarMix, save_mix
from support.errors import one_line_error

P2 = 4  # the toy model's 2P
TOY_LAYERS = 3


@pytest.fixture
def emb(toy_model_path: Path) -> Embedder:
    return Embedder(toy_model_path, provider="cpu")


@pytest.fixture(scope="module")
def tiny(tiny_model_path: Path) -> Embedder:
    return Embedder(tiny_model_path, provider="cpu", threads=1)


def record_batches(emb: Embedder, monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """Record the (batch, steps) shape of every forward pass."""
    shapes: list[tuple[int, ...]] = []
    run = emb._session.run

    def spy(fetch, feed, options=None):
        shapes.append(feed[contract.INPUT_TOKEN_INDEX].shape)
        return run(fetch, feed, options)

    monkeypatch.setattr(emb._session, "run", spy)
    return shapes


def random_sentences(n: int, seed: int = 0) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    words = ["a", "cat", "sat", "on", "the", "mat", "héllo", "中文", "x" * 60, "😀"]
    return [[str(w) for w in rng.choice(words, size=rng.integers(0, 30))] for _ in range(n)]


def test_embed_sentence_shape_and_values(emb: Embedder, toy: Callable) -> None:
    out = emb.embed_sentence(["The", "cat", "sat"])
    assert out.shape == (TOY_LAYERS, 3, P2)
    assert out.dtype == np.float32
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out, toy(["The", "cat", "sat"]))


def test_embed_batch_strips_boundaries_and_keeps_order(emb: Embedder, toy: Callable) -> None:
    batch = [["a", "b", "c", "d"], ["long" * 3], [], ["é", "ß"]]
    outs = emb.embed_batch(batch)
    assert [o.shape for o in outs] == [(3, 4, P2), (3, 1, P2), (3, 0, P2), (3, 2, P2)]
    for tokens, out in zip(batch, outs, strict=True):
        np.testing.assert_array_equal(out, toy(tokens))
        assert out.flags.c_contiguous and out.base is None  # a copy, not a view of the batch


def test_embed_batch_is_cut_by_the_token_budget(emb: Embedder,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 24 item 5: one pass of 100 x 3,002 padded steps before; now the long sentence
    runs alone and the short ones together, as embed_sentences would run them."""
    shapes = record_batches(emb, monkeypatch)
    emb.embed_batch([["x"] * 3000] + [["a"]] * 99)
    assert sorted(shapes) == [(1, 3002), (99, 3)]


def test_empty_batch_never_reaches_the_model(
    emb: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    shapes = record_batches(emb, monkeypatch)
    assert emb.embed_batch([]) == []
    assert list(emb.embed_sentences([])) == []
    assert shapes == []


def test_onnxruntime_failure_is_one_line(emb: Embedder, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(fetch, feed, options=None):
        raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : bad alloc\ndetails")

    monkeypatch.setattr(emb._session, "run", fail)
    with pytest.raises(ElmoError) as e:
        emb.embed_batch([["a", "b"], ["c"]])
    assert str(e.value) == (
        f"{emb.model_path}: onnxruntime failed on a batch of 2 sentences x 4 steps: "
        "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : bad alloc"
    )


def test_any_iterable_batch(emb: Embedder, toy: Callable) -> None:
    outs = emb.embed_batch(s for s in (["a"], ["b", "c"]))
    np.testing.assert_array_equal(outs[1], toy(["b", "c"]))


def test_tuples_are_sentences(emb: Embedder, toy: Callable) -> None:
    np.testing.assert_array_equal(emb.embed_sentence(("a", "b")), toy(["a", "b"]))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("The cat sat", "sentence 1: expected a list of tokens, got a str; use text.split()"),
        (iter(["a"]), "sentence 1: expected a list of tokens, got a list_iterator"),
        (["a", 3], "sentence 1: token 1 is a int, expected a str"),
        (["a", ""], "sentence 1: token 1 is an empty string"),
        ([None], "sentence 1: token 0 is a NoneType, expected a str"),
    ],
)
def test_bad_input(emb: Embedder, bad: object, message: str) -> None:
    with pytest.raises(InputError) as e:
        emb.embed_batch([["ok"], bad])
    assert str(e.value) == message
    with pytest.raises(InputError, match="sentence 1: "):
        list(emb.embed_sentences([["ok"], bad]))


def test_embed_sentences_keeps_input_order(
    emb: Embedder, toy: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    sentences = random_sentences(300)
    shapes = record_batches(emb, monkeypatch)
    outs = list(emb.embed_sentences(sentences, batch_size=16))
    assert len(outs) == 300
    for tokens, out in zip(sentences, outs, strict=True):
        np.testing.assert_array_equal(out, toy(tokens))
    assert sum(s[0] for s in shapes) == 300
    assert max(s[0] for s in shapes) == 16
    padded = sum(s[0] * s[1] for s in shapes)
    unsorted = sum(16 * (max(map(len, c)) + 2) for c in chunks(sentences, 16))
    assert padded < 0.8 * unsorted  # bucketing cut the padding


def test_embed_sentences_streams_with_bounded_memory(emb: Embedder, toy: Callable) -> None:
    consumed = []

    def endless():
        for i in itertools.count():
            consumed.append(i)
            yield ["w"] * (i % 5)

    outs = list(itertools.islice(emb.embed_sentences(endless(), batch_size=4), 10))
    assert [o.shape[1] for o in outs] == [i % 5 for i in range(10)]
    np.testing.assert_array_equal(outs[3], toy(["w"] * 3))
    assert len(consumed) <= 4 * 16 + 1  # one window, not the whole stream


def test_a_very_long_line_runs_alone(emb: Embedder, monkeypatch: pytest.MonkeyPatch) -> None:
    sentences = [["a"] * 5] * 20 + [["b"] * 5000] + [["c"] * 7] * 43
    shapes = record_batches(emb, monkeypatch)
    outs = list(emb.embed_sentences(sentences, batch_size=64))
    assert sorted(s[:2] for s in shapes) == [(1, 5002), (63, 9)]
    assert [o.shape[1] for o in outs] == [len(s) for s in sentences]


def test_max_tokens_per_batch_is_a_parameter(
    toy_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emb = Embedder(toy_model_path, max_tokens_per_batch=40)
    shapes = record_batches(emb, monkeypatch)
    list(emb.embed_sentences([["a"] * 8] * 10, batch_size=64))
    assert [s[0] for s in shapes] == [4, 4, 2]  # 4 rows x 10 steps = 40


def test_invalid_batch_size(emb: Embedder) -> None:
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        emb.embed_sentences([["a"]], batch_size=0)  # at once, not at the first next()


# ---------------------------------------------------------------- stateful rows (toy model)
# The toy model adds P x (sum of the row's previous lengths, boundaries included) to every
# value, so each expected offset below spells out which state a row continued.


def test_stateless_rows_start_from_zero(emb: Embedder, toy: Callable) -> None:
    emb.embed_batch([["a", "b", "c"]])
    np.testing.assert_array_equal(emb.embed_sentence(["d"]), toy(["d"]))


def test_stateful_rows_keep_their_state(toy_model_path: Path, toy: Callable) -> None:
    emb = Embedder(toy_model_path, stateful=True)
    first = emb.embed_batch([["a", "b", "c"], ["x"]])  # rows 0, 1 ran 5 and 3 steps
    np.testing.assert_array_equal(first[0], toy(["a", "b", "c"], 0))
    second = emb.embed_batch([["c"], ["d"], ["e"]])  # row 2 never seen: zero state
    np.testing.assert_array_equal(second[0], toy(["c"], 5))
    np.testing.assert_array_equal(second[1], toy(["d"], 3))
    np.testing.assert_array_equal(second[2], toy(["e"], 0))
    third = emb.embed_batch([[]])  # an empty sentence still runs <S> </S> on row 0
    np.testing.assert_array_equal(third[0], toy([], 8))
    fourth = emb.embed_batch([["f"], ["g"], ["h"]])  # rows 1, 2 kept theirs during `third`
    np.testing.assert_array_equal(fourth[0], toy(["f"], 10))
    np.testing.assert_array_equal(fourth[1], toy(["g"], 6))
    np.testing.assert_array_equal(fourth[2], toy(["h"], 3))
    emb.reset_states()
    np.testing.assert_array_equal(emb.embed_sentence(["z"]), toy(["z"], 0))


def test_stateful_embed_sentences_runs_batches_in_input_order(
    toy_model_path: Path, toy: Callable
) -> None:
    emb = Embedder(toy_model_path, stateful=True)
    sentences = [["a"] * 5, ["b"], ["c"] * 2, ["d"], ["e"] * 3]  # batches of 2
    outs = list(emb.embed_sentences(sentences, batch_size=2))
    offsets = [0, 0, 7, 3, 7 + 4]  # row 0: a (7 steps), c (4); row 1: b (3)
    for tokens, out, offset in zip(sentences, outs, offsets, strict=True):
        np.testing.assert_array_equal(out, toy(tokens, offset))


# ---------------------------------------------------------------- mixes


def test_named_mixes(toy_model_path: Path, toy: Callable) -> None:
    layers = toy(["a", "b"])
    top = Embedder(toy_model_path, mix="top").embed_sentence(["a", "b"])
    np.testing.assert_array_equal(top, layers[-1])
    average = Embedder(toy_model_path, mix="average").embed_sentence(["a", "b"])
    np.testing.assert_allclose(average, layers.mean(axis=0), rtol=1e-6)
    assert Embedder(toy_model_path, mix="all").embed_sentence(["a", "b"]).shape == (3, 2, P2)


def test_scalar_mix_and_mix_file(toy_model_path: Path, toy: Callable, tmp_path: Path) -> None:
    mix = ScalarMix([0.0, np.log(3.0), 0.0], gamma=2.0)  # weights 1/5, 3/5, 1/5
    layers = toy(["a", "b"]).astype(np.float64)
    expected = 2.0 * (0.2 * layers[0] + 0.6 * layers[1] + 0.2 * layers[2])
    out = Embedder(toy_model_path, mix=mix).embed_sentence(["a", "b"])
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    save_mix(tmp_path / "mix.json", mix)
    from_file = Embedder(toy_model_path, mix=tmp_path / "mix.json").embed_sentence(["a", "b"])
    np.testing.assert_array_equal(from_file, out)


def test_mix_of_the_wrong_size(toy_model_path: Path, tmp_path: Path) -> None:
    with pytest.raises(MixError, match="expected 3 weights .*found 2"):
        Embedder(toy_model_path, mix=ScalarMix([0.0, 0.0]))
    (tmp_path / "mix.json").write_text(json.dumps({"weights": [0, 0], "gamma": 1}))
    with pytest.raises(MixError, match=r"mix\.json: expected 3 weights"):
        Embedder(toy_model_path, mix=tmp_path / "mix.json")


def test_layer_norm_does_not_depend_on_the_batch(toy_model_path: Path) -> None:
    emb = Embedder(toy_model_path, mix=ScalarMix([0.0, 1.0, 2.0], do_layer_norm=True))
    alone = emb.embed_sentence(["a", "b"])
    together = emb.embed_batch([["zzzz"] * 9, ["a", "b"], ["q"]])[1]
    np.testing.assert_array_equal(alone, together)


# ---------------------------------------------------------------- default model


def test_the_bundled_default_model() -> None:
    path = default_model_path()
    assert path.name == "default.onnx" and path.is_file()


def test_no_bundled_default_model(no_bundled_models: Path) -> None:
    """An installation without the model files says so, in one line, and what to pass."""
    with pytest.raises(ModelError) as e:
        default_model_path()
    assert one_line_error(e) == "no bundled default model in this installation; pass --model PATH"
    with pytest.raises(ModelError, match="no bundled default model"):
        Embedder()


# ---------------------------------------------------------------- the real (bilm-tf) model


def test_stateful_rows_reproduce_bilm_tf(tiny: Embedder, bilm_fixtures: Path) -> None:
    """bilm-tf ran batch i = (sentence i of list 0, 1, 2), carrying states by row."""
    h5py = pytest.importorskip("h5py")
    lists = json.loads((bilm_fixtures / "lm_embeddings_sentences.json").read_text())
    expected = []
    for k in range(3):
        with h5py.File(bilm_fixtures / f"lm_embeddings_{k}.hdf5", "r") as f:
            expected.append([f[str(i)][...] for i in range(len(lists[k]))])
    batches = [[s.split() for s in batch] for batch in zip(*lists, strict=True)]
    emb = Embedder(tiny.model_path, stateful=True, provider="cpu", threads=1)
    by_batch = [emb.embed_batch(b) for b in batches]
    emb.reset_states()
    streamed = list(emb.embed_sentences([s for b in batches for s in b], batch_size=3))
    p = tiny.info.options.projection_dim
    for i, outs in enumerate(by_batch):
        for k, out in enumerate(outs):
            top = np.stack([out[-1][:, :p], out[-1][:, p:]])
            np.testing.assert_allclose(top, expected[k][i], atol=1e-5)
            np.testing.assert_array_equal(streamed[3 * i + k], out)
    stateless = tiny.embed_sentence(batches[1][0])
    assert not np.allclose(stateless, by_batch[1][0], atol=1e-4)  # the state mattered


def test_real_model_shapes_and_padding_independence(tiny: Embedder) -> None:
    o = tiny.info.options
    sentences = random_sentences(40, seed=3)
    outs = list(tiny.embed_sentences(sentences, batch_size=8))
    for tokens, out in zip(sentences, outs, strict=True):
        assert out.shape == (o.n_output_layers, len(tokens), o.output_dim)
    for i in (0, 7, 21):
        np.testing.assert_allclose(outs[i], tiny.embed_sentence(sentences[i]), atol=1e-5)
    # layer 0 is [x; x]
    np.testing.assert_array_equal(
        outs[0][0, :, : o.projection_dim], outs[0][0, :, o.projection_dim :]
    )


def test_long_tokens_are_truncated_to_their_first_bytes(tiny: Embedder) -> None:
    width = tiny.info.max_chars - 2
    long = "ab" * 40
    a, b = tiny.embed_batch([[long, "x"], [long[:width], "x"]])
    np.testing.assert_array_equal(a, b)
    c = tiny.embed_sentence([long[: width - 1], "x"])
    assert not np.allclose(a, c)


def test_control_characters_stay_inside_tokens(tiny: Embedder) -> None:
    a = tiny.embed_sentence(["a\x01b", "\x00"])
    assert a.shape[1] == 2
    assert not np.allclose(a, tiny.embed_sentence(["ab", "\x00"]))
    ids = chars.tokens_to_ids(["a\x01b"])
    assert ids[0, 2] == 1 + 1  # byte 0x01, shifted


def test_a_5000_token_line(tiny: Embedder) -> None:
    out = tiny.embed_sentence(["word"] * 5000)
    assert out.shape == (3, 5000, tiny.info.options.output_dim)
    assert np.isfinite(out).all()


def test_default_step_cap_follows_the_lstm_width() -> None:
    """Wide LSTMs get fewer padded steps per batch (bounded activation memory)."""
    from elmo_runtime.batching import DEFAULT_MAX_TOKENS, max_tokens_for

    assert max_tokens_for(64) == DEFAULT_MAX_TOKENS  # small models: the plain cap
    assert max_tokens_for(512) == 4096  # the bundled model
    assert max_tokens_for(4096) == 512  # original ELMo: 512 x 16,384 floats = 32 MiB
    assert max_tokens_for(10**6) == 256


def test_default_step_cap_of_a_model(toy_model_path: Path) -> None:
    from elmo_runtime.batching import max_tokens_for

    emb = Embedder(toy_model_path)
    assert emb.max_tokens_per_batch == max_tokens_for(emb.info.options.lstm_dim)


def test_literal_boundary_tokens_give_the_boundary_vectors(tiny: Embedder) -> None:
    """A text holding "<S>" / "</S>" gets bilm-tf's vectors (issue 12): the whole sentence
    equals the graph fed the spec's boundary rows, written out by hand, at those steps."""
    sentence = ["<S>", "The", "cat", "</S>", "sat"]
    got = tiny.embed_sentence(sentence)
    bos = np.array([259, 257, 260] + [261] * 47, np.int32)  # docs/elmo-spec.md <S>, shifted
    eos = np.array([259, 258, 260] + [261] * 47, np.int32)
    words = chars.tokens_to_ids(["The", "cat", "sat"])
    token_chars = np.stack([bos, eos, *words])
    # steps: <S> | <S> The cat </S> sat | </S>
    index = np.array([[0, 0, 2, 3, 1, 4, 1]], np.int32)
    layers = tiny._session.run([contract.OUTPUT_LAYERS], {
        contract.INPUT_TOKEN_CHARS: token_chars, contract.INPUT_TOKEN_INDEX: index})[0]
    np.testing.assert_allclose(got, layers[0, :, 1:6], atol=1e-6, rtol=0)
    # spelled out as characters (the old behaviour) the whole sentence shifts
    spelled = np.stack([bos, eos, *chars.tokens_to_ids(["The", "cat", "sat"]), words[0]])
    spelled[5] = [259, 61, 84, 63, 260] + [261] * 45  # "<S>" as the bytes < S >
    index_spelled = np.array([[0, 5, 2, 3, 1, 4, 1]], np.int32)
    other = tiny._session.run([contract.OUTPUT_LAYERS], {
        contract.INPUT_TOKEN_CHARS: spelled, contract.INPUT_TOKEN_INDEX: index_spelled})[0]
    assert np.abs(other[0, :, 1:6] - got).max() > 1e-2
    # the same through the token cache (a second call hits it)
    np.testing.assert_allclose(tiny.embed_sentence(sentence), got, atol=1e-6, rtol=0)


def test_embedder_exposes_what_it_resolved(toy_model_path: Path, tmp_path: Path) -> None:
    emb = Embedder(str(toy_model_path), mix="average")
    assert emb.model_path == toy_model_path
    assert emb.info.options.n_output_layers == TOY_LAYERS
    assert isinstance(emb.mix, ScalarMix) and emb.mix.gamma == 1.0
    assert Embedder(toy_model_path).mix is None  # all layers
