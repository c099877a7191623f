"""The layers point one way: pipelines -> components/<stage> -> components/llm -> components/common.

The imports are read from the source (every `import` statement, those inside functions too: a
function-level import is how a cycle hides until the day it runs), so the test needs nothing
installed beyond the tree itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMPONENTS = ROOT / "components"
FLOORS = {"common": set(), "llm": {"common"}}  # a floor may import only these packages


def _package_imports() -> dict[str, dict[str, list[str]]]:
    """{package of components/: {package it imports: ["file:line", ...]}}."""
    graph: dict[str, dict[str, list[str]]] = {}
    for path in sorted(COMPONENTS.rglob("*.py")):
        package = path.relative_to(COMPONENTS).parts[0]
        if package.endswith(".py"):
            continue
        edges = graph.setdefault(package, {})
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                parts = name.split(".")
                if parts[:2] == ["codedpo", "components"] and len(parts) >= 3 and parts[2] != package:
                    where = f"{path.relative_to(ROOT)}:{node.lineno}"
                    edges.setdefault(parts[2], []).append(where)
    return graph


def _cycle(graph: dict[str, dict[str, list[str]]]) -> list[str] | None:
    """One import cycle between packages, as the packages in order, or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(package: str) -> list[str] | None:
        state[package] = "open"
        stack.append(package)
        for imported in sorted(graph.get(package, {})):
            if state.get(imported) == "open":
                return stack[stack.index(imported):] + [imported]
            if imported not in state and (found := visit(imported)):
                return found
        stack.pop()
        state[package] = "done"
        return None

    for package in sorted(graph):
        if package not in state and (found := visit(package)):
            return found
    return None


def test_the_walker_finds_a_cycle_and_names_it():
    graph = {"a": {"b": ["a.py:1"]}, "b": {"c": ["b.py:1"]}, "c": {"a": ["c.py:3"]}, "d": {"a": ["d.py:1"]}}
    assert _cycle(graph) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b": ["x"]}, "b": {}}) is None


def test_no_import_cycle_between_the_packages_of_components():
    graph = _package_imports()
    assert {"common", "llm", "seeds", "tasks", "sample", "execute", "score", "pairs", "report", "train"} <= set(graph)
    cycle = _cycle(graph)
    if cycle:
        steps = [f"{a} -> {b} ({', '.join(graph[a][b][:3])})" for a, b in zip(cycle, cycle[1:])]
        pytest.fail("import cycle: " + "; ".join(steps))


@pytest.mark.parametrize("floor", sorted(FLOORS))
def test_a_floor_imports_no_stage(floor):
    allowed = FLOORS[floor]
    wrong = {package: files for package, files in _package_imports()[floor].items() if package not in allowed}
    assert not wrong, f"components/{floor} imports {wrong} (a floor imports only {sorted(allowed) or 'itself'})"


def test_sample_and_tasks_stand_on_the_model_client_not_on_each_other():
    graph = _package_imports()
    assert "llm" in graph["sample"] and "llm" in graph["tasks"]
    assert "tasks" not in graph["sample"], graph["sample"].get("tasks")
    assert "sample" not in graph["tasks"], graph["tasks"].get("sample")


def test_every_package_folder_is_installed():
    """pyproject lists the packages one by one (the stage folders sit at the top of the repo), so a
    new folder missing there works in a checkout and is absent from every image's wheel."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {
        "codedpo." + ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("components", "pipelines")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert folders == listed
