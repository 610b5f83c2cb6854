"""The server's parts are layered as rehearsal/server.py's module doc says: none imports one above it."""

from __future__ import annotations

import ast
from pathlib import Path

REHEARSAL = Path(__file__).resolve().parents[2] / "rehearsal"
# Bottom to top; modules on one line may not import each other either.
LAYERS = [
    ["links", "hands"],
    ["live_room"],
    ["publishing", "presence"],
    ["sessions"],
    ["connections"],
    ["udp_transport", "status"],
    ["server"],
]


def rehearsal_imports(name: str) -> set[str]:
    tree = ast.parse((REHEARSAL / f"{name}.py").read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rehearsal."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("rehearsal."))
    return found


def test_no_part_of_the_server_imports_a_part_above_it_or_beside_it():
    for level, names in enumerate(LAYERS):
        not_below = {n for layer in LAYERS[level:] for n in layer}
        for name in names:
            assert not rehearsal_imports(name) & not_below, (name, rehearsal_imports(name) & not_below)


def test_of_the_servers_parts_only_the_udp_transport_and_the_root_know_the_netcode_server():
    """Everything else reaches clients through Links, whatever carries their bytes."""
    for name in [n for layer in LAYERS for n in layer if n not in ("udp_transport", "server")]:
        path = REHEARSAL / f"{name}.py"
        tree = ast.parse(path.read_text(encoding="utf-8"))
        modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not modules & {"netcode.transport.server", "netcode.transport.udp"}, path.name
