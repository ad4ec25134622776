"""Hugging Face's progress bars and advisory warnings kept out of a run's output while a workload loads.

``from_pretrained`` draws tqdm bars ("Loading weights" in transformers 5, the hub's download bars)
and logs advice meant for notebooks; in a search they fill the run's log between its own lines.
Written for transformers 5.24 and huggingface_hub 2.4 (their public ``logging`` and progress-bar
switches). Importing transformers costs ~0.7 s here, so nothing is imported unless the process
already did, or the factory's own module imports it.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

HUGGING_FACE = ("transformers", "huggingface_hub")


@contextmanager
def quiet_hugging_face(target: str | None = None) -> Iterator[None]:
    """Silence transformers' and huggingface_hub's progress bars and warnings inside the block, when the
    process has imported either or the module of ``target`` (a ``_target_`` path) imports one; the
    previous settings come back after."""
    if not uses_hugging_face(target):
        yield
        return
    with ExitStack() as stack:
        # the hub first: transformers' switches flip the hub's bars too, so the hub's own state is restored last
        if importlib.util.find_spec("huggingface_hub") is not None:
            stack.enter_context(_quiet_hub())
        if importlib.util.find_spec("transformers") is not None:
            stack.enter_context(_quiet_transformers())
        stack.enter_context(warnings.catch_warnings())
        warnings.filterwarnings("ignore", module=r"(transformers|huggingface_hub)(\.|$)")
        yield


def uses_hugging_face(target: str | None) -> bool:
    """Whether transformers or huggingface_hub is imported, or the module of ``target`` imports one (anywhere
    in it: a factory may import them inside its function)."""
    if any(name in sys.modules for name in HUGGING_FACE):
        return True
    source = _module_source(target) if target else None
    if source is None:
        return False
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return False
    for node in ast.walk(tree):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
        if any(name.split(".")[0] in HUGGING_FACE for name in names):
            return True
    return False


def _module_source(target: str) -> str | None:
    """The source of the module a ``_target_`` lives in (its longest importable prefix), without running it."""
    parts = target.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            spec = importlib.util.find_spec(".".join(parts[:cut]))
        except Exception:  # noqa: BLE001 - not a module, or one that fails on import: the call says which
            continue
        if spec is not None and spec.origin and spec.origin.endswith(".py"):
            try:
                return Path(spec.origin).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                return None
    return None


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


@contextmanager
def _quiet_hub() -> Iterator[None]:
    from huggingface_hub import utils as hub

    disabled, verbosity = hub.are_progress_bars_disabled(), hub.logging.get_verbosity()
    hub.disable_progress_bars()
    hub.logging.set_verbosity_error()
    try:
        yield
    finally:
        hub.logging.set_verbosity(verbosity)
        if disabled:
            hub.disable_progress_bars()
        else:
            hub.enable_progress_bars()
