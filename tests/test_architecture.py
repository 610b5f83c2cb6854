"""Every package rule of ARCHITECTURE.md, checked on the import graph of the source tree.

Imports anywhere in a module count (a lazy import inside a function is still an arrow), so a rule cannot be
dodged by moving an import into a function.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("physics", "netcode", "rehearsal", "ops", "loadtests")
# netcode's layers, lowest first; a layer imports only layers listed before it (ARCHITECTURE.md, "netcode").
NETCODE_LAYERS = {
    "netcode.transport": set(),
    "netcode.messaging": {"netcode.transport"},
    "netcode.sync": {"netcode.transport", "netcode.messaging"},
    "netcode.protocol": {"netcode.transport", "netcode.messaging"},
    "netcode.thin_client": {"netcode.transport", "netcode.messaging", "netcode.sync", "netcode.protocol"},
}
# The modules of rehearsal/ that are clients of the server (simulated headsets, the client-prediction
# benchmark): the only ones that may import the thin client.
REHEARSAL_CLIENTS = {"rehearsal.bots", "rehearsal.demo", "rehearsal.response_bench"}
COMPOSITION_ROOT = "rehearsal.server"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            found[_module_name(path)] = path
    return found


def _resolve(name: str, ours: dict[str, Path]) -> str | None:
    """The module of ours that an imported dotted name lives in (a package's __init__ for a package)."""
    while name and name not in ours:
        name = name.rpartition(".")[0]
    return name or None


def _imported_names(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import (use absolute imports)"
            ours = modules()
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                yield submodule if submodule in ours else node.module


@cache
def import_graph() -> dict[str, frozenset[str]]:
    ours = modules()
    graph = {}
    for name, path in ours.items():
        targets = {_resolve(imported, ours) for imported in _imported_names(path)}
        graph[name] = frozenset(t for t in targets if t is not None and t != name)
    return graph


def _package(module: str) -> str:
    return module.split(".")[0]


def _layer(module: str) -> str:
    return ".".join(module.split(".")[:2])


def arrows(source: str) -> set[tuple[str, str]]:
    """(importer, imported) pairs for every module under ``source`` (a package or a module prefix)."""
    return {
        (a, b) for a, targets in import_graph().items() if a == source or a.startswith(source + ".") for b in targets
    }


def test_physics_imports_nothing_of_ours():
    assert {(a, b) for a, b in arrows("physics") if _package(b) != "physics"} == set()


def test_netcode_never_imports_physics_rehearsal_ops_or_loadtests():
    assert {(a, b) for a, b in arrows("netcode") if _package(b) != "netcode"} == set()


def test_netcode_layers_import_only_lower_layers():
    bad = set()
    for a, b in arrows("netcode"):
        if a == "netcode" or b == "netcode":
            continue  # the package docstring module
        if _layer(a) != _layer(b) and _layer(b) not in NETCODE_LAYERS[_layer(a)]:
            bad.add((a, b))
    assert bad == set()


def test_every_netcode_module_lives_in_a_layer():
    assert {m for m in modules() if _package(m) == "netcode" and m != "netcode"} <= {
        m for m in modules() if _layer(m) in NETCODE_LAYERS
    }


def test_ops_never_imports_rehearsal_or_loadtests():
    assert {(a, b) for a, b in arrows("ops") if _package(b) in {"rehearsal", "loadtests"}} == set()


def test_only_the_composition_root_imports_ops():
    assert {a for a, b in arrows("rehearsal") if _package(b) == "ops"} <= {COMPOSITION_ROOT}


def test_only_rehearsals_clients_import_the_thin_client():
    importers = {a for a, b in arrows("rehearsal") if _layer(b) == "netcode.thin_client"}
    assert importers <= REHEARSAL_CLIENTS


def test_nothing_imports_loadtests_or_tests():
    bad = {(a, b) for a, targets in import_graph().items() for b in targets if _package(b) == "loadtests"}
    assert {(a, b) for a, b in bad if _package(a) != "loadtests"} == set()
    for name, path in modules().items():
        assert not any(n == "tests" or n.startswith("tests.") for n in _imported_names(path)), name


def test_no_import_cycles():
    graph, index, low, stack, on_stack, cycles = import_graph(), {}, {}, [], set(), []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert cycles == []


def test_tests_import_no_private_names_of_the_packages():
    """Tests use the packages' public seams: ``from rehearsal.server import _Client`` is a defect."""
    bad = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and _package(node.module) in PACKAGES:
                bad += [f"{path.name}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert bad == []


def test_the_checks_see_the_tree():
    """The rules above are only as good as the graph: it must hold real arrows."""
    graph = import_graph()
    assert (
        "netcode.transport.udp" in graph["netcode.messaging.peers"]
        or "netcode.transport.server" in graph["netcode.messaging.peers"]
    )
    assert any(_package(b) == "ops" for b in graph[COMPOSITION_ROOT])
    assert any(_package(b) == "physics" for b in graph["rehearsal.room"])
