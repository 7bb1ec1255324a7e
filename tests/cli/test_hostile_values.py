"""Values of the right syntax and the wrong kind (breaker findings 9, 9b, 9c): metadata of
the wrong JSON type or nesting, mix files that overflow or nest deeply, nan/inf options and
an unwritable output directory are each one line, never `internal error`."""

from __future__ import annotations

import errno
import json
import re
from pathlib import Path

import onnx
import pytest
from elmo_runtime.errors import ModelError
from elmo_runtime.format import contract
from elmo_runtime.mix import MixError, load_mix
from support.cli import run_elmo as run
from support.errors import one_line_error

DEEP = "[" * 100_000 + "]" * 100_000


@pytest.fixture(scope="module")
def toy_meta(toy_model_path: Path) -> dict[str, str]:
    """The toy model's metadata (tests/conftest.py is shadowed by tests/serve's when both
    folders run, so its helpers are not imported)."""
    model = onnx.load(toy_model_path)
    return {p.key: p.value for p in model.metadata_props}


def _with(meta: dict[str, str], **changes: str) -> dict[str, str]:
    return {**meta, **changes}


@pytest.mark.parametrize(("key", "value", "found"), [
    (contract.KEY_PARITY, '"hello"', "'hello'"),
    (contract.KEY_QUANT, "[1, 2]", "[1, 2]"),
    (contract.KEY_SOURCE, "3", "3"),
])
def test_metadata_of_the_wrong_type(toy_meta: dict[str, str], key: str, value: str,
                                    found: str) -> None:
    with pytest.raises(ModelError, match=re.escape(f"m.onnx: metadata field '{key}' must be "
                                                   f"a JSON object: {found}")):
        contract.parse_metadata(_with(toy_meta, **{key: value}), "m.onnx")


@pytest.mark.parametrize("key", [contract.KEY_SOURCE, contract.KEY_OPTIONS, contract.KEY_PARITY])
def test_deeply_nested_metadata(toy_meta: dict[str, str], key: str) -> None:
    with pytest.raises(ModelError, match=f"metadata field '{key}'"):
        contract.parse_metadata(_with(toy_meta, **{key: DEEP}), "m.onnx")


def test_elmo_info_and_embed_on_wrong_metadata_say_one_line(toy_model_path: Path,
                                                            tmp_path: Path) -> None:
    path = tmp_path / "meta.onnx"
    model = onnx.load(toy_model_path)
    for prop in model.metadata_props:
        if prop.key == contract.KEY_QUANT:
            prop.value = "[1, 2]"
    onnx.save(model, path)
    text = tmp_path / "in.txt"
    text.write_text("a b\n", encoding="utf-8")
    for args in (["info", path], ["embed", text, tmp_path / "o.npz", "--model", path]):
        one_line_error(run(*args), f"metadata field '{contract.KEY_QUANT}' must be a JSON object")


@pytest.mark.parametrize(("content", "message"), [
    ('{"weights": [1e308, 1e308, 1e308], "gamma": 1e308}',
     "gamma must be within ±3.4028234663852886e+38 (the largest float32"),
    ('{"weights": [0, 0, 0], "gamma": 1e39}', "found 1e+39"),
    (DEEP, "nested too deeply"),
])
def test_mix_files_that_would_overflow_or_nest(tmp_path: Path, toy_model_path: Path,
                                               content: str, message: str) -> None:
    mix = tmp_path / "m.json"
    mix.write_text(content, encoding="utf-8")
    with pytest.raises(MixError, match=re.escape(message)):
        load_mix(mix, 3)
    text = tmp_path / "in.txt"
    text.write_text("a b\n", encoding="utf-8")
    result = run("embed", text, tmp_path / "o.npz", "--model", toy_model_path, "--mix", mix)
    one_line_error(result, message)
    assert not (tmp_path / "o.npz").exists()


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_token_cache_must_be_finite(tmp_path: Path, toy_model_path: Path, value: str) -> None:
    text = tmp_path / "in.txt"
    text.write_text("a b\n", encoding="utf-8")
    result = run("embed", text, tmp_path / "o.npz", "--model", toy_model_path,
                 "--token-cache", value)
    one_line_error(result, "is not a finite number >= 0", code=2)


@pytest.mark.parametrize("fmt", ["npz", "hdf5", "parquet"])
def test_unwritable_output_directory_is_one_line(tmp_path: Path, toy_model_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 fmt: str) -> None:
    """A read-only filesystem (root ignores chmod, so the open is made to fail)."""
    if fmt == "hdf5":
        pytest.importorskip("h5py")
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    def read_only(path, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    if fmt == "npz":
        from elmo_runtime.output import writers

        monkeypatch.setattr(writers.zipfile, "ZipFile", read_only)
    elif fmt == "hdf5":
        import h5py

        monkeypatch.setattr(h5py, "File", read_only)
    else:
        import pyarrow.parquet as pq

        monkeypatch.setattr(pq, "ParquetWriter", read_only)
    text = tmp_path / "in.txt"
    text.write_text("a b\n", encoding="utf-8")
    out = tmp_path / f"o.{fmt}"
    one_line_error(run("embed", text, out, "--model", toy_model_path),
                   f"{out}: cannot write the output")
    assert json.dumps(sorted(p.name for p in tmp_path.iterdir())) == '["in.txt"]'
