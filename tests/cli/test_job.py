"""`elmo embed` as a job: input kinds, refusals, keys, one Embedder (issue 11 §5, issue 12 §2-3)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from elmo_runtime.cli import count_lines
from elmo_runtime.corpus import read_lines, split_cr
from elmo_runtime.embedder import Embedder
from elmo_runtime.errors import InputError, UsageError
from elmo_runtime.mix import ScalarMix, save_mix
from elmo_runtime.output.job import EmbedJob
from elmo_runtime.output.shards import iter_vectors
from elmo_runtime.settings import EmbedderSettings
from elmo_runtime.tokenize import tokenize
from support.cli import run_elmo as run
from support.cli import write_input
from support.errors import one_line_error

h5py = pytest.importorskip("h5py")


def npz(path: Path) -> tuple[list[np.ndarray], dict[str, str]]:
    with np.load(path, allow_pickle=False) as z:
        n = len(z.files) - 1
        return [z[str(i)] for i in range(n)], json.loads(z["sentence_to_index"].item())


def listing(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


# ---------------------------------------------------------------- sentence_to_index keys


KEYED = b"a  b\n a\tb \nsolo\n\na  b\n"  # two spaces, a tab, padding, a duplicate


@pytest.mark.parametrize("fmt", ["hdf5", "npz", "shards"])
def test_sentence_to_index_is_keyed_by_the_stripped_line(
    toy_model_path: Path, tmp_path: Path, fmt: str
) -> None:
    """As AllenNLP's `elmo` command: line.strip() -> index, the last duplicate wins."""
    src = write_input(tmp_path, KEYED)
    expected = {"a  b": "4", "a\tb": "1", "solo": "2", "": "3"}
    if fmt == "shards":
        out = tmp_path / "out"
        assert run("embed", src, out, "-m", toy_model_path, "--shard-size", 2).exit_code == 0
        index: dict[str, str] = {}
        for shard in sorted(out.glob("shard-*.hdf5")):
            with h5py.File(shard, "r") as f:
                index |= json.loads(f["sentence_to_index"][0])
    else:
        out = tmp_path / f"out.{fmt}"
        assert run("embed", src, out, "-m", toy_model_path).exit_code == 0
        if fmt == "npz":  # the documented way to read it back
            with np.load(out, allow_pickle=False) as z:
                index = json.loads(z["sentence_to_index"].item())
        else:
            with h5py.File(out, "r") as f:
                index = json.loads(f["sentence_to_index"][0])
    assert index == expected
    assert index["a  b"] == "4" and index["a\tb"] == "1"  # no KeyError on the raw line


# ---------------------------------------------------------------- input kinds


def test_lone_surrogates_in_the_python_api(toy_model_path: Path) -> None:
    emb = Embedder(toy_model_path)
    bad = os.fsdecode(b"caf\x80")  # 'caf\udc80'
    with pytest.raises(InputError, match=r"sentence 1: token 0 .*UTF-8"):
        emb.embed_batch([["fine"], [bad, "x"]])
    with pytest.raises(InputError, match=r"sentence 1: token 0"):
        list(emb.embed_sentences([["fine"], [bad]]))
    fixed = bad.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    assert fixed == "caf\ufffd"  # the documented replacement, as --errors replace reads b"caf\x80"
    np.testing.assert_array_equal(emb.embed_sentence([fixed]), emb.embed_sentence(["caf\ufffd"]))


@pytest.mark.parametrize("shards", [False, True])
def test_encoded_surrogates_in_a_file(toy_model_path: Path, tmp_path: Path, shards: bool) -> None:
    """UTF-8-encoded surrogates are invalid UTF-8: the line and column, or U+FFFD."""
    src = write_input(tmp_path, b"ok\nab \xed\xb2\x80 c\n")
    out = tmp_path / ("out" if shards else "out.npz")
    extra = ["--shard-size", 5] if shards else []
    result = run("embed", src, out, "-m", toy_model_path, *extra)
    one_line_error(result, f"{src}:2: invalid UTF-8 (byte 0xed at column 4)")
    result = run("embed", src, out, "-m", toy_model_path, "--errors", "replace", *extra)
    assert result.exit_code == 0, result.output
    if not shards:
        assert npz(out)[1] == {"ok": "0", "ab \ufffd\ufffd\ufffd c": "1"}
    else:
        assert [v.shape[1] for _, v in iter_vectors(out)] == [1, 3]


def test_the_ray_actor_refuses_lone_surrogates(toy_model_path: Path) -> None:
    from elmo_runtime.output.ray_engine import EmbedBatches

    class Column:
        def to_pylist(self) -> list[str]:
            return ["fine", "a \udc80b"]

    class Batch:
        def column(self, name: str) -> Column:
            return Column()

    actor = EmbedBatches(EmbedderSettings(str(toy_model_path), provider="cpu", threads=1,
                                          batch_size=8).to_dict(), "float32")
    with pytest.raises(InputError, match="sentence 1: token 1"):
        actor(Batch())


@pytest.mark.parametrize("how", ["same", "symlink", "hardlink"])
def test_an_output_that_is_the_input_is_refused(
    toy_model_path: Path, tmp_path: Path, how: str
) -> None:
    src = write_input(tmp_path, b"a b\nc\n")
    out = src
    if how == "symlink":
        out = tmp_path / "link.hdf5"
        out.symlink_to(src)
    elif how == "hardlink":
        out = tmp_path / "hard.hdf5"
        os.link(src, out)
    before = listing(tmp_path)
    result = run("embed", src, out, "-m", toy_model_path)
    one_line_error(result, f"{out}: is the input {src} (the same file)")
    assert listing(tmp_path) == before  # nothing touched, nothing added


@pytest.mark.parametrize(
    "flags",
    [["--top", "--average"], ["--average", "--top"], ["--top", "--all"], ["--all", "--average"]],
)
def test_two_mixes_are_a_usage_error(toy_model_path: Path, tmp_path: Path, flags: list) -> None:
    src = write_input(tmp_path, b"a\n")
    result = run("embed", src, tmp_path / "o.npz", "-m", toy_model_path, *flags)
    assert result.exit_code == 2
    line = result.stderr.strip().splitlines()[-1]
    assert line.endswith("cannot be combined; choose one of --all, --top, --average or --mix FILE")
    assert all(flag in line.split("cannot")[0] for flag in flags)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]


@pytest.mark.parametrize(
    ("name", "fmt"), [("out.npz", "hdf5"), ("out.hdf5", "npz"), ("out.parquet", "npz")]
)
def test_an_extension_of_another_format_is_refused(
    toy_model_path: Path, tmp_path: Path, name: str, fmt: str
) -> None:
    src = write_input(tmp_path, b"a\n")
    result = run("embed", src, tmp_path / name, "-m", toy_model_path, "--format", fmt)
    assert result.exit_code == 2
    assert f"the extension says {name.split('.')[1]} but --format is {fmt}" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]


def test_an_unknown_extension_is_refused(toy_model_path: Path, tmp_path: Path) -> None:
    """Issue 24: `elmo embed a.txt b.txt` with an existing text file b.txt left it hdf5."""
    a = write_input(tmp_path, b"a\n")
    b = tmp_path / "b.txt"
    b.write_bytes(b"b c\n")
    result = run("embed", a, b, "-m", toy_model_path)
    assert result.exit_code == 2
    assert (f"{b}: the output name ends in none of .hdf5, .h5, .npz, .parquet, .pq; name the "
            "file *.hdf5 (or pass --format), and give one INPUT") in result.stderr
    assert b.read_bytes() == b"b c\n"
    out = tmp_path / "x.out"
    quiet = run("embed", a, out, "-m", toy_model_path, "--format", "npz")
    assert quiet.exit_code == 0 and "Warning" not in quiet.stderr


def test_a_mix_file_given_as_str(toy_model_path: Path, tmp_path: Path) -> None:
    path = tmp_path / "mix.json"
    save_mix(path, ScalarMix([0.0, 1.0, 2.0], gamma=0.5))
    by_str = Embedder(toy_model_path, mix=str(path)).embed_sentence(["a", "b"])
    by_path = Embedder(toy_model_path, mix=path).embed_sentence(["a", "b"])
    assert by_str.shape == (2, 4)
    np.testing.assert_array_equal(by_str, by_path)
    with pytest.raises(Exception, match="not one of all, top, average and no such mix file"):
        Embedder(toy_model_path, mix=str(tmp_path / "missing.json"))


@pytest.mark.parametrize("layout", ["file", "shards", "stdin"])
def test_empty_input_says_nothing_was_embedded(
    toy_model_path: Path, tmp_path: Path, layout: str
) -> None:
    src = write_input(tmp_path, b"", "empty.txt")
    out = tmp_path / ("out" if layout == "shards" else "out.npz")
    extra = ["--shard-size", 3] if layout == "shards" else []
    name = "-" if layout == "stdin" else src
    result = run("embed", name, out, "-m", toy_model_path, *extra, input=b"")
    assert result.exit_code == 0, result.output
    where = "stdin" if layout == "stdin" else str(src)
    assert result.stderr.strip() == f"nothing was embedded: {where} has no lines (wrote an " \
        f"empty {out})"


def test_cr_only_line_endings_are_line_breaks(
    toy_model_path: Path, tmp_path: Path, toy: Callable
) -> None:
    data = b"a b\rc\r\rd\r\ne\rf"
    src = write_input(tmp_path, data, "mac.txt")
    out = tmp_path / "out.npz"
    assert run("embed", src, out, "-m", toy_model_path).exit_code == 0
    arrays, index = npz(out)
    assert index == {"a b": "0", "c": "1", "": "2", "d": "3", "e": "4", "f": "5"}
    np.testing.assert_array_equal(arrays[1], toy(["c"]))
    assert count_lines(str(src)) == 6 == len(arrays)
    assert split_cr(b"x\r\n") == [b"x\r\n"] and split_cr(b"x\ry\r") == [b"x\r", b"y\r"]
    assert [line.tokens for line in read_lines([b"a\rb\n"], "x")] == [["a"], ["b"]]


def test_tokenize_raw_text(toy_model_path: Path, tmp_path: Path, toy: Callable) -> None:
    text = "Don't stop, Mr. O'Brien!\n  3.14 e.g. know-how \n"
    src = tmp_path / "raw.txt"
    src.write_text(text, encoding="utf-8")
    out = tmp_path / "out.npz"
    result = run("embed", src, out, "-m", toy_model_path, "--tokenize")
    assert result.exit_code == 0, result.output
    arrays, index = npz(out)
    lines = text.splitlines()
    assert tokenize(lines[0]) == ["Do", "n't", "stop", ",", "Mr", ".", "O'Brien", "!"]
    for i, line in enumerate(lines):
        np.testing.assert_array_equal(arrays[i], toy(tokenize(line)))
    assert index == {lines[0]: "0", lines[1].strip(): "1"}  # keys stay the raw lines


def test_the_embedder_is_built_once(
    toy_model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[object] = []
    real = Embedder._load

    def counting(self, settings, file) -> None:
        built.append(settings.mix.source)
        real(self, settings, file)

    monkeypatch.setattr(Embedder, "_load", counting)
    src = write_input(tmp_path, b"a\nb\nc\n")
    mix = tmp_path / "mix.json"
    save_mix(mix, ScalarMix([0.0, 0.0, 1.0]))
    assert run("embed", src, tmp_path / "o.npz", "-m", toy_model_path, "--mix", mix).exit_code == 0
    assert run("embed", src, tmp_path / "d", "-m", toy_model_path, "--shard-size", 1,
               "--mix", mix).exit_code == 0
    assert built == [str(mix), str(mix)]  # once per run, from the one resolved setting


def test_the_job_checks_before_loading_anything(tmp_path: Path) -> None:
    src = write_input(tmp_path, b"a\n")
    job = EmbedJob((str(src),), str(tmp_path / "d"), EmbedderSettings(stateful=True),
                   engine="ray")
    with pytest.raises(UsageError, match="--stateful needs the local engine"):
        job.check()
    job = EmbedJob((str(src),), str(tmp_path / "o.npz"), actors=2)
    with pytest.raises(UsageError, match="--actors need --engine ray"):
        job.check()
    assert EmbedJob((str(src),), str(tmp_path / "d") + "/").layout == "shards"
    assert EmbedJob((str(src),), str(tmp_path / "o.npz")).layout == "file"
    assert list(tmp_path.iterdir()) == [src]
