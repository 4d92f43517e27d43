"""The layer rule: shared/ imports neither worker/ nor scheduler/; those two never import
each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "shared": {"worker", "scheduler"},
    "worker": {"scheduler"},
    "scheduler": {"worker"},
}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports(layer: str) -> None:
    files = sorted((REPO / layer).rglob("*.py"))
    assert files, f"no python files under {layer}/"
    violations = {
        str(path.relative_to(REPO)): sorted(imported_packages(path) & FORBIDDEN[layer])
        for path in files
        if imported_packages(path) & FORBIDDEN[layer]
    }
    assert violations == {}


def test_checker_sees_violations(tmp_path: Path) -> None:
    sample = tmp_path / "bad.py"
    sample.write_text("import worker.app\nfrom scheduler import cli\n", encoding="utf-8")
    assert imported_packages(sample) == {"worker", "scheduler"}
