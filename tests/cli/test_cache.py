"""`elmo cache list | prepare | clear`: the prepared copies, seen, made ahead and deleted."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from elmo_runtime.embedder import Embedder, default_model_path
from elmo_runtime.loading import hashes
from elmo_runtime.loading.prepared import cache as prepared
from elmo_runtime.loading.prepared import inventory
from support.cli import run_elmo
from support.errors import one_line_error


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache of its own; copies of every model (the bundled ones are < 32 MiB)."""
    root = tmp_path / "cache"
    monkeypatch.setenv(hashes.ENV_CACHE, str(root))
    monkeypatch.setenv(prepared.ENV_SWITCH, "always")
    return root


def test_prepare_skips_a_model_no_load_would_use(cache: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 24: `elmo cache prepare default` made a 22.7 MiB copy that was never used."""
    monkeypatch.delenv(prepared.ENV_SWITCH)
    result = run_elmo("cache", "prepare", "default")
    assert result.exit_code == 0, result.output
    assert result.stdout == (f"{default_model_path()}: 11.5 MiB, under 32.0 MiB: loaded as it "
                             "is, a copy would not be used; nothing prepared "
                             "(ELMO_EDGE_PREPARED=always uses copies of every model)\n")
    assert inventory.list_copies(cache) == []


def test_the_first_load_says_it_writes_a_copy_once(cache: Path) -> None:
    """Issue 24: the first load of a large model wrote ~2x its size into the cache silently."""
    with pytest.warns(prepared.PreparedCopyNotice) as said:
        copy = prepared.load_path(default_model_path(), min_bytes=0)
    (notice,) = [str(w.message) for w in said]
    size = sum(f.stat().st_size for f in copy.parent.iterdir() if f.is_file())
    assert notice == (f"{default_model_path()}: wrote its prepared copy to {copy.parent} "
                      f"({size / 2**20:.1f} MiB, once per model and machine; `elmo cache clear` "
                      "removes it)")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert prepared.load_path(default_model_path(), min_bytes=0) == copy  # silent now


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
    assert len(inventory.list_copies(cache)) == 1
    assert inventory.list_copies(cache)[0]["models"] == sorted(
        [str(model.resolve()), str(default_model_path().resolve())])
    cleared = run_elmo("cache", "clear")
    assert cleared.stdout.startswith("removed 1 prepared copy, ")
    assert not (cache / "prepared").exists() and not (cache / "index").exists()
    sentence = ["The", "cat", "sat", "."]
    plain = Embedder(model, token_cache_mb=0).embed_sentence(sentence)
    assert np.isfinite(plain).all()


def test_a_copy_made_elsewhere_is_listed_as_unused(cache: Path, tmp_path: Path) -> None:
    assert run_elmo("cache", "prepare", "default").exit_code == 0
    copy = inventory.list_copies(cache)[0]["dir"]
    copy.rename(copy.with_name("p0-ort0.0.0-000000000000"))
    line = run_elmo("cache", "list").stdout.strip().splitlines()[1]
    assert line.endswith("[made for another onnxruntime or CPU: unused here]")


@pytest.mark.parametrize("args,message", [
    (("prepare", "missing.onnx"), "missing.onnx: no such model file"),
    (("clear", "missing.onnx"), "missing.onnx: no such model file"),
    (("prepare", "default.int8"), "default.int8: no such model file and not a bundled model "
                                  "(default, default-int8)"),
])
def test_a_missing_model_is_one_line(cache: Path, args: tuple[str, ...], message: str) -> None:
    one_line_error(run_elmo("cache", *args), message)


def test_a_file_that_is_no_model_is_refused(cache: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf at all \xff\xff\xff")
    line = one_line_error(run_elmo("cache", "prepare", junk))
    assert "not a readable ONNX model" in line or "not an elmo-edge model" in line
    assert inventory.list_copies(cache) == []


@pytest.mark.parametrize("entry", ["[1, 2]", "null", '"text"', '{"sha256": "x"}'])
def test_an_index_entry_that_is_no_object_is_skipped(cache: Path, entry: str) -> None:
    """A hand-edited or bit-rotten index entry: list and clear still work (was exit 2)."""
    assert run_elmo("cache", "prepare", "default").exit_code == 0
    (cache / "index" / "0123.json").write_text(entry, encoding="utf-8")
    listed = run_elmo("cache", "list")
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.startswith(f"{cache}: 1 prepared copy, ")
    cleared = run_elmo("cache", "clear")
    assert cleared.exit_code == 0, cleared.output
    assert cleared.stdout.startswith("removed 1 prepared copy, ")


def test_a_model_rewritten_since_it_was_prepared(cache: Path, tmp_path: Path) -> None:
    """list says the file changed; clear MODEL removes the copy of its former content."""
    from elmo_runtime.models import get

    model = tmp_path / "model.onnx"
    shutil.copyfile(default_model_path(), model)
    assert run_elmo("cache", "prepare", model).exit_code == 0
    shutil.copyfile(get("default-int8").path, model)
    line = run_elmo("cache", "list").stdout.strip().splitlines()[1]
    assert line.endswith(f"{model} (changed or gone since)")
    cleared = run_elmo("cache", "clear", model)
    assert cleared.stdout.startswith("removed 1 prepared copy, "), cleared.output
    assert inventory.list_copies(cache) == []


def test_clear_a_model_removes_dead_builders_temporaries(cache: Path) -> None:
    """A build killed outright (SIGKILL, power loss) leaves a .tmp- directory behind."""
    assert run_elmo("cache", "prepare", "default").exit_code == 0
    leftover = inventory.list_copies(cache)[0]["dir"].with_name(".tmp-killed")
    leftover.mkdir()
    (leftover / prepared.DATA).write_bytes(b"\0" * 1000)
    assert run_elmo("cache", "clear", "default").stdout.startswith("removed 1 prepared copy")
    assert not leftover.exists()


def test_clear_on_an_empty_cache_writes_nothing(cache: Path) -> None:
    assert run_elmo("cache", "clear", "default").stdout.startswith("removed 0 prepared copies")
    assert not cache.exists()


def test_clear_leaves_a_build_in_progress_alone(cache: Path) -> None:
    """A builder holds its model's lock: clear leaves it be, with a warning. It used to
    delete the half-made copy under it (which then failed as if onnxruntime had), and
    waiting for the build would delete the copy just as a load is about to open it."""
    assert run_elmo("cache", "prepare", "default-int8").exit_code == 0
    directory = cache / "prepared" / ("0" * 64)
    directory.mkdir(parents=True)
    building = directory / ".tmp-building"
    building.mkdir()
    for model in (None, "0"):
        with prepared.locked(directory / ".lock"):
            if model is None:
                result = run_elmo("cache", "clear")
                assert result.stdout.startswith("removed 1 prepared copy, "), result.output
            else:  # as if the model being built had sha256 0...0
                with pytest.MonkeyPatch.context() as m:
                    m.setattr(inventory, "model_sha256", lambda path, root: "0" * 64)
                    result = run_elmo("cache", "clear", "default")
                    assert result.stdout.startswith("removed 0 prepared copies"), result.output
            assert result.stderr.strip() == (f"Warning: {directory}: a copy is being made there "
                                             "now (another process holds its lock); left as it is")
            assert building.exists()
    assert run_elmo("cache", "clear").stderr == ""
    assert not (cache / "prepared").exists()


def test_all_models_are_checked_before_any_is_prepared(cache: Path) -> None:
    one_line_error(run_elmo("cache", "prepare", "default", "missing.onnx"),
                   "missing.onnx: no such model file")
    assert inventory.list_copies(cache) == []


def test_an_interrupt_after_some_copies_says_they_are_kept(
        cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = prepared.prepare

    def prepare(model: Path) -> Path:
        if "int8" in str(model):
            raise KeyboardInterrupt
        return real(model)

    monkeypatch.setattr(prepared, "prepare", prepare)
    result = run_elmo("cache", "prepare", "default", "default-int8")
    assert result.exit_code == 130
    assert "the copies of the models before it are made and kept" in result.stderr
    assert len(inventory.list_copies(cache)) == 1


def test_a_copy_removed_as_soon_as_made_is_one_line(
        cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A concurrent `elmo cache clear` between the copy's making and its measuring."""
    monkeypatch.setattr(prepared, "prepare", lambda model: tmp_path / "gone" / prepared.GRAPH)
    one_line_error(run_elmo("cache", "prepare", "default"), "was removed as soon as it was made")
