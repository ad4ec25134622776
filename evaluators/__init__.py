"""Evaluators: each measures one thing of a built candidate on its target.

The interface (``Evaluator``, ``Built``) lives in evaluators/_base.py; import it from here.
"""

from evaluators._base import Built, Evaluator, check_noise_floor, noise_intervals, objectives, rows_of
from evaluators.energy import Energy
from evaluators.latency import Latency
from evaluators.memory import PeakMemory
from evaluators.size import Size
from evaluators.task import Accuracy, TaskMetric

__all__ = ["Accuracy", "Built", "Energy", "Evaluator", "Latency", "PeakMemory", "Size", "TaskMetric",
           "check_noise_floor", "noise_intervals", "objectives", "rows_of"]
