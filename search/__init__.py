"""Joint multi-objective optimization search for trained PyTorch models.

From the shell: ``python -m search``. From Python: ``search.optimize(model, train=..., val=...,
test=..., metric=..., overrides=[...])`` (search/api.py).
"""

from __future__ import annotations

from typing import Any


def optimize(*args: Any, **kwargs: Any) -> Any:
    """See search.api.optimize (imported on first call: ``import search`` stays light)."""
    from search.api import optimize as run

    return run(*args, **kwargs)


def __getattr__(name: str) -> Any:
    if name in ("metrics", "Split", "Workload", "load_front"):
        import importlib

        if name == "metrics":
            return importlib.import_module("search.metrics")
        from search import api

        return getattr(api, name)
    raise AttributeError(name)
