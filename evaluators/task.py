"""The task metric on the held-out test split, run through the candidate's own runner.

Which metric is the workload's (search/metrics.py; accuracy by default): its name is the
column and the objective, so a regression run has ``mse`` where a classifier has ``accuracy``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from evaluators._base import Built, Evaluator
from search.core.metrics import Accuracy as AccuracyMetric
from search.core.metrics import Metric, default_metric
from search.core.schema import Column


def predict(built: Built) -> dict[str, np.ndarray]:
    """All outputs, by name, for the whole test split, in batches of ``batch_size`` through the
    candidate's runner (replicas, pipeline stages and all: the score is of the model as it is deployed)."""
    size, rows = built.candidate.batch_size, len(built.test)
    parts = [built.runner.run(built.test.rows(i, i + size)) for i in range(0, rows, size)]
    names = built.output_names or [f"output_{i}" for i in range(len(parts[0]))]
    return {name: np.concatenate([p[i] for p in parts]) for i, name in enumerate(names)}


class TaskMetric(Evaluator):
    """The workload's metric on the test split (never seen by training or calibration).

    Its column, direction and label come from the workload (``for_workload``); before that it
    describes accuracy, the default.
    """

    name = "metric"
    fixed: Metric | None = None  # a subclass that always scores one metric

    def __init__(self, objective: bool = True) -> None:
        super().__init__(objective)
        self._describe((self.fixed or default_metric()).describe())

    def for_workload(self, workload: dict[str, Any]) -> None:
        if self.fixed is None and workload.get("metric"):
            self._describe(workload["metric"])

    def _describe(self, metric: dict[str, Any]) -> None:
        self.metric, self.direction, self.doc = metric["name"], metric["direction"], metric.get("doc", "")
        self.columns = (Column(metric["name"], unit="", label=metric.get("label") or metric["name"], doc=self.doc),)

    def measure(self, built: Built) -> dict[str, Any]:
        metric = self.fixed or built.metric
        if metric.name != self.metric:
            raise ValueError(f"the evaluator was set up for metric {self.metric}, "
                             f"the trial's workload has {metric.name}")
        return {self.metric: float(metric.score(predict(built), built.test.y, built.reference))}

    def card_note(self, row: dict[str, Any], target: dict[str, Any]) -> str:
        return f"{self.doc or self.metric}, through this ONNX model"


class Accuracy(TaskMetric):
    """Top-1 accuracy on the test split, whatever the workload's metric (an extra column)."""

    name = "accuracy"
    fixed = AccuracyMetric()
