"""Corpus indexing, vocabularies, line orders and the bilm-tf stream batches."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from elmo_export.train.data import (  # noqa: E402
    BOS,
    EOS,
    SPECIAL_TOKENS,
    DataError,
    SequentialOrder,
    ShuffledOrder,
    Streams,
    Vocab,
    build_vocab,
    scan_corpus,
)
from elmo_runtime.format.chars import batch_to_ids, tokens_to_ids  # noqa: E402

LINES = ["a b c", "", "d e", "   ", "f g h i"]


@pytest.fixture
def corpus_file(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    return path


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_scan_indexes_non_blank_lines_across_files(tmp_path: Path, corpus_file: Path) -> None:
    second = write(tmp_path / "b.txt", "x y\n\nz")  # no final newline
    counts: Counter[str] = Counter()
    corpus = scan_corpus([corpus_file, second], counts=counts)
    try:
        assert len(corpus) == 5
        assert corpus.n_tokens == 3 + 2 + 4 + 2 + 1
        assert [corpus.sentence(i) for i in range(5)] == [
            ["a", "b", "c"], ["d", "e"], ["f", "g", "h", "i"], ["x", "y"], ["z"]
        ]
        assert counts["a"] == 1 and sum(counts.values()) == corpus.n_tokens
    finally:
        corpus.close()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty corpus"),
        ("\n  \n\t\n", "only blank lines (3)"),
        (b"ok\nbad \xff byte\n", "c.txt:2: invalid UTF-8 (byte 0xff at column 5)"),
    ],
)
def test_scan_rejects_unusable_corpora(tmp_path: Path, content: str | bytes, message: str) -> None:
    path = write(tmp_path / "c.txt", content)
    with pytest.raises(DataError, match="^.*" + message.replace("(", r"\(").replace(")", r"\)")):
        scan_corpus([path])


def test_scan_rejects_missing_files_and_directories(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such corpus file"):
        scan_corpus([tmp_path / "nope.txt"])
    with pytest.raises(DataError, match="is a directory"):
        scan_corpus([tmp_path])


def test_build_vocab_puts_specials_first_then_frequency() -> None:
    counts = Counter(["the", "cat", "the", "dog", "the", "cat", "ant"])
    assert build_vocab(counts).tokens == [*SPECIAL_TOKENS, "the", "cat", "ant", "dog"]
    assert build_vocab(counts, max_size=5).tokens == [*SPECIAL_TOKENS, "the", "cat"]
    with pytest.raises(DataError, match="must exceed 3"):
        build_vocab(counts, max_size=3)


def test_vocab_file_needs_the_special_tokens(tmp_path: Path) -> None:
    path = write(tmp_path / "vocab.txt", "<S>\nthe\ncat\n")
    with pytest.raises(DataError, match=r"vocab.txt: the special tokens </S>, <UNK> are missing"):
        Vocab.from_file(path)
    with pytest.raises(DataError, match="token 'the' appears twice"):
        Vocab.from_file(write(tmp_path / "dup.txt", "<S>\n</S>\n<UNK>\nthe\nthe\n"))
    vocab = Vocab.from_file(write(tmp_path / "ok.txt", "<S>\n</S>\n<UNK>\nthe\n\n"))
    assert len(vocab) == 4 and vocab.id("the") == 3 and vocab.id("zebra") == vocab.unk


def test_shuffled_order_reshuffles_each_epoch_and_shards_by_rank() -> None:
    order = ShuffledOrder(10, seed=3)
    epochs = [[order.next() for _ in range(10)] for _ in range(3)]
    assert all(sorted(e) == list(range(10)) for e in epochs)
    assert epochs[0] != epochs[1] != epochs[2]
    shards = [ShuffledOrder(10, seed=3, rank=r, world=2) for r in range(2)]
    taken = [[s.next() for _ in range(5)] for s in shards]
    assert sorted(taken[0] + taken[1]) == list(range(10))
    with pytest.raises(DataError, match="fewer than the 4 training processes"):
        ShuffledOrder(3, seed=0, rank=0, world=4)


def test_streams_follow_bilm_tf(corpus_file: Path) -> None:
    corpus = scan_corpus([corpus_file])
    vocab = build_vocab(Counter(["a", "b", "c", "d", "e", "f", "g", "h", "i"]))
    streams = Streams(corpus, vocab, SequentialOrder(len(corpus)), rows=1, unroll=4, max_chars=50)
    fwd_tokens, bwd_tokens, fwd_targets, bwd_targets = [], [], [], []
    while (batch := streams.next_batch()) is not None:
        ids = batch.char_ids
        assert not ids[0].any()  # row 0: "no token"
        n = int(batch.mask[0].sum())
        for d, (tokens, targets) in enumerate(
            ((fwd_tokens, fwd_targets), (bwd_tokens, bwd_targets))
        ):
            rows = ids[batch.inputs[d, 0, :n]]
            tokens.extend(rows.tolist())
            targets.extend(batch.targets[d, 0, :n].tolist())
    sentences = [s.split() for s in ("a b c", "d e", "f g h i")]
    boundaries = batch_to_ids([[]], 50)[0][0]

    def char_rows(tokens: list[str]) -> list[list[int]]:
        out = []
        for t in tokens:
            special = {BOS: boundaries[0], EOS: boundaries[1]}.get(t)
            out.append((special if special is not None else tokens_to_ids([t], 50)[0]).tolist())
        return out

    fwd = [t for s in sentences for t in [BOS, *s, EOS]]
    bwd = [t for s in sentences for t in [EOS, *reversed(s), BOS]]
    assert fwd_tokens == char_rows(fwd)
    assert bwd_tokens == char_rows(bwd)

    def expected_targets(stream: list[str], start: str) -> list[int]:
        nxt = stream[1:] + [None]
        return [-1 if t is None or t == start else vocab.id(t) for t in nxt]

    # each sentence start follows the previous sentence's end: never a target
    assert fwd_targets == expected_targets(fwd, BOS)
    assert bwd_targets == expected_targets(bwd, EOS)
    assert sum(t >= 0 for t in fwd_targets) == sum(len(s) + 1 for s in sentences)


def test_streams_resume_from_their_state(corpus_file: Path) -> None:
    corpus = scan_corpus([corpus_file])
    vocab = build_vocab(Counter(["a", "b", "c", "d"]))

    def make() -> Streams:
        return Streams(corpus, vocab, ShuffledOrder(len(corpus), seed=1), rows=2, unroll=3,
                       max_chars=50)

    a = make()
    for _ in range(5):
        a.next_batch()
    b = make()
    b.restore(a.state())
    for _ in range(6):
        x, y = a.next_batch(), b.next_batch()
        assert all(np.array_equal(u, v) for u, v in zip(x, y, strict=True))
    assert a.order.epoch > 0  # went round the corpus


def test_vocab_file_with_a_bom_and_a_count_column(tmp_path: Path) -> None:
    """Issue 17: a BOM before <S> is no token; 'token count' lines are token and count."""
    bom = write(tmp_path / "bom.txt", b"\xef\xbb\xbf<S>\n</S>\n<UNK>\nthe\n")
    assert Vocab.from_file(bom).tokens == [*SPECIAL_TOKENS, "the"]
    counted = write(tmp_path / "counts.txt", "\ufeff<S> 0\n</S> 0\n<UNK> 3\nthe 120\nof 7\n")
    vocab = Vocab.from_file(counted)
    assert vocab.tokens == [*SPECIAL_TOKENS, "the", "of"] and vocab.id("of") == 4
    spaced = write(tmp_path / "spaced.txt", "<S>\n</S>\n<UNK>\nNew York\nof 120 x\n")
    with pytest.raises(DataError, match=r"spaced.txt:4: 'New York' is not a token"):
        Vocab.from_file(spaced)
    with pytest.raises(DataError, match=r"token 4 'of 120' is empty or holds whitespace"):
        Vocab([*SPECIAL_TOKENS, "of 120"])


def test_scan_skips_a_bom(tmp_path: Path) -> None:
    path = write(tmp_path / "bom.txt", b"\xef\xbb\xbfa b\nc\n")
    counts: Counter[str] = Counter()
    corpus = scan_corpus([path], counts=counts)
    try:
        assert [corpus.sentence(i) for i in range(2)] == [["a", "b"], ["c"]]
        assert counts == Counter({"a": 1, "b": 1, "c": 1})
    finally:
        corpus.close()
