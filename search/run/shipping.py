"""The user's own code reaches every Ray worker and node: it is pickled by value.

A workload factory, model class or metric that lives in the user's module (a file in the
working directory, a folder added to ``sys.path`` by the driver only, a notebook) cannot be
imported on a worker, and on another node the file is not there at all. Ray sends tasks'
arguments with cloudpickle, which by default pickles a class or function as a reference
(``module.name``) to be imported on the other side. Registering the user's modules for
pickling by value sends their code with the objects instead.

Chosen over Ray's ``runtime_env`` (``working_dir``/``py_modules``): those upload whole folders
(size limits, exclusion rules, a package per node) and cannot carry code defined in a notebook
or a script's ``__main__``; pickling by value carries exactly what the objects use, to every
node, with nothing to install. Code installed as a package (site-packages, the standard
library, this project) is imported on the workers as usual.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path
from types import ModuleType

from ray import cloudpickle

OWN_PACKAGES = ("search", "spaces", "evaluators")  # installed with this project on every node


def _installed_roots() -> list[Path]:
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    roots |= {p for p in sys.path if p.rstrip("/").endswith(("site-packages", "dist-packages"))}
    return [Path(r).resolve() for r in roots if r]


def user_modules() -> list[ModuleType]:
    """Loaded modules that are the user's code: from a file outside installed packages and this project."""
    roots = _installed_roots()
    # Most of the thousands of loaded modules (torch alone has ~1,500) sit under a root as written: a string
    # test clears them, and only the rest pay for resolving links (0.7 s a run when every path was resolved).
    prefixes = tuple(os.path.join(str(root), "") for root in roots)
    found = []
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if not isinstance(module, ModuleType) or not isinstance(path, str) or not os.path.isabs(path):
            continue  # torch.ops and kin: namespaces that only look like modules
        if "__main__" in (name, module.__name__) or name.split(".")[0] in OWN_PACKAGES or path.startswith(prefixes):
            continue  # __main__ is pickled by value already
        resolved = Path(path).resolve()
        if not any(resolved.is_relative_to(root) for root in roots):
            found.append(module)
    return found


def ship_user_code() -> list[str]:
    """Register the user's modules for pickling by value; returns their names (said at start)."""
    shipped = []
    for module in user_modules():
        try:
            cloudpickle.register_pickle_by_value(module)
        except ValueError:  # not importable by its own name (a module loaded under another): left as is
            continue
        shipped.append(module.__name__)
    return sorted(shipped)
