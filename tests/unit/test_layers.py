"""The layout's rules, read from the code itself:

- `shared/` imports neither `worker/` nor `scheduler/`; those two never import each other (the
  scheduler sends tasks by name);
- no runtime path — `shared/`, `worker/`, the control loop, the HTTP API, the job model —
  imports the dev tools (`scheduler/dev/`: the LLM stand-in, the demo, embedded servers), and
  the CLI imports them only inside the verbs that use them;
- one owner of state: only `shared/state/` changes job, item, batch and run rows (and the
  current analysis of a session).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "shared": {"worker", "scheduler"},
    "worker": {"scheduler"},
    "scheduler": {"worker"},
}
RUNTIME_PLACES = ("shared", "worker", "scheduler/run", "scheduler/http", "scheduler/jobs",
                  "scheduler/flower_app.py")
DEV_TOOLS = "scheduler.dev"
STATE_OWNER = REPO / "shared" / "state"

_STATE_TABLES = r"(backfill_jobs|backfill_items|backfill_batches|analysis_runs)"
_STATE_MODELS = r"(BackfillJob|BackfillItem|BackfillBatch|AnalysisRun)"
STATE_WRITES = (
    re.compile(rf"\b(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+{_STATE_TABLES}\b", re.IGNORECASE),
    # The analysis columns of a session are the current result of a run.
    re.compile(r"\bUPDATE\s+sessions\b", re.IGNORECASE),
    re.compile(rf"\b(insert|update|delete)\(\s*{_STATE_MODELS}\b"),
)


def python_files(place: str) -> list[Path]:
    path = REPO / place
    return [path] if path.is_file() else sorted(path.rglob("*.py"))


def imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    """Every module a file imports (inside functions too, unless top_level_only)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def packages(names: set[str]) -> set[str]:
    return {name.split(".")[0] for name in names}


def state_writes(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    return [match.group(0) for pattern in STATE_WRITES for match in pattern.finditer(text)]


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports(layer: str) -> None:
    files = python_files(layer)
    assert files, f"no python files under {layer}/"
    violations = {
        str(path.relative_to(REPO)): sorted(packages(imports(path)) & FORBIDDEN[layer])
        for path in files
        if packages(imports(path)) & FORBIDDEN[layer]
    }
    assert violations == {}


@pytest.mark.parametrize("place", RUNTIME_PLACES)
def test_no_runtime_path_imports_the_dev_tools(place: str) -> None:
    files = python_files(place)
    assert files, f"nothing at {place}"
    violations = {
        str(path.relative_to(REPO)): sorted(n for n in imports(path) if n.startswith(DEV_TOOLS))
        for path in files
        if any(n.startswith(DEV_TOOLS) for n in imports(path))
    }
    assert violations == {}


def test_the_cli_imports_dev_tools_only_inside_the_verbs_that_use_them() -> None:
    violations = {
        str(path.relative_to(REPO))
        for path in python_files("scheduler/cli")
        if any(n.startswith(DEV_TOOLS) for n in imports(path, top_level_only=True))
    }
    assert violations == set()


def test_only_the_state_package_writes_job_item_batch_and_run_state() -> None:
    owners = {path for path in python_files("shared/state")}
    assert owners, "shared/state has no modules"
    violations = {
        str(path.relative_to(REPO)): state_writes(path)
        for place in ("shared", "worker", "scheduler")
        for path in python_files(place)
        if path not in owners and state_writes(path)
    }
    assert violations == {}


def test_the_state_package_holds_the_transitions() -> None:
    """The owner really does own them: the writes the rule forbids elsewhere are here."""
    found = {write.split()[0].upper() for path in python_files("shared/state")
             for write in state_writes(path)}
    assert {"INSERT", "UPDATE"} <= found


def test_checkers_see_violations(tmp_path: Path) -> None:
    sample = tmp_path / "bad.py"
    sample.write_text(
        "import worker.app\nfrom scheduler import cli\n"
        "def later():\n    from scheduler.dev import demo\n"
        "SQL = '''update  backfill_items SET state = 'x' '''\n"
        "OTHER = 'DELETE FROM analysis_runs'\nQ = insert(BackfillJob)\n",
        encoding="utf-8")
    assert packages(imports(sample)) == {"worker", "scheduler"}
    assert "scheduler.dev.demo" in imports(sample)
    assert "scheduler.dev.demo" not in imports(sample, top_level_only=True)
    assert len(state_writes(sample)) == 3
