"""Contract test suites that a plugin's own tests inherit, as a sampler's tests inherit ``optuna.testing``.

Each suite is a base class whose fixture raises NotImplementedError; a test class that subclasses it and
gives the fixture gets every test::

    import pytest
    from search.testing import KnobContract

    class TestMyKnob(KnobContract):
        @pytest.fixture
        def knob(self):
            return MyKnob(levels=["a", "b"])

``KnobContract`` (``knob``), ``EvaluatorContract`` (``evaluator``), ``MetricContract`` (``metric`` and
``outputs_and_targets``), ``TargetContract`` (``target_config``) and ``WorkloadContract`` (``workload``).
The shipped plugins pass them (tests/test_contracts.py); examples/custom_plugins/test_plugins.py is a
user's. This package imports pytest: it is for tests only, and nothing of the product imports it.
"""

from __future__ import annotations

import pytest

# The suites' asserts show the values they compared, as a test module's do (pytest rewrites only the
# modules it is told of, and must be told before they are imported).
pytest.register_assert_rewrite(*(f"search.testing.{name}" for name in
                                 ("_evaluator", "_knob", "_metric", "_target", "_workload")))

from search.testing._evaluator import EvaluatorContract, SmallCNN, shrunk, small_built  # noqa: E402
from search.testing._knob import KnobContract, draws  # noqa: E402
from search.testing._metric import MetricContract  # noqa: E402
from search.testing._shipped import (composed_target, shipped_evaluators, shipped_knobs,  # noqa: E402
                                     shipped_target_names, shipped_targets)
from search.testing._target import TargetContract  # noqa: E402
from search.testing._workload import WorkloadContract  # noqa: E402

__all__ = ["EvaluatorContract", "KnobContract", "MetricContract", "SmallCNN", "TargetContract", "WorkloadContract",
           "composed_target", "draws", "shipped_evaluators", "shipped_knobs", "shipped_target_names",
           "shipped_targets", "shrunk", "small_built"]
