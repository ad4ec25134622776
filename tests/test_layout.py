"""The layout shows the architecture: a module's folder says what it may import, and nothing imports in a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# folder -> the search.* folders its modules may import (top-level shared modules are always allowed)
ALLOWED = {
    "runtime": set(),
    "transforms": {"runtime", "workloads"},  # training reads the workload's splits
    "workloads": {"runtime", "transforms"},
    "results": {"runtime"},
}
FORBIDDEN_IN_RUNTIME = ("torch", "ray", "optuna", "hydra")


def imports_of(path: Path, top_level_only: bool = False) -> set[str]:
    """Modules ``path`` imports; ``top_level_only``: at import time, not inside a function run later."""
    found = set()
    tree = ast.parse(path.read_text())
    for node in (tree.body if top_level_only else ast.walk(tree)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def folder_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "search" and len(parts) > 2 else None


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_a_folder_imports_only_what_its_place_allows(folder):
    for path in (REPO / "search" / folder).glob("*.py"):
        for module in imports_of(path):
            used = folder_of(module)
            assert used in (None, folder) or used in ALLOWED[folder], f"{path.relative_to(REPO)} imports {module}"
            assert not module.startswith(("spaces", "evaluators")) or folder not in ("runtime", "results"), \
                f"{path.relative_to(REPO)} imports the plugin package {module}"


def test_runtime_runs_without_torch_ray_or_optuna():
    """A deployment (and the memory probe's fresh process) loads search/runtime with onnxruntime alone;
    a start-up check may import torch inside the function that needs it."""
    for path in (REPO / "search" / "runtime").glob("*.py"):
        heavy = [m for m in imports_of(path, top_level_only=True) if m.split(".")[0] in FORBIDDEN_IN_RUNTIME]
        assert not heavy, f"{path.relative_to(REPO)} imports {heavy}"


def test_no_module_imports_in_a_cycle():
    modules = {}
    for path in [*REPO.joinpath("search").rglob("*.py"), *REPO.joinpath("spaces").glob("*.py"),
                 *REPO.joinpath("evaluators").glob("*.py")]:
        name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = {m for m in imports_of(path) if m.split(".")[0] in ("search", "spaces", "evaluators")}

    def resolve(module: str) -> str | None:
        while module and module not in modules:
            module = module.rpartition(".")[0]
        return module or None

    graph = {m: {resolve(i) for i in deps} - {None, m} for m, deps in modules.items()}
    packages = {m for m in modules if any(k.startswith(m + ".") for k in modules)}
    seen, stack = set(), []

    def visit(node: str) -> None:
        if node in stack:
            cycle = stack[stack.index(node):] + [node]
            # a package re-exporting its own modules is not a cycle of the code's design
            assert any(c in packages for c in cycle), " -> ".join(cycle)
            return
        if node in seen:
            return
        seen.add(node)
        stack.append(node)
        for dep in graph[node]:
            visit(dep)
        stack.pop()

    for module in sorted(graph):
        visit(module)
