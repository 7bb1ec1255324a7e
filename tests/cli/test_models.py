"""Bundled models by name, the registry against the files, `elmo info`, the helpers once."""

from __future__ import annotations

import ast
import json
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from elmo_runtime import __version__
from elmo_runtime.cli import main
from elmo_runtime.cli.info import format_parity
from elmo_runtime.cli.progress import RateEta
from elmo_runtime.embedder import Embedder
from elmo_runtime.errors import ModelError, first_line
from elmo_runtime.files import PARTIAL, atomic_path, format_mib
from elmo_runtime.loading.model_file import resolve_model
from elmo_runtime.models import (
    DEFAULT,
    bundled_models,
    get,
    models_dir,
)
from elmo_runtime.models.maintain import check_registry
from support import REPO

PACKAGES = (REPO / "runtime", REPO / "export")


def run(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def needs_bundled() -> None:
    if not get(DEFAULT).path.is_file():
        pytest.skip("this installation has no bundled models")


# ---------------------------------------------------------------- the registry


def test_the_registry_matches_the_files() -> None:
    """Size, sha256, dims and quantization as measured from each file (refresh:
    `python -m elmo_runtime.models --update`)."""
    needs_bundled()
    assert check_registry() == []
    names = [m.name for m in bundled_models()]
    assert names[0] == DEFAULT and "default-int8" in names
    assert get("default-int8").quantization == "int8" and get(DEFAULT).quantization == "none"


def test_names_resolve_and_paths_stay_paths(tmp_path: Path) -> None:
    needs_bundled()
    assert resolve_model(None) == resolve_model("default") == models_dir() / "default.onnx"
    assert resolve_model("default-int8") == models_dir() / "default.int8.onnx"
    assert resolve_model(Path("default")) == Path("default")  # a Path is always a path
    assert resolve_model("./default") == Path("default")
    with pytest.raises(ModelError, match="no bundled model named 'nope'; bundled: default, "):
        get("nope")


def test_model_by_name_in_every_command(tmp_path: Path) -> None:
    needs_bundled()
    src = tmp_path / "in.txt"
    src.write_text("The bank raised its rates .\n")
    out = tmp_path / "o.npz"
    result = run("embed", src, out, "--model", "default-int8", "--top")
    assert result.exit_code == 0, result.output
    with np.load(out) as z:
        expected = Embedder("default-int8", mix="top").embed_sentence(
            ["The", "bank", "raised", "its", "rates", "."]
        )
        np.testing.assert_allclose(z["0"], expected, atol=1e-6)
    info = run("info", "default-int8")
    assert info.exit_code == 0, info.output
    assert "bundled       default-int8: " in info.stdout and "mode=int8" in info.stdout


def test_info_without_a_model_describes_the_default() -> None:
    needs_bundled()
    result = run("info")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    size = get(DEFAULT).size_bytes
    assert lines[0] == f"model         {get(DEFAULT).path} ({size / 2**20:.1f} MiB)"
    assert lines[1].startswith("bundled       default: ")
    assert "license: WordNet 3.0 license" in lines[1]
    as_json = json.loads(run("info", "--json").stdout)
    assert as_json["bundled"]["sha256"] == get(DEFAULT).sha256


def test_the_card_the_registry_and_the_license_ship_in_the_package() -> None:
    """The pyproject package-data patterns match the files beside the models."""
    tomllib = pytest.importorskip("tomllib")
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = data["tool"]["setuptools"]["package-data"]["elmo_runtime"]
    package = REPO / "runtime" / "elmo_runtime"
    shipped = {p.name for pattern in patterns for p in package.glob(pattern)}
    assert {"MODEL_CARD.md", "registry.json", "LICENSE.wordnet"} <= shipped
    assert {m.file for m in bundled_models()} <= shipped
    assert (models_dir() / "MODEL_CARD.md").is_file()


# ---------------------------------------------------------------- info: parity and sizes


def test_parity_line_prints_the_tolerance_applied() -> None:
    recorded = {"checked": True, "atol": 1e-5, "max_abs_diff": 1.9e-5, "tolerance": 3.2e-4,
                "reference": "float64 NumPy", "shapes": [[1, 1], [3, 8]]}
    assert format_parity(recorded) == (
        "against float64 NumPy on 2 shapes: max |diff| 1.90e-05, tolerance applied 3.20e-04 "
        "(atol 1.0e-05 × 32)"
    )
    old = {k: v for k, v in recorded.items() if k != "tolerance"}
    assert format_parity(old).endswith(
        "tolerance atol 1.0e-05 × max(1, |reference output|) (the applied value was not "
        "recorded at export)"
    )
    assert format_parity({"checked": False}) == "not checked"


def test_export_parity_records_the_tolerance_it_applied(tiny_model_path: Path) -> None:
    """check_parity holds each output to atol x max(1, |reference|) and records that value."""
    parity = pytest.importorskip("elmo_export.graph.parity")
    from elmo_runtime.format.contract import parse_metadata
    from elmo_runtime.loading.session import create_session

    data = tiny_model_path.read_bytes()
    session = create_session(data, "cpu")
    options = parse_metadata(session.get_modelmeta().custom_metadata_map, "tiny").options
    shift, atol, scales = 5e-6, 1e-5, []

    def reference(feed: dict) -> dict:
        outputs = dict(zip(parity.COMPARED, session.run(list(parity.COMPARED), feed),
                           strict=True))
        outputs["layers"] = outputs["layers"].astype(np.float64) + shift
        scales.append(max(1.0, float(np.abs(outputs["layers"]).max())))
        return outputs

    report = parity.check_parity(reference, "shifted", options, data, atol=atol,
                                 shapes=((2, 5),))
    assert report.max_abs_diff == pytest.approx(shift, rel=1e-2)
    assert report.tolerance == pytest.approx(atol * scales[0])  # what it was actually held to
    assert report.metadata(atol)["tolerance"] == report.tolerance


def test_one_size_unit() -> None:
    assert format_mib(12011710) == "11.5 MiB"
    assert format_mib(3 * 2**20) == "3.0 MiB"


# ---------------------------------------------------------------- helpers once


def test_first_line() -> None:
    assert first_line(RuntimeError("\n  first\nsecond")) == "first"
    assert first_line(ValueError()) == "ValueError"


def test_version_from_package_metadata() -> None:
    assert __version__ == metadata.version("elmo-edge")
    assert run("--version").stdout.strip() == f"elmo, version {__version__}"


def test_atomic_path_is_the_one_temp_then_rename(tmp_path: Path) -> None:
    target = tmp_path / "x.bin"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        assert PARTIAL in tmp.name and tmp.parent == tmp_path
        tmp.write_bytes(b"half")
        raise RuntimeError("stop")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole" and list(tmp_path.iterdir()) == [target]


def _functions_named(name: str) -> list[str]:
    found = []
    for root in PACKAGES:
        for path in root.rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            found += [f"{path.relative_to(REPO)}:{node.lineno}" for node in ast.walk(tree)
                      if isinstance(node, ast.FunctionDef) and node.name == name]
    return found


def test_one_first_line_formatter_and_no_partial_literals() -> None:
    assert _functions_named("_first_line") == []
    assert _functions_named("first_line") == ["runtime/elmo_runtime/errors.py:" + str(
        next(i for i, line in enumerate(
            (REPO / "runtime/elmo_runtime/errors.py").read_text().splitlines(), 1)
            if line.startswith("def first_line")))]
    literal = [str(p.relative_to(REPO)) for root in PACKAGES for p in root.rglob("*.py")
               if '".partial-"' in p.read_text(encoding="utf-8")
               or "'.partial-'" in p.read_text(encoding="utf-8")]
    assert literal == ["runtime/elmo_runtime/files.py"]


def test_install_hints_in_one_place() -> None:
    offenders = []
    for root in PACKAGES:
        for path in root.rglob("*.py"):
            if path.name == "errors.py":
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                          if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef))
                          and n.body and isinstance(n.body[0], ast.Expr)}
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                        and "pip install 'elmo-edge[" in node.value and id(node) not in docstrings:
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []


# ---------------------------------------------------------------- the progress ETA


def test_eta_from_the_rate_after_the_first_lines() -> None:
    """A slow start (model load, first window) does not inflate the ETA of a short run."""
    now = [0.0]
    eta = RateEta(1000, clock=lambda: now[0])
    assert eta.text() == "ETA --:--"
    now[0] = 20.0  # 20 s of warm-up before the first lines are done
    eta.update(64)
    assert eta.seconds_left() is None  # no rate measured yet
    now[0] = 22.0
    eta.update(200)  # 200 lines in 2 s: 100 lines/s
    assert eta.seconds_left() == pytest.approx((1000 - 264) / 100)
    assert eta.text() == "ETA 00:07"
    now[0] = 22.0 + 7.36
    eta.update(736)
    assert eta.seconds_left() == 0.0
    big = RateEta(10**6, clock=lambda: now[0])
    big.update(1)
    now[0] += 1
    big.update(99)
    assert big.text() == "ETA 2:48:20"  # (10**6 - 100) / 99 lines/s = 10,100 s
