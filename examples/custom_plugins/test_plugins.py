"""A user's tests of their own plugins: inherit the contracts the shipped plugins pass, give the fixture.

    python -m pytest examples/custom_plugins/test_plugins.py

Each class below gets every test of its contract (search/testing/): the knob's draws stay within what
it declares and cross the Ray boundary intact, the evaluator fills exactly its declared columns and they
reach trials.csv, pareto.csv, the plots and the model card. Copy it next to your own plugins.
"""

from __future__ import annotations

import pytest

from examples.custom_plugins.plugins import GraphOptimization, OperatorCount
from search.testing import EvaluatorContract, KnobContract


class TestGraphOptimization(KnobContract):
    @pytest.fixture
    def knob(self) -> GraphOptimization:
        return GraphOptimization(levels=["all", "basic", "disabled"])


class TestOperatorCount(EvaluatorContract):
    @pytest.fixture
    def evaluator(self) -> OperatorCount:
        return OperatorCount()
