"""DESIGN.md's package direction: ops/ never imports rehearsal/; in rehearsal/ only the composition root
(server.py) imports ops/."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_ops_never_imports_rehearsal():
    for path in sorted((ROOT / "ops").rglob("*.py")):
        assert "rehearsal" not in imported_packages(path), path.name


def test_only_the_composition_root_imports_ops():
    importers = {p.name for p in (ROOT / "rehearsal").rglob("*.py") if "ops" in imported_packages(p)}
    assert importers <= {"server.py"}, importers
