"""`elmo embed --engine ray` and the Ray Data API: same vectors as one process, clean errors."""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from elmo_runtime.cli import main
from elmo_runtime.corpus import read_sentences
from elmo_runtime.embedder import Embedder
from elmo_runtime.errors import ElmoError
from elmo_runtime.output.ray_engine import RAY_HINT, split_lines
from elmo_runtime.output.shards import MANIFEST, read_manifest
from test_cli import elmo_command

NO_RAY = importlib.util.find_spec("ray") is None
needs_ray = pytest.mark.skipif(NO_RAY, reason="ray is not installed: pip install 'elmo-edge[ray]'")


def run(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def corpus(n: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(300)] + ["The", "cat", "sat", ".", "é"]
    lines = [" ".join(rng.choice(words, size=rng.integers(0, 15))) for _ in range(n)]
    return "".join(line + "\n" for line in lines)


def single_process(path: Path, model: Path) -> list[np.ndarray]:
    with open(path, "rb") as f:
        sentences = list(read_sentences(f, str(path)))
    return list(Embedder(model, provider="cpu", threads=1).embed_sentences(sentences))


# ---------------------------------------------------------------- without Ray


def test_missing_ray_gives_the_install_hint(
    tmp_path: Path, toy_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    src = tmp_path / "in.txt"
    src.write_text("a b\n")
    result = run("embed", src, tmp_path / "out", "--engine", "ray", "-m", toy_model_path)
    assert result.exit_code == 1
    assert result.stderr == f"Error: {RAY_HINT}\n"
    assert RAY_HINT == "the ray engine needs Ray: pip install 'elmo-edge[ray]'"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]
    from elmo_runtime.output.ray_engine import embed_dataset

    with pytest.raises(ElmoError, match=r"pip install 'elmo-edge\[ray\]'"):
        embed_dataset(None, toy_model_path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "hdf5"], "--engine ray writes Parquet"),
        (["--stateful"], "--stateful needs the local engine"),
        (["--shard-size", "10"], "--shard-size is for the local engine"),
    ],
)
def test_options_the_ray_engine_refuses(tmp_path: Path, args: list[str], message: str) -> None:
    src = tmp_path / "in.txt"
    src.write_text("a\n")
    result = run("embed", src, tmp_path / "out", "--engine", "ray", *args)
    assert result.exit_code == 2
    assert message in result.stderr
    result = run("embed", "-", tmp_path / "out", "--engine", "ray")
    assert "--engine ray reads files, not stdin" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("block_size", [1, 2, 3, 7, 1 << 20])
def test_split_lines_matches_the_local_reader(block_size: int) -> None:
    data = ("\ufeffα b\r\n\nx\x0by\u2028z\x1c \x85w\n" + "long " * 50 + "\nlast").encode()
    lines = list(split_lines(io.BytesIO(data).read, block_size))
    from elmo_runtime.corpus import decode_line

    ray_side = [decode_line(line, "x", i, "strict").split() for i, line in enumerate(lines, 1)]
    assert ray_side == list(read_sentences(io.BytesIO(data), "x"))
    assert len(lines) == 5  # only "\n" ends a line, as in the local engine
    for empty in (b"", b"\n", b"\n\n"):
        assert list(split_lines(io.BytesIO(empty).read, block_size)) == [b""] * empty.count(b"\n")


# ---------------------------------------------------------------- a local Ray


@needs_ray
@pytest.mark.slow
def test_ray_cli_equals_one_process(tiny_model_path: Path, tmp_path: Path) -> None:
    """2 actors on a private local Ray; no ~/.ray/auth_token, no /tmp/ray, nothing left."""
    pytest.importorskip("pyarrow")
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from elmo_runtime.output.writers import arrays_from_table

    inputs = [tmp_path / "a.txt", tmp_path / "b.txt"]
    inputs[0].write_text(corpus(2500, seed=1))
    inputs[1].write_text(corpus(500, seed=2))
    home = tmp_path / "home"
    home.mkdir()
    tmp = Path(tempfile.mkdtemp(prefix="t", dir="/tmp"))  # short: Ray's socket paths
    out = tmp_path / "out"
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(tmp)}
    args = [*elmo_command(), "embed", *map(str, inputs), str(out), "--model", str(tiny_model_path)]
    args += ["--engine", "ray", "--actors", "2", "--threads", "1", "--provider", "cpu"]
    try:
        proc = subprocess.run(args, capture_output=True, env=env, timeout=600)
    finally:
        leftovers = list(tmp.iterdir())
        shutil.rmtree(tmp)
    stderr = proc.stderr.decode()
    assert proc.returncode == 0, stderr
    assert f"wrote 3000 sentences in {len(read_manifest(out)['shards'])} " in stderr
    assert "Traceback" not in stderr and "auth" not in stderr.lower()
    assert not (home / ".ray").exists()  # no ~/.ray/auth_token
    assert [p.name for p in leftovers if "ray" in p.name] == []  # Ray's temp dir is gone
    manifest = read_manifest(out)
    assert manifest["engine"] == "ray" and manifest["complete"] and manifest["lines"] == 3000
    files = [s["file"] for s in manifest["shards"]]
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST, *files])
    assert files[0] == "part-00000.parquet"

    table = pq.read_table(out)
    for path in inputs:
        rows = table.filter(pc.equal(table.column("path"), str(path))).sort_by("line")
        expected = single_process(path, tiny_model_path)
        assert rows.column("line").to_pylist() == list(range(len(expected)))
        for got, want in zip(arrays_from_table(rows), expected, strict=True):
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, atol=1e-5)

    again = subprocess.run(args, capture_output=True, env=env, timeout=600)
    assert again.returncode == 0
    assert "already complete: 3000 sentences in" in again.stderr.decode()


@needs_ray
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray's own, when it pickles its context
def test_embed_dataset_in_a_ray_pipeline(toy_model_path: Path, tmp_path: Path, toy) -> None:
    """The Python API on ray.data.read_text, and a bad line as one clear error."""
    pytest.importorskip("pyarrow")
    from elmo_runtime.output.ray_engine import embed_dataset, embed_files, ray_session
    from elmo_runtime.output.writers import arrays_from_table

    src = tmp_path / "in.txt"
    src.write_text("The cat sat\nhello world\nx\n")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\nbad \xff byte\n")
    with ray_session(cpus=2) as ray:
        ds = ray.data.read_text(str(src))
        out = embed_dataset(ds, toy_model_path, mix="top", actors=1, dtype="float16")
        import pyarrow as pa

        table = pa.concat_tables(list(out.iter_batches(batch_format="pyarrow")))
        assert table.column_names == ["tokens", "shape", "vectors"]
        by_tokens = dict(
            zip(
                map(tuple, table.column("tokens").to_pylist()),
                arrays_from_table(table),
                strict=True,
            )
        )
        for line in src.read_text().splitlines():
            got = by_tokens[tuple(line.split())]
            assert got.dtype == np.float16
            np.testing.assert_array_equal(got, toy(line.split())[-1].astype(np.float16))
        with pytest.raises(ElmoError) as e:
            embed_files([str(bad)], tmp_path / "bad-out", toy_model_path, actors=1)
        assert str(e.value) == (
            f"{bad}:2: invalid UTF-8 (byte 0xff at column 5); fix the file or pass --errors replace"
        )
        assert ray.is_initialized()  # a session it did not start is left running
    assert not ray.is_initialized()
    assert not (tmp_path / "bad-out" / "part-00000.parquet").exists()
