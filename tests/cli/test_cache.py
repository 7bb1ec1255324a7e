"""`elmo cache list | prepare | clear`: the prepared copies, seen, made ahead and deleted."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from elmo_runtime import prepared
from elmo_runtime.embedder import Embedder, default_model_path
from util import one_line_error, run_elmo


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache of its own, and a copy of the bundled model under another path."""
    root = tmp_path / "cache"
    monkeypatch.setenv(prepared.ENV_CACHE, str(root))
    return root


def test_prepare_list_clear(cache: Path, tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    shutil.copyfile(default_model_path(), model)
    empty = run_elmo("cache", "list")
    assert empty.exit_code == 0, empty.output
    assert empty.stdout.strip() == f"{cache}: 0 prepared copies, 0.0 MiB"

    made = run_elmo("cache", "prepare", model)
    assert made.exit_code == 0, made.output
    copy = prepared.copy_dir(model, cache)
    assert made.stdout.startswith(f"{model}: prepared copy in {copy} (")
    assert prepared.check_copy(copy, copy.parent.name) is None

    listed = run_elmo("cache", "list")
    lines = listed.stdout.strip().splitlines()
    assert lines[0].startswith(f"{cache}: 1 prepared copy, ")
    assert lines[1].endswith(f"{copy.parent.name[:12]}  {model}")
    # a model loaded with ELMO_EDGE_PREPARED=always now uses that very copy
    assert prepared.load_path(model, min_bytes=0) == copy / prepared.GRAPH

    cleared = run_elmo("cache", "clear", model)
    assert cleared.exit_code == 0, cleared.output
    assert cleared.stdout.startswith("removed 1 prepared copy, ")
    assert not copy.exists()
    assert run_elmo("cache", "list").stdout.startswith(f"{cache}: 0 prepared copies")


def test_clear_everything_then_a_model_still_loads(cache: Path, tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    shutil.copyfile(default_model_path(), model)
    assert run_elmo("cache", "prepare", model, "default").exit_code == 0
    # the bundled model and its copy under another name have one sha256: one copy
    assert len(prepared.list_copies(cache)) == 1
    assert prepared.list_copies(cache)[0]["models"] == sorted(
        [str(model.resolve()), str(default_model_path().resolve())])
    cleared = run_elmo("cache", "clear")
    assert cleared.stdout.startswith("removed 1 prepared copy, ")
    assert not (cache / "prepared").exists() and not (cache / "index").exists()
    sentence = ["The", "cat", "sat", "."]
    plain = Embedder(model, token_cache_mb=0).embed_sentence(sentence)
    assert np.isfinite(plain).all()


def test_a_copy_made_elsewhere_is_listed_as_unused(cache: Path, tmp_path: Path) -> None:
    assert run_elmo("cache", "prepare", "default").exit_code == 0
    copy = prepared.list_copies(cache)[0]["dir"]
    copy.rename(copy.with_name("p0-ort0.0.0-000000000000"))
    line = run_elmo("cache", "list").stdout.strip().splitlines()[1]
    assert line.endswith("[made for another onnxruntime or CPU: unused here]")


@pytest.mark.parametrize("args,message", [
    (("prepare", "missing.onnx"), "missing.onnx: no such model file"),
    (("clear", "missing.onnx"), "missing.onnx: no such model file"),
])
def test_a_missing_model_is_one_line(cache: Path, args: tuple[str, ...], message: str) -> None:
    one_line_error(run_elmo("cache", *args), message)


def test_a_file_that_is_no_model_is_refused(cache: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf at all \xff\xff\xff")
    line = one_line_error(run_elmo("cache", "prepare", junk))
    assert "not a readable ONNX model" in line or "not an elmo-edge model" in line
    assert prepared.list_copies(cache) == []
