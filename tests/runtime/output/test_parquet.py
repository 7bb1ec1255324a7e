"""Parquet output: read back with pyarrow, it holds exactly what the hdf5 output holds."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from elmo_runtime.cli import main
from elmo_runtime.errors import PYARROW_HINT, ElmoError
from elmo_runtime.output.arrow import (
    PARQUET_COLUMNS,
    PARQUET_ROWS_PER_BATCH,
    arrays_from_table,
    arrow_table,
)
from elmo_runtime.output.writers import open_writer

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
h5py = pytest.importorskip("h5py")

TEXT = b"The cat sat on the mat .\n\nA dog !\nthe bank raised its rates\nx\n"


def run(*args: object) -> Result:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def hdf5_arrays(path: Path) -> list[np.ndarray]:
    with h5py.File(path, "r") as f:
        return [f[str(i)][...] for i in range(len(f) - 1)]


@pytest.fixture
def src(tmp_path: Path) -> Path:
    path = tmp_path / "in.txt"
    path.write_bytes(TEXT)
    return path


@pytest.mark.parametrize("mode", ["--all", "--top"])
def test_parquet_equals_hdf5(src: Path, tiny_model_path: Path, mode: str) -> None:
    run("embed", src, src.parent / "out.hdf5", "-m", tiny_model_path, mode)
    run("embed", src, src.parent / "out.parquet", "-m", tiny_model_path, mode)
    expected = hdf5_arrays(src.parent / "out.hdf5")
    table = pq.read_table(src.parent / "out.parquet")
    assert table.column_names == list(PARQUET_COLUMNS)
    assert table.schema.field("vectors").type == pa.list_(pa.float32())
    assert table.column("line").to_pylist() == list(range(5))
    assert table.column("tokens").to_pylist() == [
        line.split() for line in TEXT.decode().splitlines()
    ]
    assert table.column("shape").to_pylist() == [list(e.shape) for e in expected]
    for got, want in zip(arrays_from_table(table), expected, strict=True):
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want)
    # the plain pyarrow way, without elmo-edge: reshape each row's flat list
    row = table.slice(3, 1).to_pylist()[0]
    np.testing.assert_array_equal(np.reshape(row["vectors"], row["shape"]), expected[3])


def test_float16_halves_the_size(tmp_path: Path, tiny_model_path: Path) -> None:
    src = tmp_path / "in.txt"
    rng = np.random.default_rng(0)
    words = TEXT.decode().split()
    src.write_text("".join(" ".join(rng.choice(words, size=12)) + "\n" for _ in range(100)))
    run("embed", src, tmp_path / "f32.parquet", "-m", tiny_model_path)
    run("embed", src, tmp_path / "f16.parquet", "-m", tiny_model_path, "--dtype", "float16")
    ratio = (tmp_path / "f16.parquet").stat().st_size / (tmp_path / "f32.parquet").stat().st_size
    assert 0.4 < ratio < 0.6
    half = pq.read_table(tmp_path / "f16.parquet")
    assert half.schema.field("vectors").type == pa.list_(pa.float16())
    full = arrays_from_table(pq.read_table(tmp_path / "f32.parquet"))
    for got, want in zip(arrays_from_table(half), full, strict=True):
        assert got.dtype == np.float16
        np.testing.assert_array_equal(got, want.astype(np.float16))


def test_sharded_parquet_directory_reads_as_one_table(src: Path, tiny_model_path: Path) -> None:
    run("embed", src, src.parent / "out.hdf5", "-m", tiny_model_path)
    run(
        "embed",
        src,
        src.parent / "shards",
        "-m",
        tiny_model_path,
        "--format",
        "parquet",
        "--shard-size",
        2,
    )
    table = pq.read_table(src.parent / "shards").sort_by("line")  # the manifest is skipped
    assert table.column("line").to_pylist() == list(range(5))
    for got, want in zip(
        arrays_from_table(table), hdf5_arrays(src.parent / "out.hdf5"), strict=True
    ):
        np.testing.assert_array_equal(got, want)


def test_row_groups_stay_small(tmp_path: Path) -> None:
    path = tmp_path / "many.parquet"
    n = 2 * PARQUET_ROWS_PER_BATCH + 7
    with open_writer(path) as w:
        for i in range(n):
            w.write(["t"] * (i % 3), np.full((3, i % 3, 4), i, dtype=np.float32))
    meta = pq.ParquetFile(path).metadata
    assert meta.num_rows == n and meta.num_row_groups == 3
    arrays = arrays_from_table(pq.read_table(path))
    assert [a.shape for a in arrays[:3]] == [(3, 0, 4), (3, 1, 4), (3, 2, 4)]
    assert float(arrays[-1][0, 0, 0]) == n - 1


def test_round_trip_of_empty_sentences_and_tables() -> None:
    arrays = [np.zeros((3, 0, 4), np.float32), np.arange(8, dtype=np.float32).reshape(2, 4)]
    table = arrow_table([7, 8], [[], ["a", "b"]], arrays)
    for got, want in zip(arrays_from_table(table), arrays, strict=True):
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    assert arrays_from_table(arrow_table([], [], [])) == []


def test_parquet_without_pyarrow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(ElmoError) as e, open_writer(tmp_path / "out.parquet"):
        pass
    assert str(e.value) == PYARROW_HINT
    assert list(tmp_path.iterdir()) == []
