"""Memory bounded per line (breaker finding 4): a line over MAX_LINE_BYTES is refused while
it is read, a sentence over MAX_TOKENS tokens is refused, by the CLI (NAME:LINE) and by
the Python API, in one line."""

from __future__ import annotations

import io
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from elmo_runtime import corpus
from elmo_runtime.corpus import MAX_LINE_BYTES, MAX_TOKENS, iter_lines, read_lines
from elmo_runtime.embedder import Embedder
from elmo_runtime.errors import InputError
from elmo_runtime.output.ray_engine import EmbedBatches, split_lines
from elmo_runtime.settings import EmbedderSettings
from support.cli import run_elmo as run
from support.errors import one_line_error


def test_a_line_over_the_byte_limit_is_refused_with_its_number(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(corpus, "MAX_LINE_BYTES", 16)
    stream = io.BytesIO(b"short\n" + b"x" * 40 + b"\nnext\n")
    lines = iter_lines(stream, "in.txt")
    assert next(lines) == b"short\n"
    with pytest.raises(InputError, match=r"^in\.txt:2: a line longer than 16 bytes"):
        next(lines)


@pytest.mark.parametrize("seed", range(20))
def test_bounded_reading_splits_lines_as_before(monkeypatch: pytest.MonkeyPatch,
                                                seed: int) -> None:
    """Lines within the limit, any mix of \\n, \\r\\n and lone \\r, cut at any read size."""
    monkeypatch.setattr(corpus, "MAX_LINE_BYTES", 16)
    rng = random.Random(seed)
    data = b"".join(
        bytes(rng.choice(b"ab ") for _ in range(rng.randint(0, 14)))
        + rng.choice([b"\n", b"\r\n", b"\r"])
        for _ in range(200)
    )
    unbounded = list(iter_lines(list(io.BytesIO(data))))  # a list: no readline, no limit
    assert list(iter_lines(io.BytesIO(data))) == unbounded


def test_too_many_tokens_name_the_line() -> None:
    with pytest.raises(InputError, match=r"^in\.txt:2: 3 tokens, more than 2 "):
        list(read_lines(io.BytesIO(b"a b\nc d e\n"), "in.txt", max_tokens=2))


def test_the_api_refuses_a_sentence_over_max_tokens(toy_model_path: Path) -> None:
    emb = Embedder(toy_model_path)
    with pytest.raises(InputError, match=f"sentence 0: {MAX_TOKENS + 1} tokens, more than "
                                         f"{MAX_TOKENS}"):
        emb.embed_sentence(["w"] * (MAX_TOKENS + 1))


def test_elmo_embed_refuses_a_long_line_and_writes_nothing(toy_model_path: Path,
                                                          tmp_path: Path) -> None:
    text = tmp_path / "in.txt"
    text.write_text("a short line\n" + "w " * (MAX_TOKENS + 1) + "\n", encoding="utf-8")
    out = tmp_path / "o.npz"
    result = run("embed", text, out, "--model", toy_model_path)
    one_line_error(result, f"{text}:2: {MAX_TOKENS + 1} tokens, more than {MAX_TOKENS}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_elmo_embed_of_an_endless_line_stops_at_the_limit(toy_model_path: Path,
                                                         tmp_path: Path) -> None:
    out = tmp_path / "o.npz"
    result = run("embed", "/dev/zero", out, "--model", toy_model_path)
    one_line_error(result, f"/dev/zero:1: a line longer than {MAX_LINE_BYTES} bytes")
    assert not out.exists()


# ---------------------------------------------------------------- the Ray engine's reader


def _lines_or_error(lines: Iterator[bytes]) -> list[bytes] | str:
    try:
        return list(lines)
    except InputError as e:
        return str(e)


@pytest.mark.parametrize("block_size", [1, 5, 16, 17, 64, 1 << 20])
def test_the_ray_reader_is_bounded_as_the_local_one(monkeypatch: pytest.MonkeyPatch,
                                                    block_size: int) -> None:
    """Same lines, or the same error (same line number), for lines of any ending; lengths
    stay off the limit's edge (a CRLF line of exactly the limit is refused by one reader)."""
    monkeypatch.setattr(corpus, "MAX_LINE_BYTES", 16)
    outcomes = set()
    for seed in range(40):
        rng = random.Random(seed)
        long = 0.0 if seed % 2 else 0.05  # odd seeds: every line within the limit
        data = b"".join(
            bytes(rng.choice(b"ab ") for _ in range(
                rng.randint(18, 40) if rng.random() < long else rng.randint(0, 14)))
            + rng.choice([b"\n", b"\r\n", b"\r"])
            for _ in range(rng.randint(1, 60))
        )
        local = _lines_or_error(iter_lines(io.BytesIO(data), "in.txt"))
        ray = _lines_or_error(iter_lines(split_lines(io.BytesIO(data).read, block_size,
                                                     "in.txt")))
        if isinstance(local, list):  # split_lines drops the "\n"s the local reader keeps
            local = [line.removesuffix(b"\n") for line in local]
        assert ray == local, seed
        outcomes.add(isinstance(local, str))
    assert outcomes == {True, False}


def test_the_ray_reader_stops_an_endless_line() -> None:
    zeros = io.BytesIO(b"ok\r" + b"\0" * (MAX_LINE_BYTES + 1))
    with pytest.raises(InputError, match=rf"^/dev/zero:2: a line longer than {MAX_LINE_BYTES} "):
        list(split_lines(zeros.read, 1 << 20, "/dev/zero"))
    old_mac = io.BytesIO(b"w\r" * (MAX_LINE_BYTES // 2 + 8))  # one "\n"-line, short CR lines
    assert sum(1 for _ in iter_lines(split_lines(old_mac.read))) == MAX_LINE_BYTES // 2 + 8


def test_ray_batches_name_the_line_of_a_long_sentence(monkeypatch: pytest.MonkeyPatch,
                                                      toy_model_path: Path) -> None:
    pa = pytest.importorskip("pyarrow", reason="the Ray engine's batches are Arrow tables")
    monkeypatch.setattr(corpus, "MAX_TOKENS", 3)
    embed = EmbedBatches(EmbedderSettings(str(toy_model_path), provider="cpu", threads=1,
                                          batch_size=8).to_dict(), "float32")
    batch = pa.table({"path": ["in.txt"] * 2, "line": [4, 5], "text": ["a b c", "a b c d"]})
    with pytest.raises(InputError, match=r"^in\.txt:6: 4 tokens, more than 3 \(the most"):
        embed(batch)
    assert embed(batch.slice(0, 1)).num_rows == 1
    embed(pa.table({"text": ["a b c d"]}))  # not from read_lines: the Embedder's own bound
