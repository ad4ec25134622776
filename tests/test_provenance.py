"""`spaces` and `evaluators` are also names of unrelated PyPI packages: the imported ones must be ours."""

from pathlib import Path

import evaluators
import search
import spaces

REPO = Path(__file__).resolve().parent.parent


def test_packages_are_imported_from_this_repo():
    for module in (search, spaces, evaluators):
        assert Path(module.__file__).resolve().parent.parent == REPO, module.__file__


def test_knob_and_evaluator_classes_are_ours():
    assert hasattr(spaces, "QuantBits") and hasattr(spaces, "Knob")
    assert hasattr(evaluators, "Latency") and hasattr(evaluators, "objectives")
