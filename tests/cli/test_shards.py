"""Sharded, resumable `elmo embed` into a directory: manifest, resume, corruption, refusals."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import Result
from elmo_runtime.format import contract
from elmo_runtime.output.shards import MANIFEST, iter_vectors, read_manifest
from support.cli import elmo_command, run_interrupted, write_input
from support.cli import run_elmo as run
from support.errors import one_line_error
from support.models import TOY_OPTIONS, toy_model

h5py = pytest.importorskip("h5py")

LINES = b"The cat sat\n\nhello  world\nx\ny z\nw\nlast one here\na b\n"


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output
    return result


def single_file(path: Path) -> list[np.ndarray]:
    with h5py.File(path, "r") as f:
        return [f[str(i)][...] for i in range(len(f) - 1)]


def assert_same(directory: Path, expected: list[np.ndarray]) -> None:
    got = list(iter_vectors(directory))
    assert [line for line, _ in got] == list(range(len(expected)))
    for (_, a), e in zip(got, expected, strict=True):
        assert a.dtype == e.dtype
        np.testing.assert_array_equal(a, e)


Corpus = tuple[Path, list[np.ndarray]]  # the input file, its vectors from a single-file run


@pytest.fixture
def corpus(tmp_path: Path, toy_model_path: Path) -> Corpus:
    """The input file and its vectors from a plain single-file run."""
    src = write_input(tmp_path, LINES)
    ok(run("embed", src, tmp_path / "single.hdf5", "-m", toy_model_path))
    return src, single_file(tmp_path / "single.hdf5")


def shard_run(corpus: Corpus, model: Path, *options: object
              ) -> tuple[Path, list[np.ndarray], Path, tuple[object, ...]]:
    """The corpus's input and vectors, the output directory ``out`` next to the input and the
    arguments of `elmo embed` writing it with ``model`` and ``options``."""
    src, expected = corpus
    out = src.parent / "out"
    return src, expected, out, ("embed", src, out, "-m", model, *options)


def partials(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if ".partial-" in p.name]


# ---------------------------------------------------------------- layout


@pytest.mark.parametrize("fmt", ["hdf5", "npz", "parquet"])
def test_shards_hold_what_the_single_file_holds(
    corpus: Corpus, toy_model_path: Path, fmt: str
) -> None:
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    src, expected, out, args = shard_run(corpus, toy_model_path, "--shard-size", 3, "--format", fmt)
    result = ok(run(*args))
    assert "wrote 8 sentences in 3 shards" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        MANIFEST,
        *(f"shard-0000{i}.{fmt}" for i in range(3)),
    ]
    manifest = read_manifest(out)
    assert manifest["complete"] and manifest["lines"] == 8
    assert [(s["first_line"], s["lines"]) for s in manifest["shards"]] == [(0, 3), (3, 3), (6, 2)]
    assert manifest["settings"]["format"] == fmt
    assert_same(out, expected)


def test_hdf5_shard_is_allennlp_layout_keyed_by_input_line(
    corpus: Corpus, toy_model_path: Path
) -> None:
    src, expected, out, args = shard_run(corpus, toy_model_path, "--shard-size", 3)
    ok(run(*args))
    with h5py.File(out / "shard-00001.hdf5", "r") as f:
        assert sorted(f.keys()) == ["3", "4", "5", "sentence_to_index"]
        assert json.loads(f["sentence_to_index"][0]) == {"x": "3", "y z": "4", "w": "5"}
        np.testing.assert_array_equal(f["4"][...], expected[4])


def test_a_directory_output_is_sharded(corpus: Corpus, toy_model_path: Path) -> None:
    src, expected = corpus
    ok(run("embed", src, f"{src.parent / 'new'}/", "-m", toy_model_path))
    (src.parent / "existing").mkdir()
    ok(run("embed", src, src.parent / "existing", "-m", toy_model_path))
    for name in ("new", "existing"):
        assert read_manifest(src.parent / name)["settings"]["shard_size"] == 10_000
        assert_same(src.parent / name, expected)


def test_empty_input(tmp_path: Path, toy_model_path: Path) -> None:
    src = write_input(tmp_path, b"", "empty.txt")
    ok(run("embed", src, tmp_path / "out", "-m", toy_model_path, "--shard-size", 2))
    assert read_manifest(tmp_path / "out")["lines"] == 0
    assert list(iter_vectors(tmp_path / "out")) == []


def test_float16_halves_the_shards(corpus: Corpus, toy_model_path: Path) -> None:
    src, expected = corpus
    out = src.parent / "half"
    ok(run("embed", src, out, "-m", toy_model_path, "--shard-size", 3, "--dtype", "float16"))
    got = list(iter_vectors(out))
    for (_, a), e in zip(got, expected, strict=True):
        assert a.dtype == np.float16
        np.testing.assert_array_equal(a, e.astype(np.float16))


# ---------------------------------------------------------------- resume


def test_interrupted_run_resumes(
    corpus: Corpus, toy_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, expected, out, args = shard_run(corpus, toy_model_path, "--shard-size", 2)
    result = run_interrupted(monkeypatch, 5, *args)
    one_line_error(result, "interrupted; the complete shards stay in", code=130)
    assert "run the same command again to resume" in result.stderr
    manifest = read_manifest(out)
    assert not manifest["complete"]
    assert [s["file"] for s in manifest["shards"]] == ["shard-00000.hdf5", "shard-00001.hdf5"]
    assert partials(out) == []  # shard 2 was never published
    assert not (out / "shard-00002.hdf5").exists()
    result = ok(run(*args))
    assert "wrote 8 sentences in 4 shards" in result.stderr and "(2 resumed)" in result.stderr
    assert_same(out, expected)
    again = ok(run(*args))
    assert "already complete (8 sentences in 4 shards, verified)" in again.stderr


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_a_corrupted_shard_is_redone(corpus: Corpus, toy_model_path: Path, damage: str) -> None:
    src, expected, out, args = shard_run(corpus, toy_model_path, "--shard-size", 3)
    ok(run(*args))
    shard = out / "shard-00001.hdf5"
    data = bytearray(shard.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
        shard.write_bytes(bytes(data))
    elif damage == "truncate":
        shard.write_bytes(bytes(data[:100]))
    else:
        shard.unlink()
    result = ok(run(*args))
    problem = "is missing" if damage == "delete" else "does not match its checksum"
    assert f"Warning: {shard} {problem}; embedding it again" in result.stderr
    assert "(2 resumed)" in result.stderr
    assert_same(out, expected)


def test_stale_temp_files_of_a_killed_run_are_removed(corpus: Corpus, toy_model_path: Path) -> None:
    src, expected, out, args = shard_run(corpus, toy_model_path, "--shard-size", 3)
    ok(run(*args))
    (out / ".shard-00002.hdf5.partial-99999").write_bytes(b"half a shard")
    (out / f".{MANIFEST}.partial-99999").write_bytes(b"{")
    ok(run(*args))
    assert partials(out) == []
    assert_same(out, expected)


def test_stateful_shards_resume_to_the_same_vectors(
    tmp_path: Path, toy_model_path: Path, toy: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = write_input(tmp_path, b"a a a\nb\nc\nd\ne\n")
    args = ("--stateful", "--batch-size", 2, "--shard-size", 3, "-m", toy_model_path)
    ok(run("embed", src, tmp_path / "whole", *args))
    resumed = tmp_path / "resumed"
    assert run_interrupted(monkeypatch, 4, "embed", src, resumed, *args).exit_code == 130
    ok(run("embed", src, tmp_path / "resumed", *args))
    whole = dict(iter_vectors(tmp_path / "whole"))
    for line, array in iter_vectors(tmp_path / "resumed"):
        np.testing.assert_array_equal(array, whole[line])
    # states carry by row inside a shard and start from zero at each shard
    np.testing.assert_array_equal(whole[2], toy(["c"], 5))  # row 0 after "a a a"
    np.testing.assert_array_equal(whole[3], toy(["d"]))  # shard 1 starts afresh


def test_stdin_resumes_when_given_the_same_lines(
    tmp_path: Path, toy_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    args = ("embed", "-", out, "-m", toy_model_path, "--shard-size", 2)
    assert run_interrupted(monkeypatch, 3, *args, input=LINES).exit_code == 130
    assert "(1 resumed)" in ok(run(*args, input=LINES)).stderr
    one_line_error(run(*args, input=LINES.upper()), "-: lines 1-2 differs from the input")


# ---------------------------------------------------------------- refusals


def test_another_runs_directory_is_refused_unless_overwrite(
    corpus: Corpus, toy_model_path: Path, tmp_path: Path
) -> None:
    src, expected, out, args = shard_run(corpus, toy_model_path, "--shard-size", 3)
    ok(run(*args))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    other_model = tmp_path / "other.onnx"
    onnx.save(
        toy_model(metadata=contract.make_metadata(TOY_OPTIONS, {"kind": "other"})), other_model
    )
    other_input = tmp_path / "other.txt"
    other_input.write_bytes(b"one more line\n" + LINES)  # larger, but not LINES grown
    for args, reason in [
        (("-m", other_model), "a different model file"),
        (("-m", toy_model_path, "--top"), 'mix "all", now "top"'),
        (("-m", toy_model_path, "--dtype", "float16"), 'dtype "float32", now "float16"'),
        (("-m", toy_model_path, "--shard-size", 4), "shard_size 3, now 4"),
        (("-m", toy_model_path, "--format", "npz"), 'format "hdf5", now "npz"'),
    ]:
        shard_size = () if "--shard-size" in args else ("--shard-size", 3)
        result = run("embed", src, out, *shard_size, *args)
        one_line_error(
            result, f"{out}: holds the output of another run ({reason}); pass --overwrite"
        )
    result = run("embed", other_input, out, "-m", toy_model_path, "--shard-size", 3)
    one_line_error(result, f"{other_input}: lines 1-3 differs from the input of the run in {out}")
    smaller = write_input(tmp_path, b"a b\n", "smaller.txt")
    one_line_error(run("embed", smaller, out, "-m", toy_model_path, "--shard-size", 3),
                   "(a different input)")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing touched

    ok(run("embed", src, out, "-m", toy_model_path, "--shard-size", 4, "--top", "--overwrite"))
    assert sorted(p.name for p in out.iterdir()) == [
        MANIFEST,
        "shard-00000.hdf5",
        "shard-00001.hdf5",
    ]
    for (_, a), e in zip(iter_vectors(out), expected, strict=True):
        np.testing.assert_array_equal(a, e[-1])


@pytest.mark.parametrize("last_full", [False, True])
def test_an_input_that_grew_embeds_only_its_new_lines(
    corpus: Corpus, toy_model_path: Path, tmp_path: Path, last_full: bool
) -> None:
    """Issue 24: appending lines to a corpus forced a full --overwrite re-run. The manifest
    knows the earlier lines by the sha256 of each shard's input lines."""
    src, _, out, args = shard_run(corpus, toy_model_path, "--shard-size", 4 if last_full else 3)
    ok(run(*args))
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*")}
    src.write_bytes(LINES + b"one more line\nand another\n")
    result = ok(run(*args))
    # 8 lines: shards of 4+4 (both kept, one new) or 3+3+2 (two kept, the third redone)
    assert result.stderr.strip().endswith("(2 resumed)"), result.stderr
    ok(run("embed", src, tmp_path / "grown.hdf5", "-m", toy_model_path))
    assert_same(out, single_file(tmp_path / "grown.hdf5"))
    now = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*")}
    untouched = ["shard-00000.hdf5", "shard-00001.hdf5"]
    assert [now[n] for n in untouched] == [kept[n] for n in untouched]
    assert read_manifest(out)["inputs"][0]["size"] == src.stat().st_size
    assert ok(run(*args)).stderr.strip().endswith("verified)")


def test_changed_input_of_the_same_size_is_refused(corpus: Corpus, toy_model_path: Path) -> None:
    src, _, out, args = shard_run(corpus, toy_model_path, "--shard-size", 3)
    ok(run(*args))
    src.write_bytes(LINES.replace(b"y z", b"Y Z"))
    one_line_error(run(*args), f"{src}: lines 4-6 differs from the input of the run in {out}")


def test_a_run_that_failed_before_its_first_shard_is_started_afresh(
    tmp_path: Path, toy_model_path: Path
) -> None:
    src = write_input(tmp_path, b"bad \xff\n")
    out = tmp_path / "out"
    args = ("-m", toy_model_path, "--shard-size", 5)
    one_line_error(run("embed", src, out, *args), f"{src}:1: invalid UTF-8")
    assert read_manifest(out)["shards"] == []
    src.write_bytes(b"fixed line\n")  # another size, but nothing was kept from the first try
    ok(run("embed", src, out, *args))
    assert len(list(iter_vectors(out))) == 1


def test_a_directory_without_manifest_is_refused(tmp_path: Path, toy_model_path: Path) -> None:
    src = write_input(tmp_path, b"a\n")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    for extra in ((), ("--overwrite",)):
        one_line_error(
            run("embed", src, mine, "-m", toy_model_path, *extra),
            f"{mine}: is not empty and holds no {MANIFEST}",
        )
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


@pytest.fixture
def made_out(tmp_path: Path) -> tuple[Path, Path]:
    """A one-line input and an empty output directory ``out`` that already exists."""
    out = tmp_path / "out"
    out.mkdir()
    return write_input(tmp_path, b"a\n"), out


def test_unreadable_manifest_is_refused_unless_overwrite(
    made_out: tuple[Path, Path], toy_model_path: Path
) -> None:
    src, out = made_out
    (out / MANIFEST).write_text('{"format": "elmo-edge-embeddings", "version": 99}')
    one_line_error(
        run("embed", src, out, "-m", toy_model_path), "manifest version 99, this elmo-edge reads"
    )
    ok(run("embed", src, out, "-m", toy_model_path, "--overwrite"))
    assert len(list(iter_vectors(out))) == 1


def test_a_second_run_on_the_same_directory_is_refused(
    made_out: tuple[Path, Path], toy_model_path: Path
) -> None:
    src, out = made_out
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        one_line_error(
            run("embed", src, out, "-m", toy_model_path),
            f"{out}: another `elmo embed` is writing here",
        )
    finally:
        os.close(fd)


def test_output_directory_errors(tmp_path: Path, toy_model_path: Path) -> None:
    src = write_input(tmp_path, b"a\n")
    missing = tmp_path / "missing" / "out"
    one_line_error(
        run("embed", src, missing, "-m", toy_model_path, "--shard-size", 2),
        f"{missing}: directory {missing.parent} does not exist",
    )
    one_line_error(
        run("embed", src, src, "-m", toy_model_path, "--shard-size", 2),
        f"{src}: exists and is not a directory",
    )


def test_usage_errors(tmp_path: Path, toy_model_path: Path) -> None:
    src = write_input(tmp_path, b"a\n")
    result = run("embed", src, src, tmp_path / "out", "-m", toy_model_path)
    assert result.exit_code == 2
    assert "several INPUTs need --engine ray" in result.stderr
    result = run("embed", src, tmp_path / "out", "--actors", 2, "--address", "auto")
    assert result.exit_code == 2
    assert "--address, --actors need --engine ray" in result.stderr
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- a real process, a real signal


def corpus_lines(n: int) -> bytes:
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(500)]
    return b"".join(
        (" ".join(rng.choice(words, size=rng.integers(1, 12))) + "\n").encode() for _ in range(n)
    )


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_subprocess_resumes_to_the_uninterrupted_output(
    tiny_model_path: Path, tmp_path: Path, sig: int
) -> None:
    src = write_input(tmp_path, corpus_lines(6000))
    args = ["embed", str(src), "--model", str(tiny_model_path), "--provider", "cpu"]
    args += ["--threads", "1", "--shard-size", "200"]
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [*elmo_command(), *args[:2], str(out), *args[2:]], stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 120
        while not ((out / MANIFEST).exists() and len(read_manifest(out)["shards"]) >= 3):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.01)
        proc.send_signal(sig)
        code = proc.wait(timeout=60)
    finally:
        proc.kill()
    stderr = proc.stderr.read().decode()
    if sig == signal.SIGTERM:
        assert code == 130
        assert "interrupted; the complete shards stay in" in stderr
        assert partials(out) == []
    else:
        assert code == -signal.SIGKILL
    killed = read_manifest(out)
    assert not killed["complete"] and 3 <= len(killed["shards"]) < 30

    resumed = subprocess.run([*elmo_command(), *args[:2], str(out), *args[2:]], capture_output=True)
    assert resumed.returncode == 0, resumed.stderr.decode()
    assert f"({len(killed['shards'])} resumed)" in resumed.stderr.decode()
    assert partials(out) == []
    whole = tmp_path / "whole"
    ok(run(*args[:2], whole, *args[2:]))
    got, expected = list(iter_vectors(out)), list(iter_vectors(whole))
    assert len(got) == len(expected) == 6000
    for (i, a), (j, e) in zip(got, expected, strict=True):
        assert i == j
        np.testing.assert_array_equal(a, e)


# ---------------------------------------------------------------- what a resume may change


def test_stateless_resume_takes_another_batch_size(
    corpus: Corpus, toy_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lowering --batch-size after a crash resumes: stateless vectors do not depend on it."""
    src, expected, out, args = shard_run(corpus, toy_model_path, "--shard-size", 3)
    assert run_interrupted(monkeypatch, 4, *args, "--batch-size", 64).exit_code == 130
    assert "(1 resumed)" in ok(run(*args, "--batch-size", 2)).stderr
    assert "already complete" in ok(run(*args, "--batch-size", 5)).stderr
    assert "batch_size" not in read_manifest(out)["settings"]
    assert_same(out, expected)


def test_stateful_resume_still_refuses_another_batch_size(tmp_path: Path,
                                                          toy_model_path: Path) -> None:
    src = write_input(tmp_path, LINES)
    out = tmp_path / "out"
    args = ("embed", src, out, "-m", toy_model_path, "--shard-size", 3, "--stateful")
    ok(run(*args, "--batch-size", 2))
    assert read_manifest(out)["settings"]["batch_size"] == 2
    one_line_error(run(*args, "--batch-size", 3),
                   "holds the output of another run (batch_size 2, now 3)")


def test_a_rerun_without_shard_size_takes_the_recorded_one(
    corpus: Corpus, toy_model_path: Path
) -> None:
    src, expected, out, args = shard_run(corpus, toy_model_path, "--shard-size", 3)
    ok(run(*args))
    result = ok(run("embed", src, out, "-m", toy_model_path))
    assert f"{out}: already complete (8 sentences in 3 shards, verified)" in result.stderr
    assert read_manifest(out)["settings"]["shard_size"] == 3
    one_line_error(run("embed", src, out, "-m", toy_model_path, "--shard-size", 4),
                   "(shard_size 3, now 4)")
    assert_same(out, expected)


@pytest.mark.parametrize("name", ["x.npz", "x.hdf5", "x.parquet"])
def test_a_shard_directory_named_like_a_file_is_refused(
    tmp_path: Path, toy_model_path: Path, name: str
) -> None:
    src = write_input(tmp_path, LINES)
    result = run("embed", src, tmp_path / name, "-m", toy_model_path, "--shard-size", 2)
    one_line_error(result, f"{tmp_path / name}: looks like a file name")
    assert not (tmp_path / name).exists()
    with_slash = run("embed", src, f"{tmp_path / name}/", "-m", toy_model_path, "--shard-size", 2)
    ok(with_slash)  # a name ending with / is a directory, whatever its extension
    assert (tmp_path / name / MANIFEST).is_file()
