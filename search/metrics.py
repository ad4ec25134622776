"""Public front: the task metric plugins a workload names (``metric: {_target_: search.metrics.MacroF1}`` in
YAML, ``search.metrics.FromFunction(fn=..., name=..., direction=...)`` from Python). They live in
search/core/metrics.py."""

from search.core.metrics import (LOSSES, Accuracy, CosineFidelity, FromFunction, MacroF1, MeanAbsoluteError,
                                 MeanSquaredError, Metric, TopKAccuracy, default_metric)

__all__ = ["Accuracy", "CosineFidelity", "FromFunction", "LOSSES", "MacroF1", "MeanAbsoluteError",
           "MeanSquaredError", "Metric", "TopKAccuracy", "default_metric"]
