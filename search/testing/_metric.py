"""The promises every task metric keeps: a column's name, a direction it means, a finite score."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from evaluators import TaskMetric
from search.core.schema import HEAD, TAIL
from search.metrics import LOSSES, Metric

DIRECTIONS = ("maximize", "minimize")
COLUMN_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")  # a CSV header, a pick --min NAME=..., a Python identifier
RESERVED = (*HEAD, *TAIL)  # columns every row has: a metric named so would overwrite them


def labels_of(targets: Any) -> np.ndarray:
    """The one label array of a split (a dict of one array counts as that array)."""
    if isinstance(targets, Mapping):
        (targets,) = targets.values()
    return np.asarray(targets)


def better_or_equal(metric: Metric, first: float, second: float) -> bool:
    return first >= second if metric.direction == "maximize" else first <= second


class MetricContract:
    """Inherit it and give the ``metric`` fixture (a ``search.metrics.Metric``) and ``outputs_and_targets``:
    (the model's outputs by name, the split's labels as the workload gives them, or None), e.g. your
    model's outputs on a few test rows.

    The last test builds a perfect prediction from the labels by the metric's ``loss`` (one-hot scores
    for ``cross_entropy``, the labels themselves for ``mse``; the given outputs, as the original
    model's, for a metric that compares with them); override ``perfect_outputs`` where that is not it.
    """

    @pytest.fixture
    def metric(self) -> Metric:
        raise NotImplementedError

    @pytest.fixture
    def outputs_and_targets(self) -> tuple[dict[str, np.ndarray], Any]:
        raise NotImplementedError

    def perfect_outputs(self, metric: Metric, outputs: Mapping[str, np.ndarray], targets: Any) -> dict[str, np.ndarray]:
        """Outputs the metric must score best: the read output replaced by what the labels say."""
        if metric.needs_reference or targets is None:
            return dict(outputs)
        name = metric.output or next(iter(outputs))
        shape, labels = outputs[name].shape, labels_of(targets)
        if metric.loss == "cross_entropy":
            perfect = np.full(shape, -10.0, dtype=np.float32)
            perfect[np.arange(len(labels)), labels.reshape(-1).astype(np.int64)] = 10.0
        else:
            perfect = labels.reshape(shape).astype(np.float32)
        return {**outputs, name: perfect}

    def test_name_is_a_column_and_direction_and_loss_are_known(self, metric: Metric):
        assert COLUMN_NAME.fullmatch(metric.name or ""), f"metric name {metric.name!r} is not a column name"
        assert metric.name not in RESERVED, f"metric name {metric.name!r} is a column every row already has"
        assert metric.direction in DIRECTIONS, metric.direction
        assert metric.loss in LOSSES, metric.loss

    def test_scores_the_given_outputs_finitely_and_its_check_passes(self, metric: Metric,
                                                                   outputs_and_targets: tuple[dict, Any]):
        outputs, targets = outputs_and_targets
        value = metric.score(outputs, targets, outputs if metric.needs_reference else None)
        assert isinstance(value, float) and math.isfinite(value), value
        metric.check(outputs, targets)  # a ConfigError here is what a run would stop on at start

    def test_describe_keeps_what_the_results_folder_needs(self, metric: Metric):
        described = metric.describe()
        assert json.loads(json.dumps(described)) == described, "the description is stored as JSON"
        assert (described["name"], described["direction"], described["loss"]) == \
            (metric.name, metric.direction, metric.loss)
        assert described["label"] and isinstance(described["doc"], str)
        scorer = TaskMetric()
        scorer.for_workload({"metric": json.loads(json.dumps(described))})  # what a resumed run's evaluator reads
        assert (scorer.metric, scorer.direction) == (metric.name, metric.direction)

    def test_a_perfect_prediction_scores_at_least_as_well_as_a_perturbed_one(self, metric: Metric,
                                                                            outputs_and_targets: tuple[dict, Any]):
        outputs, targets = outputs_and_targets
        perfect = self.perfect_outputs(metric, outputs, targets)
        rng = np.random.default_rng(0)
        perturbed = {name: (value + rng.normal(0, float(np.std(value)) or 1.0, value.shape)).astype(value.dtype)
                     if value.dtype.kind == "f" else value for name, value in perfect.items()}
        reference = perfect if metric.needs_reference else None  # the original model's outputs are the perfect ones
        best, worse = metric.score(perfect, targets, reference), metric.score(perturbed, targets, reference)
        assert better_or_equal(metric, best, worse), \
            f"{metric.name} ({metric.direction}) scores a perfect prediction {best}, a perturbed one {worse}"
