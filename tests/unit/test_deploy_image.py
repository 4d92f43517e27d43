"""The image installs the project from pyproject.toml alone (deploy/Dockerfile: `pip install .`):
every third-party module the code imports, lazily imported ones included, must come from a
declared dependency or from one of theirs. The dev venv has more installed, which is how a
missing declaration goes unnoticed until a container fails to start."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
FIRST_PARTY = {"shared", "worker", "scheduler", "migrations"}


def imported_top_level(root: Path = REPO) -> set[str]:
    names: set[str] = set()
    for package in FIRST_PARTY:
        for path in (root / package).rglob("*.py"):
            names |= top_level_imports(ast.parse(path.read_text(encoding="utf-8")))
    return names - FIRST_PARTY - set(sys.stdlib_module_names)


def top_level_imports(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_closure(requirements: list[str]) -> set[str]:
    """Distributions pip installs for these requirements (markers and extras honoured)."""
    seen: set[str] = set()
    pending = [Requirement(text) for text in requirements]
    while pending:
        requirement = pending.pop()
        name = normalise(requirement.name)
        for extra in requirement.extras or {""}:
            key = f"{name}[{extra}]"
            if key in seen:
                continue
            seen.add(key)
            pending += _requires(requirement.name, extra)
    return {key.split("[")[0] for key in seen}


def _requires(distribution: str, extra: str) -> list[Requirement]:
    try:
        texts = metadata.requires(distribution) or []
    except metadata.PackageNotFoundError:
        return []
    found = []
    for text in texts:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate({"extra": extra}):
            found.append(requirement)
    return found


def distributions_of(modules: set[str]) -> dict[str, set[str]]:
    providers = metadata.packages_distributions()
    return {module: {normalise(d) for d in providers.get(module, [module])} for module in modules}


def undeclared(modules: set[str], closure: set[str]) -> list[str]:
    return sorted(module for module, dists in distributions_of(modules).items()
                  if not dists & closure)


def test_every_imported_package_is_installed_by_the_declared_dependencies() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    closure = declared_closure(project["dependencies"])
    assert undeclared(imported_top_level(), closure) == []


def test_checker_sees_an_undeclared_import() -> None:
    closure = declared_closure(["celery[redis]>=5.4"])
    assert {"celery", "kombu", "redis"} <= closure
    assert undeclared({"celery", "redis", "yaml"}, closure) == ["yaml"]
