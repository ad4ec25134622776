"""Evaluators: each measures one thing of a built candidate on its target."""

from evaluators._base import Built, Evaluator, objectives
from evaluators.energy import Energy
from evaluators.latency import Latency
from evaluators.memory import PeakMemory
from evaluators.size import Size
from evaluators.task import Accuracy, TaskMetric

__all__ = ["Accuracy", "Built", "Energy", "Evaluator", "Latency", "PeakMemory", "Size", "TaskMetric", "objectives"]
