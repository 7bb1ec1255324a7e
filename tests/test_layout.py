"""The tests' own house rules: helpers come from tests/support/, never from another test
module or from a conftest.py (fixtures stay in conftest.py files, found by pytest)."""

from __future__ import annotations

import ast
from pathlib import Path

from support import REPO

TESTS = REPO / "tests"


def _imported(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in ``path``; ``from . import x`` gives ``.x``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                found += [(node.lineno, "." * node.level + (node.module or a.name))
                          for a in node.names]
            else:
                found.append((node.lineno, node.module or ""))
    return found


def test_no_test_module_imports_another_or_a_conftest() -> None:
    local = {p.stem for p in TESTS.rglob("*.py") if "support" not in p.relative_to(TESTS).parts}
    offenders = []
    for path in sorted(TESTS.rglob("*.py")):
        for line, module in _imported(path):
            top = module.split(".")[0]
            if module.startswith(".") or top in ("tests", "conftest") or top in local:
                offenders.append(f"{path.relative_to(REPO)}:{line}: imports {module}")
    assert offenders == [], "import helpers from tests/support/ instead:\n" + "\n".join(offenders)


def test_the_rule_sees_what_it_forbids(tmp_path: Path) -> None:
    """Guard for the test above: each forbidden form is found."""
    sample = tmp_path / "test_sample.py"
    sample.write_text("import conftest\nfrom test_cli import x\nfrom tests.util import y\n"
                      "from .test_a import z\nfrom support.cli import run_elmo\n")
    assert [m for _, m in _imported(sample)] == [
        "conftest", "test_cli", "tests.util", ".test_a", "support.cli"]


def test_no_fixture_lives_in_the_support_package() -> None:
    """Fixtures belong in conftest.py files (support/ holds plain helpers)."""
    offenders = []
    for path in sorted((TESTS / "support").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and any(
                "fixture" in ast.unparse(d) for d in node.decorator_list
            ):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.name}")
    assert offenders == []
