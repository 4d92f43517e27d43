"""The stand-in's package: standard library only, and no import cycle between its modules."""

from __future__ import annotations

import ast
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

PACKAGE = "scheduler.dev.llm_stub"
ROOT = Path(__file__).resolve().parents[2] / "scheduler" / "dev" / "llm_stub"


def module_name(path: Path) -> str:
    return PACKAGE if path.stem == "__init__" else f"{PACKAGE}.{path.stem}"


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, f"{path.name}: relative imports hide the graph"
            names.add(node.module)
    return names


def sibling_graph() -> dict[str, set[str]]:
    """Module → the package modules it imports (``__init__`` and ``__main__`` left out: they
    only gather the others)."""
    modules = [path for path in sorted(ROOT.glob("*.py"))
               if path.stem not in ("__init__", "__main__")]
    return {module_name(path): {name for name in imports_of(path) if name.startswith(PACKAGE)}
            for path in modules}


def test_modules_import_no_package_root_and_form_no_cycle() -> None:
    graph = sibling_graph()
    assert len(graph) >= 8
    assert not any(PACKAGE in imported for imported in graph.values()), \
        "a module imports the package root, which imports every module"
    list(TopologicalSorter(graph).static_order())  # raises CycleError on a cycle


def test_the_cycle_check_sees_a_cycle() -> None:
    with pytest.raises(CycleError):
        list(TopologicalSorter({"a": {"b"}, "b": {"a"}}).static_order())


def test_only_the_standard_library_and_the_package_itself() -> None:
    foreign = {
        path.name: sorted(name for name in imports_of(path)
                          if not name.startswith(PACKAGE) and name != "__future__"
                          and name.split(".")[0] not in sys.stdlib_module_names)
        for path in sorted(ROOT.glob("*.py"))
    }
    assert {name: found for name, found in foreign.items() if found} == {}
