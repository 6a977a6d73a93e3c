"""The import graph has no cycle: every import counts, type-only and function-level ones included.

import-linter holds the layers (``lint-imports``, configured in pyproject.toml); a layer contract cannot see a
cycle inside one layer or one package, so this test looks at the whole graph of both import packages.
"""

from __future__ import annotations

import ast
from pathlib import Path

import grimp

PACKAGES = ("sos_kernel", "mumega_sdk")


def _graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, include_external_packages=False, cache_dir=None)


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected components of more than one module (iterative Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def _edges(graph: grimp.ImportGraph, component: list[str]) -> list[str]:
    return [
        f"{a} -> {b} (line {d['line_number']})"
        for a in component
        for b in component
        if a != b and graph.direct_import_exists(importer=a, imported=b)
        for d in graph.get_import_details(importer=a, imported=b)
    ]


def test_the_import_graph_has_no_cycle() -> None:
    graph = _graph()
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join("; ".join(_edges(graph, c)) for c in cycles)


def test_type_checking_and_function_level_imports_are_in_the_graph() -> None:
    # the check is only as good as its graph: both kinds of import must be edges in it
    graph = _graph()
    assert graph.direct_import_exists(importer="sos_kernel.kernel", imported="sos_kernel.session")
    details = graph.get_import_details(importer="sos_kernel.bus.service", imported="sos_kernel.guard")
    assert details, "a TYPE_CHECKING import is missing from the graph"


def test_a_cycle_is_found() -> None:
    graph = _graph()
    graph.add_import(importer="sos_kernel.errors", imported="sos_kernel.kernel")
    assert any("sos_kernel.errors" in c for c in _cycles(graph))


SRC = Path(__file__).resolve().parents[1] / "src"
FOREIGN = ("redis", "pydantic", "pydantic_core", "httpx", "anyio")


def _hacks(tree: ast.AST, foreign: set[str]) -> list[str]:
    """Private state of a dependency, ``__class__`` assignment and ``object.__new__`` in one module's tree."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            name = node.attr
            if name.startswith("__pydantic_") or (name == "__class__" and isinstance(node.ctx, ast.Store)):
                found.append(f"{node.lineno}: .{name}")
            elif name.startswith("_") and isinstance(node.value, ast.Name) and node.value.id in foreign:
                found.append(f"{node.lineno}: {node.value.id}.{name}")
            elif name == "__new__" and isinstance(node.value, ast.Name) and node.value.id == "object":
                found.append(f"{node.lineno}: object.__new__")
    return found


def _foreign_names(tree: ast.AST) -> set[str]:
    # the local names bound to a dependency's modules or objects
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.asname or a.name.split(".")[0] for a in node.names if a.name.split(".")[0] in FOREIGN}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in FOREIGN:
            names |= {a.asname or a.name for a in node.names}
    return names


def test_src_uses_only_public_apis_of_its_dependencies() -> None:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        found += [f"{path.relative_to(SRC)}:{hit}" for hit in _hacks(tree, _foreign_names(tree))]
    assert not found, "private state or class tricks in src/:\n" + "\n".join(found)


def test_the_public_api_check_finds_each_kind_of_hack() -> None:
    source = "import redis\nfrom pydantic import BaseModel\nBaseModel.__pydantic_complete__ = False\nx.__class__ = C\n"
    source += "redis._private\nobject.__new__(C)\n"
    tree = ast.parse(source)
    assert len(_hacks(tree, _foreign_names(tree))) == 4
