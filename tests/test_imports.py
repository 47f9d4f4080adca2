"""No import cycles inside kerasbd, no import of a kerasbd module that does not exist, and every module imports.

The module graph is read statically (``ast``) from every file under ``kerasbd/``, so lazy imports inside functions
count as much as module-level ones (a cycle through a function-level import still couples the two modules, and
is one refactoring away from failing at import time). Rules:

- a package is its ``__init__``; ``import kerasbd.a.b`` and ``from kerasbd.a.b import x`` are edges to
  ``kerasbd.a.b``; ``from kerasbd.a import b`` is an edge to ``kerasbd.a.b`` when that is a module, else to
  ``kerasbd.a``; relative imports resolve the same way; ``importlib.import_module("kerasbd...")`` with a literal
  name counts too;
- the implicit import of the parent packages' ``__init__`` (``kerasbd.a`` before ``kerasbd.a.b``) is *not* an
  edge: Python runs a package's ``__init__`` before its submodules and tolerates a submodule being imported while
  that ``__init__`` is half done, so counting it would flag every package that re-exports its submodules. What an
  ``__init__`` itself imports does count;
- imports under ``if TYPE_CHECKING:`` never run and are left out.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections import deque
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "kerasbd"


@dataclass(frozen=True)
class Site:
    """Where an import statement sits."""

    path: str
    line: int
    lazy: bool  # inside a function: runs when called, not when the module is imported

    def __str__(self) -> str:
        return f"{self.path}:{self.line}" + (" (in a function)" if self.lazy else "")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Imports(ast.NodeVisitor):
    """Collects ``(imported module name, line, lazy)`` for every kerasbd import of one module."""

    def __init__(self, module: str, is_package: bool) -> None:
        # the package relative imports start from: a package's own name, else its parent
        self.package = module if is_package else module.rpartition(".")[0]
        self.depth = 0  # nesting in function bodies
        self.found: list[tuple[str, int, bool]] = []

    def _add(self, name: str, node: ast.stmt | ast.expr) -> None:
        if name == "kerasbd" or name.startswith("kerasbd."):
            self.found.append((name, node.lineno, self.depth > 0))

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            parts = self.package.split(".")
            origin = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
        else:
            origin = node.module or ""
        for alias in node.names:
            sub = f"{origin}.{alias.name}"
            self._add(sub if sub in MODULES else origin, node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
        if name == "import_module" and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            self._add(node.args[0].value, node)
        self.generic_visit(node)


def import_graph() -> tuple[dict[str, dict[str, list[Site]]], list[str]]:
    """``{module: {imported module: [sites]}}`` over kerasbd, and the imports naming no kerasbd module."""
    graph: dict[str, dict[str, list[Site]]] = {name: {} for name in MODULES}
    missing: list[str] = []
    for module, path in MODULES.items():
        visitor = _Imports(module, path.name == "__init__.py")
        visitor.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        for target, line, lazy in visitor.found:
            site = Site(str(path.relative_to(ROOT)), line, lazy)
            if target not in MODULES:
                missing.append(f"{site}: {target}")
            elif target != module:  # a module importing itself finds itself in sys.modules: no cycle
                graph[module].setdefault(target, []).append(site)
    return graph, missing


def strongly_connected(graph: dict[str, dict[str, list[Site]]]) -> list[list[str]]:
    """Tarjan's strongly-connected components (each sorted), in a stable order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
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
            components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(components)


def _shortest_path(graph: dict[str, dict[str, list[Site]]], start: str, goal: str, within: set[str]) -> list[str]:
    previous: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        if v == goal:
            break
        for w in sorted(graph[v]):
            if w in within and w not in previous:
                previous[w] = v
                queue.append(w)
    path: list[str] = []
    node: str | None = goal
    while node is not None:
        path.append(node)
        node = previous[node]
    return path[::-1]


def cycles(graph: dict[str, dict[str, list[Site]]]) -> list[list[str]]:
    """Cycles as module chains (first = last): per strongly-connected component, shortest cycles covering each of
    its edges, so every import that takes part in a cycle appears in at least one chain."""
    found: list[list[str]] = []
    for component in strongly_connected(graph):
        members = set(component)
        if len(component) == 1 and component[0] not in graph[component[0]]:
            continue
        covered: set[tuple[str, str]] = set()
        for u in component:
            for v in sorted(graph[u]):
                if v in members and (u, v) not in covered:
                    chain = [u, *_shortest_path(graph, v, u, members)]
                    covered |= set(pairwise(chain))
                    found.append(chain)
    return found


def describe(graph: dict[str, dict[str, list[Site]]], chain: list[str]) -> str:
    """``a --[a.py:3]--> b --[b.py:9 (in a function)]--> a``."""
    text = chain[0]
    for u, v in pairwise(chain):
        text += f" --[{', '.join(map(str, graph[u][v]))}]--> {v}"
    return text


def test_import_resolution() -> None:
    source = '''
from . import classifier, not_a_module
from .. import errors
from .spec import InputSpec
from kerasbd.models.classifier import Classifier
import numpy, kerasbd.zoo as zoo
def load():
    import kerasbd.cli
    return importlib.import_module("kerasbd.data")
if TYPE_CHECKING:
    from kerasbd.training import fit_classifier
'''
    visitor = _Imports("kerasbd.models.surgery", is_package=False)
    visitor.visit(ast.parse(source))
    assert visitor.found == [
        ("kerasbd.models.classifier", 2, False), ("kerasbd.models", 2, False), ("kerasbd.errors", 3, False),
        ("kerasbd.models.spec", 4, False), ("kerasbd.models.classifier", 5, False), ("kerasbd.zoo", 6, False),
        ("kerasbd.cli", 8, True), ("kerasbd.data", 9, True),
    ]
    package = _Imports("kerasbd.models", is_package=True)
    package.visit(ast.parse("from .spec import InputSpec\nfrom . import surgery"))
    assert package.found == [("kerasbd.models.spec", 1, False), ("kerasbd.models.surgery", 2, False)]


def test_no_import_cycles() -> None:
    graph, _ = import_graph()
    found = cycles(graph)
    assert not found, f"{len(found)} import cycle(s) inside kerasbd:\n" + "\n".join(describe(graph, c) for c in found)


def test_every_kerasbd_import_names_a_module() -> None:
    # lazy imports of moved or deleted modules fail only when their function runs; catch them here
    _, missing = import_graph()
    assert not missing, "imports of kerasbd modules that do not exist:\n" + "\n".join(missing)


# Each module is imported as the first kerasbd module of the process (kerasbd is dropped from sys.modules in
# between), so an order-dependent cycle cannot hide behind an earlier import; third-party packages stay loaded to
# keep this to one interpreter start.
_IMPORT_EACH = """
import importlib, json, sys, traceback
import keras, numpy, tensorflow
failures = {}
for name in json.loads(sys.argv[1]):
    for loaded in [m for m in sys.modules if m == "kerasbd" or m.startswith("kerasbd.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as exc:
        failures[name] = traceback.format_exc(limit=-3).strip() + "\\n(" + type(exc).__name__ + ")"
print(json.dumps(failures))
"""


def test_every_module_imports_in_a_fresh_process() -> None:
    names = [name for name in MODULES if name != "kerasbd.__main__"]  # __main__ runs the command line
    env = {"TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, "-c", _IMPORT_EACH, json.dumps(names)], capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, **env}, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    failures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not failures, f"{len(failures)} kerasbd module(s) fail to import:\n" + "\n\n".join(f"{n}:\n{e}" for n, e in failures.items())
