"""What a new user runs into first: wrong files as models, convert's refusals, info's report.

Each test holds the answer a fresh-user trial found wrong (/work/notes/fresh-user.md):
a model path that is bilm-tf weights, an options.json or a directory; `elmo convert`
writing over its own input; `elmo info -m`; the parity and quantization lines; the
missing-OUTPUT message; keyword-only Embedder parameters; `python -m elmo_runtime`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from elmo_runtime import __version__
from elmo_runtime.cli.info import describe, format_info, format_parity
from elmo_runtime.embedder import Embedder
from elmo_runtime.errors import ModelError
from elmo_runtime.loading.model_file import HDF5_MAGIC
from elmo_runtime.models import names
from support.cli import run_elmo as run
from support.errors import one_line_error

CONVERT = "convert them first: elmo convert OPTIONS_JSON WEIGHTS_HDF5 -o M.onnx"


@pytest.fixture
def bilm_files(tmp_path: Path) -> tuple[Path, Path]:
    """An options.json and an HDF5 file (only its signature: nothing reads further)."""
    options = tmp_path / "options.json"
    options.write_text('{"lstm": {"dim": 4}}\n')
    weights = tmp_path / "lm_weights.hdf5"
    weights.write_bytes(HDF5_MAGIC + b"\0" * 64)
    return options, weights


# ---------------------------------------------------------------- not a model


def test_bilm_tf_files_as_a_model_say_convert(bilm_files: tuple[Path, Path],
                                              tmp_path: Path) -> None:
    options, weights = bilm_files
    src = tmp_path / "in.txt"
    src.write_text("a b\n")
    for path, kind in ((weights, "is an HDF5 file"), (options, "is a JSON file")):
        for args in (("info", path), ("info", "-m", path),
                     ("embed", src, tmp_path / "o.npz", "--model", path),
                     ("quantize", path, "-o", tmp_path / "q.onnx")):
            result = run(*args)
            one_line_error(result, f"{path}: {kind}")
            assert CONVERT in result.stderr and "ONNXRuntimeError" not in result.stderr
        with pytest.raises(ModelError, match=f"{kind}.*{CONVERT}"):
            Embedder(path)
    assert not (tmp_path / "o.npz").exists() and not (tmp_path / "q.onnx").exists()


def test_a_directory_and_a_mistyped_name(tmp_path: Path) -> None:
    one_line_error(run("info", tmp_path),
                   f"{tmp_path}: no such model file: it is a directory (give the .onnx file)")
    bundled = ", ".join(names())
    one_line_error(run("info", "--model", "Default"),
                   f"Default: no such model file and not a bundled model ({bundled})")
    with pytest.raises(ModelError, match="is a directory"):
        Embedder(tmp_path)
    (tmp_path / "options.json").write_text("{}")  # a bilm-tf / NLPL folder as downloaded
    (tmp_path / "model.hdf5").write_bytes(b"")
    one_line_error(run("embed", "-", tmp_path / "o.npz", "--model", tmp_path, input=b"a\n"),
                   f"{tmp_path}: is a folder of published weights, not an ONNX model; "
                   f"convert it first: elmo convert {tmp_path} -o M.onnx")
    with zipfile.ZipFile(tmp_path / "209.zip", "w") as archive:  # an NLPL ZIP as downloaded
        archive.writestr("options.json", "{}")
    with pytest.raises(ModelError, match="209.zip: is a ZIP .*elmo convert .*209.zip -o M.onnx"):
        Embedder(tmp_path / "209.zip")


def test_embedder_parameters_after_model_are_keyword_only(toy_model_path: Path,
                                                          bilm_files: tuple[Path, Path]) -> None:
    """AllenNLP's ElmoEmbedder(options_file, weight_file) must not turn on `stateful`."""
    with pytest.raises(TypeError):
        Embedder(toy_model_path, str(bilm_files[1]))  # type: ignore[misc]
    emb = Embedder(toy_model_path, mix="top", provider="cpu")
    assert emb.mix == "top" and not emb.stateful
    assert repr(emb) == (f"Embedder({str(toy_model_path)!r}, mix='top', stateful=False, "
                         "providers=['CPUExecutionProvider'])")
    assert "mix='all'" in repr(Embedder(toy_model_path, provider="cpu"))


# ---------------------------------------------------------------- convert


@pytest.fixture
def convert_cli() -> None:
    pytest.importorskip("elmo_export.cli", reason="elmo convert comes with elmo_export")


@pytest.mark.usefixtures("convert_cli")
def test_convert_refuses_to_write_over_its_input(bilm_files: tuple[Path, Path],
                                                 tmp_path: Path) -> None:
    options, weights = bilm_files
    link = tmp_path / "link.hdf5"
    link.symlink_to(weights)
    hard = tmp_path / "hard.json"
    os.link(options, hard)
    before = {p: p.read_bytes() for p in (options, weights)}
    for output, which in ((weights, weights), (options, options), (link, weights),
                          (hard, options)):
        result = run("convert", options, weights, "-o", output)
        one_line_error(result, f"{output}: is the input {which} (the same file)")
    assert {p: p.read_bytes() for p in (options, weights)} == before


@pytest.mark.usefixtures("convert_cli")
def test_convert_with_swapped_arguments(bilm_files: tuple[Path, Path], tmp_path: Path) -> None:
    options, weights = bilm_files
    result = run("convert", weights, options, "-o", tmp_path / "m.onnx")
    one_line_error(result, f"{weights}: is an HDF5 file, not an options.json — arguments swapped?")
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.slow
@pytest.mark.usefixtures("convert_cli")
def test_convert_without_o_writes_beside_the_weights(tmp_path: Path) -> None:
    pytest.importorskip("h5py", reason="reading weight files needs h5py (convert extra)")
    from support.bilm_fixtures import require_fixtures

    d = require_fixtures()
    weights = tmp_path / "lm_weights.hdf5"
    weights.write_bytes((d / "lm_weights.hdf5").read_bytes())
    result = run("convert", d / "options.json", weights)
    assert result.exit_code == 0, result.output
    assert f"no -o given: writing {tmp_path / 'lm_weights.onnx'}" in result.stderr
    assert Embedder(tmp_path / "lm_weights.onnx").info.parity["checked"]


# ---------------------------------------------------------------- info


def test_info_takes_model_as_an_option(toy_model_path: Path) -> None:
    by_option = run("info", "-m", toy_model_path)
    assert by_option.exit_code == 0, by_option.output
    assert by_option.stdout == run("info", toy_model_path).stdout
    assert run("info", "--model", toy_model_path, "--json").exit_code == 0
    one_line_error(run("info", toy_model_path, "-m", toy_model_path),
                   "give the model once: MODEL or --model, not both", code=2)


def test_parity_of_an_older_export_says_it_passed() -> None:
    old = {"checked": True, "atol": 1e-5, "max_abs_diff": 1.91e-5, "reference": "torch 2.13.0",
           "shapes": [[1, 3], [5, 35]]}
    assert format_parity(old) == (
        "against torch 2.13.0 on 2 shapes: passed at export with max |diff| 1.91e-05; "
        "tolerance atol 1.0e-05 × max(1, |reference output|) (the applied value was not "
        "recorded at export)"
    )


def test_nested_metadata_prints_as_lines_not_dict_dumps(toy_model_path: Path) -> None:
    d = describe(str(toy_model_path))
    d["source"] = {"kind": "train", "corpus": {"lines": 41084, "tokens": 249284}}
    d["quantization"] = {
        "mode": "int8",
        "check": {"passed": True, "batch_independence": {"max_abs_diff": 0.0},
                  "cosine": [{"layer": 0, "mean": 0.99988271637, "min": 0.9995923752}]},
    }
    text = format_info(d)
    assert "{" not in text and "'" not in text
    lines = text.splitlines()
    at = lines.index("quantization  mode=int8")
    assert lines[at + 1:at + 4] == [
        "              check: passed=True",
        "              check: batch_independence: max_abs_diff=0",
        "              check: cosine: layer=0, mean=0.999883, min=0.999592",
    ]
    assert "source        kind=train" in lines
    assert "              corpus: lines=41084, tokens=249284" in lines


# ---------------------------------------------------------------- embed


def test_missing_output_names_output(tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("a\n")
    one_line_error(run("embed", src), f"missing OUTPUT (after INPUT {src})", code=2)
    one_line_error(run("embed"), "missing INPUT and OUTPUT", code=2)


def test_ray_without_ray_says_so_before_looking_at_output(
    tmp_path: Path, toy_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from elmo_runtime.errors import RAY_HINT

    monkeypatch.setitem(sys.modules, "ray", None)
    src = tmp_path / "in.txt"
    src.write_text("a\n")
    (tmp_path / "m.npz").write_bytes(b"x")
    result = run("embed", src, tmp_path / "m.npz", "--engine", "ray", "-m", toy_model_path)
    assert result.stderr == f"Error: {RAY_HINT}\n"


def test_python_m_elmo_runtime() -> None:
    done = subprocess.run([sys.executable, "-m", "elmo_runtime", "--version"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"elmo, version {__version__}"
