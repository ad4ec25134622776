"""The layout shows the architecture: a module's folder says what it may import, every import goes through a
package's front, Optuna's private API is reached from one module only, and nothing imports in a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("search", "spaces", "evaluators")
# Each part of the project -> the parts its modules may import (its own always). The commands (python -m
# search, search.optimize, pick, report) and search.testing may import anything; search/run/ anything but them.
CORE, RUNTIME, WORKLOADS, TRANSFORMS = "search.core", "search.runtime", "search.workloads", "search.transforms"
PLUGINS = ("spaces", "evaluators")
ALLOWED = {
    CORE: set(),
    "front": {CORE},  # search.metrics, search.schema, search.errors: what users' code and YAML name
    RUNTIME: {CORE},
    WORKLOADS: {CORE, RUNTIME, TRANSFORMS},
    TRANSFORMS: {CORE, RUNTIME, WORKLOADS},
    "spaces": {CORE, RUNTIME, TRANSFORMS, WORKLOADS},
    "evaluators": {CORE, RUNTIME, TRANSFORMS, WORKLOADS},
    "search.results": {CORE, RUNTIME},
    "search.strategy": {CORE},
    "search.config": {CORE, RUNTIME, *PLUGINS},
    "search.bundle": {CORE, RUNTIME, WORKLOADS, *PLUGINS},
    "search.trial": {CORE, RUNTIME, WORKLOADS, TRANSFORMS, *PLUGINS},
}
COMMANDS = {"search.__main__", "search.api", "search.pick", "search.report", "search.testing", "search"}
FRONTS = {"search.metrics", "search.schema", "search.errors"}
FORBIDDEN_IN_RUNTIME = ("torch", "ray", "optuna", "hydra")
OPTUNA_PRIVATE = "search/core/optuna_private.py"
PRIVATE_OPTUNA_ATTRS = {"_storage", "_trial_id", "_study_id", "_get_trials", "_contains", "_get_generation_key",
                        "_population_size", "_GENERATION_KEY", "_PARENT_CACHE_KEY_PREFIX"}


def imports_of(path: Path, top_level_only: bool = False) -> set[str]:
    """Modules ``path`` imports; ``top_level_only``: at import time, not inside a function run later."""
    found = set()
    tree = ast.parse(path.read_text())
    for node in (tree.body if top_level_only else ast.walk(tree)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}  # `from search import study` names a module
    return found


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in (REPO / package).rglob("*.py")}


MODULES = project_modules()


def part_of(module: str) -> str | None:
    """The part a project module belongs to (None: not the project's, or a name that is no module)."""
    while module and module not in MODULES:
        module = module.rpartition(".")[0]
    if not module:
        return None
    if module in COMMANDS or module.startswith("search.testing."):
        return "commands"
    if module in FRONTS:
        return "front"
    parts = module.split(".")
    if parts[0] in PLUGINS:
        return parts[0]
    return ".".join(parts[:2])


def test_every_part_of_the_package_has_a_rule():
    parts = {part_of(m) for m in MODULES}
    assert parts <= {*ALLOWED, "commands", "search.run"}, parts - {*ALLOWED, "commands", "search.run"}


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_a_part_imports_only_what_its_place_allows(part):
    for module, path in MODULES.items():
        if part_of(module) != part:
            continue
        for imported in imports_of(path):
            used = part_of(imported)
            assert used in (None, part) or used in ALLOWED[part], f"{path.relative_to(REPO)} imports {imported}"


def test_the_workers_side_never_imports_the_drivers():
    for module, path in MODULES.items():
        if part_of(module) in ("search.trial", "search.strategy"):
            wrong = [i for i in imports_of(path) if part_of(i) in ("search.run", "commands")]
            assert not wrong, f"{path.relative_to(REPO)} imports {wrong}"


def test_the_driver_does_not_import_the_commands():
    for module, path in MODULES.items():
        if part_of(module) == "search.run":
            wrong = [i for i in imports_of(path) if part_of(i) == "commands" and i != "search"]
            assert not wrong, f"{path.relative_to(REPO)} imports {wrong}"


def _private_parts(module: str) -> list[str]:
    return [p for p in module.split(".") if p.startswith("_") and p not in ("__main__", "__init__")]


def test_imports_go_through_a_packages_front():
    """No ``X._base`` from outside X: a package's private modules are its own business."""
    for path in [*MODULES.values(), *(REPO / "tests").glob("*.py"), *(REPO / "bench").glob("*.py"),
                 *(REPO / "examples").rglob("*.py")]:
        for imported in imports_of(path):
            if imported.split(".")[0] not in PACKAGES or not _private_parts(imported):
                continue
            parts = imported.split(".")
            first = next(i for i, p in enumerate(parts) if p in _private_parts(imported))
            # the package holding the private module, or the module's package for a private name in a module
            owner = ".".join(parts[:first] if ".".join(parts[:first]) not in MODULES or
                             (REPO / Path(*parts[:first]) / "__init__.py").exists() else parts[:first - 1])
            mine = module_name(path) if path.is_relative_to(REPO / "search") or path.parts[-2] in PLUGINS else ""
            assert mine.startswith(owner + ".") or mine == owner, f"{path.relative_to(REPO)} imports {imported}"


def test_optunas_private_api_is_reached_from_one_module():
    for path in [*MODULES.values(), *(REPO / "bench").glob("*.py"), *(REPO / "tests").glob("*.py")]:
        if path.relative_to(REPO).as_posix() == OPTUNA_PRIVATE or path.name == "test_optuna_private.py":
            continue
        tree = ast.parse(path.read_text())
        for imported in imports_of(path):
            assert not (imported.startswith("optuna") and _private_parts(imported)), \
                f"{path.relative_to(REPO)} imports {imported}: go through {OPTUNA_PRIVATE}"
        touched = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr in PRIVATE_OPTUNA_ATTRS
                   and not (isinstance(n.value, ast.Name) and n.value.id == "self")}
        assert not touched, \
            f"{path.relative_to(REPO)} uses Optuna's private {sorted(touched)}: go through {OPTUNA_PRIVATE}"


def test_runtime_runs_without_torch_ray_or_optuna():
    """A deployment (and the memory probe's fresh process) loads search/runtime with onnxruntime alone;
    a start-up check may import torch inside the function that needs it."""
    for path in (REPO / "search" / "runtime").glob("*.py"):
        heavy = [m for m in imports_of(path, top_level_only=True) if m.split(".")[0] in FORBIDDEN_IN_RUNTIME]
        assert not heavy, f"{path.relative_to(REPO)} imports {heavy}"


def test_the_top_of_search_holds_only_commands_fronts_and_parts():
    loose = {p.stem for p in (REPO / "search").glob("*.py")}
    assert loose == {"__init__", "__main__", "api", "pick", "report", "metrics", "schema", "errors"}, sorted(loose)


def test_no_module_imports_in_a_cycle():
    def resolve(module: str) -> str | None:
        while module and module not in MODULES:
            module = module.rpartition(".")[0]
        return module or None

    graph = {m: {resolve(i) for i in imports_of(p) if i.split(".")[0] in PACKAGES} - {None, m}
             for m, p in MODULES.items()}
    packages = {m for m in MODULES if any(k.startswith(m + ".") for k in MODULES)}
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
