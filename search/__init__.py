"""Joint multi-objective optimization search for trained models.

From the shell: ``python -m search``. From Python: ``search.optimize(model, train=..., val=..., test=...,
metric=..., overrides=[...])`` (search/api.py). ``import search`` stays light: everything is imported on use.

The public names: ``search.optimize``, ``search.Workload`` and ``search.Split`` (search/workloads/), the fronts
``search.metrics``, ``search.schema`` and ``search.errors``, and ``search.testing`` (contracts a plugin's tests
inherit). The package's parts are described in docs/layout.md.
"""

from __future__ import annotations

import importlib
from typing import Any

# Modules that moved, under the names configs written before still use in ``_target_`` (Hydra resolves a
# dotted path by attribute, so these resolve without a module left at the old place).
MOVED = {"refine": "search.strategy.refine", "samplers": "search.strategy.samplers"}


def optimize(*args: Any, **kwargs: Any) -> Any:
    """See search.api.optimize (imported on first call: ``import search`` stays light)."""
    from search.api import optimize as run

    return run(*args, **kwargs)


def __getattr__(name: str) -> Any:
    if name in ("metrics", "schema", "errors", "testing"):
        return importlib.import_module(f"search.{name}")
    if name in ("Split", "Workload", "load_front"):
        from search import api

        return getattr(api, name)
    if name in MOVED:
        return importlib.import_module(MOVED[name])
    raise AttributeError(name)
