"""The import graph of both packages, read from the source (AST, no import is run).

Every ``import`` and ``from … import`` counts, at module level and inside functions (lazy
imports run too, just later), plus ``importlib.import_module("literal")``; imports under
``if TYPE_CHECKING:`` never run and do not count. An edge goes from a module to the deepest
module it names (``from pkg import mod`` names ``pkg.mod``), not to the parent packages that
Python initialises on the way. The rules (ARCHITECTURE.md):

* the runtime has no import cycle;
* the runtime imports neither torch nor ``elmo_export``, and names no ``elmo_export`` module in
  a string (the ``elmo`` group finds the export side's commands through entry points);
* the torch-free rooms of the export side (``bilm_tf``, ``graph``, ``presets``) import neither
  torch nor a torch room (``efml``, ``pytorch``, ``train``), not even lazily;
* export rooms import downward only (:data:`ROOM_IMPORTS`: ``train`` → ``pytorch`` → ``graph``
  → ``bilm_tf``; ``efml`` → ``pytorch``, ``graph``);
* the runtime's imports point down its layers (:data:`RUNTIME_LAYERS`), and every runtime
  module is in one;
* ``elmo_export.cli`` loads without torch: nothing it imports at module level, followed
  through every module of ours it reaches, imports torch at module level.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from dataclasses import dataclass

from support import REPO

ROOTS = {"elmo_runtime": REPO / "runtime" / "elmo_runtime",
         "elmo_export": REPO / "export" / "elmo_export"}
TORCH_FREE_ROOMS = ("elmo_export.bilm_tf", "elmo_export.graph", "elmo_export.presets")
TORCH_ROOMS = ("elmo_export.efml", "elmo_export.pytorch", "elmo_export.train")
EXPORT_STRING = re.compile(r"^elmo_export(\.|:|$)")
# Which export rooms each room may import: arrows point down, never back (cli.py: any).
ROOM_IMPORTS = {
    "bilm_tf": set(),
    "presets": set(),
    "graph": {"bilm_tf"},
    "pytorch": {"bilm_tf", "graph"},
    "efml": {"bilm_tf", "graph", "pytorch"},
    "train": {"bilm_tf", "graph", "pytorch"},
}

# The runtime's layers, lowest first: a module may import its own layer and those below, never
# one above (a unit is a room, a module or a package; the longest name that matches wins; ""
# is the package's __init__). ARCHITECTURE.md, "Import direction", says the same in words.
RUNTIME_LAYERS = (
    ("errors", "version", "files", "cpus"),
    ("format",),
    ("models", "tokenize", "token_cache", "states", "mix", "batching", "corpus", "fasta"),
    ("loading",),
    ("settings", "embedder", "mix_fit"),
    ("output", "quantize", "compat", "serve", "models.maintain"),
    ("cli", "serve.command", "webserve", "__main__", "models.__main__", ""),
)


@dataclass(frozen=True)
class Import:
    """``module`` imports ``target`` (absolute) at ``line``; ``lazy``: inside a function."""

    module: str
    target: str
    line: int
    lazy: bool


@dataclass(frozen=True)
class Source:
    """One module's text; ``package``: it is an ``__init__.py``."""

    name: str
    text: str
    package: bool = False


def sources() -> list[Source]:
    """Every module of both packages."""
    found = []
    for top, root in ROOTS.items():
        for path in sorted(root.rglob("*.py")):
            parts = [top, *path.relative_to(root).with_suffix("").parts]
            package = parts[-1] == "__init__"
            name = ".".join(parts[:-1] if package else parts)
            found.append(Source(name, path.read_text(encoding="utf-8"), package))
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _absolute(source: Source, module: str | None, level: int) -> str:
    if level == 0:
        return module or ""
    base = source.name.split(".")
    base = base if source.package else base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def imports_of(source: Source, known: set[str]) -> list[Import]:
    """The imports ``source`` runs (module level and lazy), resolved against ``known``."""
    found: list[Import] = []

    def add(target: str, node: ast.AST, lazy: bool) -> None:
        found.append(Import(source.name, target, node.lineno, lazy))

    def visit(node: ast.AST, lazy: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child, lazy)
            return
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            lazy = True
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node, lazy)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(source, node.module, node.level)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                add(sub if sub in known else base, node, lazy)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            add(node.args[0].value, node, lazy)
        for child in ast.iter_child_nodes(node):
            visit(child, lazy)

    visit(ast.parse(source.text), lazy=False)
    return found


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def export_strings(source: Source) -> list[str]:
    """String constants (docstrings aside) that name an elmo_export module or object."""
    tree = ast.parse(source.text)
    skip = _docstrings(tree)
    return [f"{source.name}:{node.lineno}: {node.value!r}" for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in skip and EXPORT_STRING.match(node.value)]


def graph(all_sources: Iterable[Source]) -> dict[str, list[Import]]:
    """Module → its imports, for every module of ``all_sources``."""
    listed = list(all_sources)
    known = {s.name for s in listed}
    return {s.name: imports_of(s, known) for s in listed}


def cycles(edges: dict[str, list[Import]], within: str) -> list[list[str]]:
    """The import cycles among modules named ``within`` or ``within.*`` (Tarjan's strongly
    connected components; each cycle listed as the modules of one component)."""
    inside = [m for m in edges if m == within or m.startswith(within + ".")]
    succ = {m: sorted({i.target for i in edges[m] if i.target in edges
                       and (i.target == within or i.target.startswith(within + "."))})
            for m in inside}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:  # recursion depth is bounded by the package's module count
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in succ[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in succ[v]:
                found.append(sorted(component))

    for v in inside:
        if v not in index:
            connect(v)
    return found


def _describe(edges: dict[str, list[Import]], component: list[str]) -> str:
    """The shortest cycle through the component's first module, each arrow with its line."""
    members = set(component)
    start = component[0]
    came: dict[str, Import] = {}
    frontier = [start]
    while frontier and start not in came:
        following = []
        for m in frontier:
            for i in edges[m]:
                if i.target in members and i.target not in came:
                    came[i.target] = i
                    following.append(i.target)
        frontier = following
    arrows, at = [], start
    while True:
        i = came[at]
        arrows.append(f"{i.module}:{i.line} -> {i.target}{' (lazy)' if i.lazy else ''}")
        at = i.module
        if at == start:
            break
    return f"{len(component)} modules, e.g. " + "; ".join(reversed(arrows))


def _in(name: str, rooms: Iterable[str]) -> bool:
    return any(name == r or name.startswith(r + ".") for r in rooms)


def torch_wall_violations(edges: dict[str, list[Import]]) -> list[str]:
    """Imports of torch or a torch room from a torch-free room (lazy ones too)."""
    return [f"{i.module}:{i.line} imports {i.target}{' (lazy)' if i.lazy else ''}"
            for m, imports in edges.items() if _in(m, TORCH_FREE_ROOMS)
            for i in imports if _in(i.target, ("torch", *TORCH_ROOMS))]


def room_violations(edges: dict[str, list[Import]]) -> list[str]:
    """Imports between export rooms that :data:`ROOM_IMPORTS` does not allow."""
    def room(name: str) -> str | None:
        parts = name.split(".")
        return parts[1] if len(parts) > 1 and parts[0] == "elmo_export" else None

    return [f"{i.module}:{i.line} imports {i.target}{' (lazy)' if i.lazy else ''}"
            for m, imports in edges.items() if room(m) in ROOM_IMPORTS
            for i in imports if room(i.target) not in (None, room(m))
            and room(i.target) not in ROOM_IMPORTS[room(m)]]


def runtime_layer(name: str) -> tuple[int, str] | None:
    """(layer, unit) of a runtime module (:data:`RUNTIME_LAYERS`); None outside the runtime or
    for a module no unit names."""
    if name != "elmo_runtime" and not name.startswith("elmo_runtime."):
        return None
    rest = name.removeprefix("elmo_runtime").removeprefix(".")
    found = None
    for layer, units in enumerate(RUNTIME_LAYERS):
        for unit in units:
            if (rest == unit or (unit and rest.startswith(unit + "."))) and (
                    found is None or len(unit) > len(found[1])):
                found = (layer, unit)
    return found


def layer_violations(edges: dict[str, list[Import]]) -> list[str]:
    """Runtime imports that point up a layer, and runtime modules no layer names."""
    bad = [f"{m} is in no layer of RUNTIME_LAYERS (place it there, and in ARCHITECTURE.md)"
           for m in edges
           if _in(m, ("elmo_runtime",)) and runtime_layer(m) is None]
    for m, imports in edges.items():
        here = runtime_layer(m)
        for i in imports:
            there = runtime_layer(i.target)
            if here and there and there[0] > here[0]:
                bad.append(f"{i.module}:{i.line} ({here[1]}) imports {i.target} ({there[1]}, "
                           f"a higher layer){' (lazy)' if i.lazy else ''}")
    return bad


def module_level_torch(edges: dict[str, list[Import]], start: str) -> list[str]:
    """Paths from ``start`` through module-level imports of our modules to ``import torch``."""
    paths: list[str] = []
    seen = {start}
    todo = [[start]]
    while todo:
        path = todo.pop()
        for i in edges.get(path[-1], []):
            if i.lazy:
                continue
            if _in(i.target, ("torch",)):
                paths.append(" -> ".join([*path, i.target]))
            elif i.target in edges and i.target not in seen:
                seen.add(i.target)
                todo.append([*path, i.target])
    return paths


EDGES = graph(sources())


# -------------------------------------------------------------------------------- the rules


def test_no_import_cycle_in_the_runtime() -> None:
    found = cycles(EDGES, "elmo_runtime")
    assert not found, "import cycles in runtime/: " + " | ".join(
        _describe(EDGES, c) for c in found)


def test_runtime_imports_neither_torch_nor_the_export_side() -> None:
    bad = [f"{i.module}:{i.line} imports {i.target}" for m, imports in EDGES.items()
           if _in(m, ("elmo_runtime",)) for i in imports
           if _in(i.target, ("torch", "elmo_export"))]
    bad += [s for src in sources() if _in(src.name, ("elmo_runtime",))
            for s in export_strings(src)]
    assert not bad, bad


def test_torch_free_rooms_import_no_torch_room() -> None:
    assert not torch_wall_violations(EDGES)


def test_export_rooms_import_downward() -> None:
    assert not room_violations(EDGES)


def test_runtime_imports_point_down_its_layers() -> None:
    assert not layer_violations(EDGES)


def test_export_cli_loads_without_torch() -> None:
    assert "elmo_export.cli" in EDGES
    assert not module_level_torch(EDGES, "elmo_export.cli")


def test_rooms_named_in_the_rules_exist() -> None:
    """A renamed room must be renamed here too, or the rules above would check nothing."""
    for room in (*TORCH_FREE_ROOMS, *TORCH_ROOMS, *(f"elmo_export.{r}" for r in ROOM_IMPORTS)):
        assert room in EDGES, room


# ---------------------------------------------------------------- the checker can fail


def _synthetic(**modules: str) -> dict[str, list[Import]]:
    return graph(Source(name.replace("__", "."), text) for name, text in modules.items())


def test_checker_finds_a_lazy_cycle() -> None:
    edges = _synthetic(
        elmo_runtime__a="from . import b\n",
        elmo_runtime__b="def f():\n    from .c import g\n",
        elmo_runtime__c="import elmo_runtime.a\n",
        elmo_runtime__d="from .a import x\n",
    )
    assert cycles(edges, "elmo_runtime") == [["elmo_runtime.a", "elmo_runtime.b",
                                              "elmo_runtime.c"]]
    assert _describe(edges, cycles(edges, "elmo_runtime")[0]) == (
        "3 modules, e.g. elmo_runtime.a:1 -> elmo_runtime.b; "
        "elmo_runtime.b:2 -> elmo_runtime.c (lazy); elmo_runtime.c:1 -> elmo_runtime.a")
    assert cycles(_synthetic(elmo_runtime__a="from . import a\n"), "elmo_runtime") == [
        ["elmo_runtime.a"]]
    assert cycles(_synthetic(elmo_runtime__a="from . import b\n", elmo_runtime__b=""),
                  "elmo_runtime") == []


def test_checker_skips_type_checking_only() -> None:
    edges = _synthetic(
        elmo_runtime__a="from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                        "    from .b import B\nelse:\n    import numpy\n",
        elmo_runtime__b="from .a import A\n",
    )
    assert cycles(edges, "elmo_runtime") == []
    assert [i.target for i in edges["elmo_runtime.a"]] == ["typing", "numpy"]


def test_checker_finds_the_torch_wall_broken() -> None:
    edges = _synthetic(
        elmo_export__graph__x="def f():\n    from ..pytorch.modules import BiLM\n",
        elmo_export__graph__y="import importlib\nimportlib.import_module('torch')\n",
        elmo_export__pytorch__modules="import torch\n",
        elmo_export__cli="from .pytorch import modules\n",
    )
    assert torch_wall_violations(edges) == [
        "elmo_export.graph.x:2 imports elmo_export.pytorch.modules (lazy)",
        "elmo_export.graph.y:2 imports torch",
    ]
    assert room_violations(edges) == [
        "elmo_export.graph.x:2 imports elmo_export.pytorch.modules (lazy)"]
    assert module_level_torch(edges, "elmo_export.cli") == [
        "elmo_export.cli -> elmo_export.pytorch.modules -> torch"]


def test_checker_finds_an_upward_import_and_an_unplaced_module() -> None:
    edges = _synthetic(
        elmo_runtime__format__chars="def f():\n    from ..embedder import Embedder\n",
        elmo_runtime__embedder="from .format import chars\n",
        elmo_runtime__serve__command="from ..cli import params\n",
        elmo_runtime__serve__app="from .command import main\n",
        elmo_runtime__newroom="",
    )
    assert layer_violations(edges) == [
        "elmo_runtime.newroom is in no layer of RUNTIME_LAYERS (place it there, and in "
        "ARCHITECTURE.md)",
        "elmo_runtime.format.chars:2 (format) imports elmo_runtime.embedder (embedder, a higher "
        "layer) (lazy)",
        "elmo_runtime.serve.app:1 (serve) imports elmo_runtime.serve.command (serve.command, a "
        "higher layer)",
    ]


def test_checker_finds_export_named_in_a_string() -> None:
    src = Source("elmo_runtime.cli", '"""elmo_export is named here: fine."""\n'
                 'TABLE = {"train": ("elmo_export.cli", "train_command")}\n')
    assert export_strings(src) == ["elmo_runtime.cli:2: 'elmo_export.cli'"]
