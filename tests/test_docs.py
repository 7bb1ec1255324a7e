"""ARCHITECTURE.md matches the tree: every room its tables name exists, every room of both
packages is in a table, each room's row names the modules inside it, and every name of its
"Public API" imports."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
from support import REPO
from support.requires import missing

ARCHITECTURE = REPO / "ARCHITECTURE.md"
TABLES = {"Rooms of the light side": REPO / "runtime" / "elmo_runtime",
          "Rooms of the heavy side": REPO / "export" / "elmo_export"}
CODE = re.compile(r"`([A-Za-z_][\w./]*)`")
PUBLIC = re.compile(r"`(elmo_(?:runtime|export)(?:\.\w+)+|elmo_runtime|elmo_export)`")
# what importing a public name needs beyond the runtime's own dependencies
NEEDS = {"elmo_export.efml": ("torch",), "elmo_export.pytorch": ("torch",),
         "elmo_export.train": ("torch",), "elmo_export": ("h5py",),
         "elmo_runtime.serve": ("starlette", "uvicorn", "prometheus_client", "orjson")}


def section(title: str, text: str | None = None) -> str:
    """The text of ``## title`` up to the next ``## `` heading."""
    text = ARCHITECTURE.read_text(encoding="utf-8") if text is None else text
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def rows(text: str) -> dict[str, str]:
    """Each table row of ``text``: its first cell → the whole row."""
    found = {}
    for line in text.splitlines():
        cells = line.split("|")
        if len(cells) > 2 and "`" in cells[1]:
            found[cells[1]] = line
    return found


def rooms(root: Path) -> set[str]:
    """A folder's rooms: its folders (``name/``) and modules (``name.py``), __init__ and
    __main__ aside."""
    return {f"{p.name}/" if p.is_dir() else p.name for p in root.iterdir()
            if (p.is_dir() and p.name != "__pycache__")
            or (p.suffix == ".py" and p.name not in ("__init__.py", "__main__.py"))}


def disagreements(text: str, tables: dict[str, Path]) -> list[str]:
    """Where the room tables in ``text`` and the folders of ``tables`` disagree."""
    bad = []
    for title, root in tables.items():
        table = rows(section(title, text))
        named = {n for cell in table for n in CODE.findall(cell) if n.endswith(("/", ".py"))}
        where = root.relative_to(root.parents[1])
        bad += [f"`{n}` is in the table of {where} but not in the tree" for n in
                sorted(named - rooms(root))]
        bad += [f"{where}/{n} is in no row of its table" for n in sorted(rooms(root) - named)]
        for cell, line in table.items():
            mentioned = set(CODE.findall(line))
            for room in CODE.findall(cell):
                if room.endswith("/") and (root / room).is_dir():
                    bad += [f"{where}/{room}{inner} is not named in the row of `{room}`"
                            for inner in sorted(rooms(root / room))
                            if inner not in mentioned and inner.removesuffix(".py")
                            not in mentioned]
    return bad


def public_names(text: str) -> list[str]:
    return sorted(set(PUBLIC.findall(section("Public API", text))))


def test_the_room_tables_match_the_tree() -> None:
    assert disagreements(ARCHITECTURE.read_text(encoding="utf-8"), TABLES) == []


@pytest.mark.parametrize("name", public_names(ARCHITECTURE.read_text(encoding="utf-8")))
def test_every_public_name_imports(name: str) -> None:
    needs = next((v for k, v in sorted(NEEDS.items(), reverse=True)
                  if name == k or name.startswith(k + ".")), ())
    if any(missing(n) for n in needs):
        pytest.skip(f"{name} needs {', '.join(needs)}")
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):  # the longest importable module, then attributes
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return
    pytest.fail(f"{name}: no module of it imports")


def test_the_checks_find_disagreement(tmp_path: Path) -> None:
    """Guards for the tests above: a missing room, an unlisted room, an unnamed module."""
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    for name in ("a.py", "b.py", "sub/x.py", "sub/y.py"):
        (root / name).write_text("")
    text = ("## Rooms\n\n| room | owns |\n| --- | --- |\n| `a.py` | a |\n| `gone/` | g |\n"
            "| `sub/` | `x` only |\n\n## Public API\n\n- `elmo_runtime.nope.Thing`\n")
    assert disagreements(text, {"Rooms": root}) == [
        "`gone/` is in the table of tmp/pkg but not in the tree".replace("tmp", tmp_path.name),
        f"{tmp_path.name}/pkg/b.py is in no row of its table",
        f"{tmp_path.name}/pkg/sub/y.py is not named in the row of `sub/`",
    ]
    assert public_names(text) == ["elmo_runtime.nope.Thing"]
