"""Output writers: AllenNLP hdf5 / npz layouts, atomic replace, clean failures."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from elmo_runtime.errors import ElmoError
from elmo_runtime.output.writers import H5PY_HINT, infer_format, open_writer

h5py = pytest.importorskip("h5py")

SENTENCES = [["The", "cat"], [], ["a", "b", "c"], ["The", "cat"]]


def arrays(mixed: bool = False) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    shapes = [(len(s), 8) if mixed else (3, len(s), 8) for s in SENTENCES]
    return [rng.normal(size=shape) for shape in shapes]  # float64: the writer casts


def write_all(path: Path, fmt: str | None = None, mixed: bool = False) -> list[np.ndarray]:
    data = arrays(mixed)
    with open_writer(path, fmt) as w:
        for tokens, arr in zip(SENTENCES, data, strict=True):
            w.write(tokens, arr)
    return data


def expected_index() -> dict[str, str]:
    # the repeated sentence maps to its last occurrence, as in AllenNLP
    return {"The cat": "3", "": "1", "a b c": "2"}


@pytest.mark.parametrize("mixed", [False, True])
def test_hdf5_layout(tmp_path: Path, mixed: bool) -> None:
    path = tmp_path / "out.hdf5"
    data = write_all(path, mixed=mixed)
    with h5py.File(path, "r") as f:
        assert sorted(f.keys()) == ["0", "1", "2", "3", "sentence_to_index"]
        for i, arr in enumerate(data):
            ds = f[str(i)]
            assert ds.dtype == np.float32
            assert ds.shape == arr.shape
            np.testing.assert_array_equal(ds[...], arr.astype(np.float32))
        index = f["sentence_to_index"]
        assert index.shape == (1,)
        assert json.loads(index[0]) == expected_index()


@pytest.mark.parametrize("mixed", [False, True])
def test_npz_layout_reads_without_pickle(tmp_path: Path, mixed: bool) -> None:
    path = tmp_path / "out.npz"
    data = write_all(path, mixed=mixed)
    with np.load(path, allow_pickle=False) as z:
        assert sorted(z.files) == ["0", "1", "2", "3", "sentence_to_index"]
        for i, arr in enumerate(data):
            assert z[str(i)].dtype == np.float32
            np.testing.assert_array_equal(z[str(i)], arr.astype(np.float32))
        index = z["sentence_to_index"]
        assert index.shape == ()
        assert json.loads(index.item()) == expected_index()


@pytest.mark.parametrize("name", ["empty.hdf5", "empty.npz"])
def test_empty_output_is_valid(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    with open_writer(path):
        pass
    if name.endswith(".npz"):
        with np.load(path, allow_pickle=False) as z:
            assert z.files == ["sentence_to_index"]
            assert z["sentence_to_index"].item() == "{}"
    else:
        with h5py.File(path, "r") as f:
            assert list(f.keys()) == ["sentence_to_index"]
            assert f["sentence_to_index"][0].decode() == "{}"


def test_non_ascii_sentences_in_the_index(tmp_path: Path) -> None:
    path = tmp_path / "out.hdf5"
    with open_writer(path) as w:
        w.write(["héllo", "中文", "\x01x"], np.zeros((3, 3, 2)))
    with h5py.File(path, "r") as f:
        assert json.loads(f["sentence_to_index"][0]) == {"héllo 中文 \x01x": "0"}


def test_format_inference() -> None:
    assert infer_format("x.npz") == "npz"
    assert infer_format("x.NPZ") == "npz"
    assert infer_format("x.hdf5") == "hdf5"
    assert infer_format("x.h5") == "hdf5"
    assert infer_format("x") == "hdf5"
    assert infer_format("x.npz", "hdf5") == "hdf5"
    with pytest.raises(ElmoError, match="unknown output format 'csv'"):
        infer_format("x", "csv")


def test_explicit_format_wins_over_extension(tmp_path: Path) -> None:
    path = tmp_path / "out.hdf5"
    write_all(path, "npz")
    with np.load(path, allow_pickle=False) as z:
        assert "sentence_to_index" in z.files


@pytest.mark.parametrize("name", ["out.hdf5", "out.npz"])
@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_failure_mid_write_leaves_nothing(tmp_path: Path, name: str, error: type) -> None:
    path = tmp_path / name
    temp = tmp_path / f".{name}.partial-{os.getpid()}"
    with pytest.raises(error), open_writer(path) as w:
        w.write(["a"], np.zeros((3, 1, 4)))
        assert temp.is_file()  # the data goes to the temp file …
        assert not path.exists()  # … never to the final name
        raise error("boom")
    assert list(tmp_path.iterdir()) == []


def test_failure_keeps_an_existing_output(tmp_path: Path) -> None:
    path = tmp_path / "out.npz"
    path.write_bytes(b"previous run")
    with pytest.raises(RuntimeError), open_writer(path) as w:
        w.write(["a"], np.zeros((3, 1, 4)))
        raise RuntimeError("boom")
    assert path.read_bytes() == b"previous run"
    assert list(tmp_path.iterdir()) == [path]


def test_success_replaces_an_existing_output(tmp_path: Path) -> None:
    path = tmp_path / "out.npz"
    path.write_bytes(b"previous run")
    write_all(path)
    with np.load(path, allow_pickle=False) as z:
        assert len(z.files) == 5
    assert list(tmp_path.iterdir()) == [path]


def test_missing_directory(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "out.hdf5"
    with pytest.raises(ElmoError) as e, open_writer(path):
        pass
    assert str(e.value) == f"{path}: directory {path.parent} does not exist"
    assert not path.parent.exists()


def test_output_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ElmoError, match="is a directory"), open_writer(tmp_path):
        pass


def test_write_error_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np.lib.format, "write_array", disk_full)
    path = tmp_path / "out.npz"
    with pytest.raises(ElmoError, match="cannot write the output .*No space left"):
        write_all(path)
    assert list(tmp_path.iterdir()) == []


def test_hdf5_without_h5py(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py now raises ImportError
    with pytest.raises(ElmoError) as e, open_writer(tmp_path / "out.hdf5"):
        pass
    assert str(e.value) == H5PY_HINT
    assert list(tmp_path.iterdir()) == []
    write_all(tmp_path / "out.npz")  # npz needs no h5py
    assert (tmp_path / "out.npz").is_file()


@pytest.mark.parametrize("name", ["keys.hdf5", "keys.npz"])
def test_sentence_to_index_takes_the_line_as_key(tmp_path: Path, name: str) -> None:
    """``key`` (the stripped input line) keys sentence_to_index; the tokens are the default."""
    with open_writer(tmp_path / name) as w:
        w.write(["a", "b"], np.zeros((1, 2, 4)), key="a \t b")
        w.write(["c"], np.zeros((1, 1, 4)))
    if name.endswith(".npz"):
        with np.load(tmp_path / name, allow_pickle=False) as z:
            index = json.loads(z["sentence_to_index"].item())
    else:
        with h5py.File(tmp_path / name, "r") as f:
            index = json.loads(f["sentence_to_index"][0])
    assert index == {"a \t b": "0", "c": "1"}


@pytest.mark.parametrize(
    ("name", "fmt", "outcome"),
    [
        ("o.npz", None, None),
        ("o.h5", "hdf5", None),
        ("o.PQ", None, None),
        ("o.npz", "hdf5", "the extension says npz but --format is hdf5"),
        ("o.parquet", "npz", "the extension says parquet but --format is npz"),
        ("o.txt", None, "the output name ends in none of"),
        ("-", None, None),
        ("-", "hdf5", "OUTPUT - (stdout) is written as npz only"),
        ("o.txt", "npz", None),
    ],
)
def test_check_extension(name: str, fmt: str | None, outcome: str | None) -> None:
    from elmo_runtime.errors import UsageError
    from elmo_runtime.output.writers import check_extension

    if outcome is not None:
        with pytest.raises(UsageError, match=re.escape(outcome)):
            check_extension(name, fmt)
    else:
        check_extension(name, fmt)
