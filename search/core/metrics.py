"""Task metrics: how good a model's outputs are, as a workload's quality objective.

A metric is a plugin: a workload names one (``metric:`` in its config with a ``_target_``, or
``Workload(metric=...)`` from Python), its ``name`` becomes the column and the objective, and
its ``loss`` tells training and distillation what to minimize. Accuracy is the default.

Every metric sees all the model's outputs by name and reads the one named ``output`` (the
first when None). Scores are computed with numpy alone, so a deployment can re-check them.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from search.core.errors import ConfigError

Outputs = Mapping[str, np.ndarray]
Targets = Any  # an array, a dict of named arrays, or None for a metric that needs no labels
LOSSES = ("cross_entropy", "mse", "cosine")
DIRECTIONS = ("maximize", "minimize")


class Metric(abc.ABC):
    """Scores a model's outputs on a split.

    Attributes:
        name: the column and objective name (``accuracy``, ``mse``, ...).
        direction: ``maximize`` or ``minimize``.
        label: the axis label of plots and the page.
        doc: one line for the card: what the figure is.
        loss: what training and distillation minimize for this task: ``cross_entropy`` on class
            logits, ``mse`` on values, ``cosine`` to the original model's outputs (no labels).
        needs_labels: False for a metric that compares with the original model only.
        needs_reference: True when ``score`` reads the original model's outputs.
    """

    name: str = ""
    direction: str = "maximize"
    label: str = ""
    doc: str = ""
    loss: str = "cross_entropy"
    needs_labels: bool = True
    needs_reference: bool = False

    def __init__(self, output: str | None = None) -> None:
        self.output = output

    def pick(self, outputs: Outputs) -> np.ndarray:
        """The output this metric reads: ``output`` by name, or the model's first."""
        if self.output is None:
            return next(iter(outputs.values()))
        if self.output not in outputs:
            raise ConfigError(f"metric {self.name}: the model has no output {self.output!r}; it has {list(outputs)}")
        return outputs[self.output]

    @abc.abstractmethod
    def score(self, outputs: Outputs, targets: Targets, reference: Outputs | None = None) -> float:
        """The figure for ``outputs`` (all the model's outputs on a split) against ``targets``."""

    def check(self, outputs: Outputs, targets: Targets) -> None:
        """Raise ConfigError when the model's outputs or the labels cannot be scored (at start, in one line)."""
        if self.needs_labels and targets is None:
            raise ConfigError(f"metric {self.name} needs labels (y) in every split; the splits have none")
        value = self.score(outputs, targets, outputs if self.needs_reference else None)
        if not math.isfinite(value):
            raise ConfigError(f"metric {self.name} returned {value} on the original model's test outputs")

    def describe(self) -> dict[str, Any]:
        """What a results folder keeps of the metric: enough for tables, plots and pick to label it."""
        return {"name": self.name, "direction": self.direction, "label": self.label or self.name,
                "doc": self.doc, "loss": self.loss}


def _labels(targets: Targets, metric: str) -> np.ndarray:
    if isinstance(targets, Mapping):
        if len(targets) != 1:
            raise ConfigError(f"metric {metric}: the split has several label arrays {list(targets)}; "
                              "this metric reads one: give y as a single array")
        targets = next(iter(targets.values()))
    if targets is None:
        raise ConfigError(f"metric {metric} needs labels; the split has none")
    return np.asarray(targets)


def _class_labels(targets: Targets, rows: int, metric: str) -> np.ndarray:
    """One integer class per row: (batch,) or (batch, 1); anything else would broadcast into nonsense."""
    labels = _labels(targets, metric)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.shape != (rows,):
        raise ConfigError(f"metric {metric}: labels have shape {labels.shape}, expected one class per row ({rows},)")
    return labels


def _class_scores(output: np.ndarray, metric: str) -> np.ndarray:
    if output.ndim != 2:
        raise ConfigError(f"metric {metric}: the output has shape {output.shape}, expected (batch, classes)")
    return output


class Accuracy(Metric):
    """Top-1 accuracy: the argmax of the output is the predicted class."""

    name, direction, label = "accuracy", "maximize", "accuracy (test split)"
    doc = "top-1 on the held-out test split"

    def score(self, outputs: Outputs, targets: Targets, reference: Outputs | None = None) -> float:
        predicted = _class_scores(self.pick(outputs), self.name).argmax(axis=1)
        return float((predicted == _class_labels(targets, len(predicted), self.name)).mean())


class TopKAccuracy(Metric):
    """Top-k accuracy: the label is among the ``k`` highest scores."""

    direction = "maximize"
    loss = "cross_entropy"

    def __init__(self, k: int = 5, output: str | None = None) -> None:
        super().__init__(output)
        if int(k) != k or k < 1:
            raise ConfigError(f"top-k accuracy: k must be a positive integer, got {k}")
        self.k = int(k)
        self.name, self.label = f"top{self.k}_accuracy", f"top-{self.k} accuracy (test split)"
        self.doc = f"label among the {self.k} highest scores, on the held-out test split"

    def score(self, outputs: Outputs, targets: Targets, reference: Outputs | None = None) -> float:
        scores = _class_scores(self.pick(outputs), self.name)
        best = np.argpartition(-scores, min(self.k, scores.shape[1]) - 1, axis=1)[:, :self.k]
        return float((best == _class_labels(targets, len(best), self.name)[:, None]).any(axis=1).mean())


class MacroF1(Metric):
    """F1 per class, averaged with equal weight: a rare class counts as much as a common one."""

    name, direction, label = "macro_f1", "maximize", "macro-F1 (test split)"
    doc = "F1 per class averaged over the classes present in labels or predictions, held-out test split"

    def score(self, outputs: Outputs, targets: Targets, reference: Outputs | None = None) -> float:
        predicted = _class_scores(self.pick(outputs), self.name).argmax(axis=1)
        labels = _class_labels(targets, len(predicted), self.name)
        f1s = []
        for c in np.union1d(labels, predicted):
            tp = np.sum((predicted == c) & (labels == c))
            denominator = np.sum(predicted == c) + np.sum(labels == c)
            f1s.append(2 * tp / denominator if denominator else 0.0)
        return float(np.mean(f1s))


def _values(output: np.ndarray, targets: Targets, metric: str) -> tuple[np.ndarray, np.ndarray]:
    labels = _labels(targets, metric).astype(np.float64)
    predicted = output.astype(np.float64).reshape(len(output), -1)
    labels = labels.reshape(len(labels), -1)
    if predicted.shape != labels.shape:
        raise ConfigError(f"metric {metric}: output has {predicted.shape[1]} value(s) per row, labels have "
                          f"{labels.shape[1]}")
    return predicted, labels


class MeanSquaredError(Metric):
    """Regression: mean squared error of the output against the labels (every value of every row)."""

    name, direction, label, loss = "mse", "minimize", "mean squared error (test split)", "mse"
    doc = "mean squared error against the labels, held-out test split"

    def score(self, outputs: Outputs, targets: Targets, reference: Outputs | None = None) -> float:
        predicted, labels = _values(self.pick(outputs), targets, self.name)
        return float(np.mean((predicted - labels) ** 2))


class MeanAbsoluteError(Metric):
    """Regression: mean absolute error of the output against the labels."""

    name, direction, label, loss = "mae", "minimize", "mean absolute error (test split)", "mse"
    doc = "mean absolute error against the labels, held-out test split"

    def score(self, outputs: Outputs, targets: Targets, reference: Outputs | None = None) -> float:
        predicted, labels = _values(self.pick(outputs), targets, self.name)
        return float(np.mean(np.abs(predicted - labels)))


class CosineFidelity(Metric):
    """Mean cosine similarity of each row's output to the original model's: for embedding models,
    where what matters is that the compressed model points where the original did. Needs no labels."""

    name, direction, label, loss = "fidelity", "maximize", "cosine fidelity to the original", "cosine"
    doc = "mean cosine similarity of each output row to the original model's, held-out test split"
    needs_labels, needs_reference = False, True

    def score(self, outputs: Outputs, targets: Targets, reference: Outputs | None = None) -> float:
        if reference is None:
            raise ConfigError("metric fidelity needs the original model's outputs; none were given")
        mine = self.pick(outputs).astype(np.float64).reshape(len(self.pick(outputs)), -1)
        theirs = self.pick(reference).astype(np.float64).reshape(len(mine), -1)
        norms = np.linalg.norm(mine, axis=1) * np.linalg.norm(theirs, axis=1)
        cosine = np.sum(mine * theirs, axis=1) / np.where(norms == 0, 1.0, norms)
        return float(np.mean(cosine))


class FromFunction(Metric):
    """A user's own ``fn(outputs, targets) -> float``, with its name and direction.

    ``fn`` gets the model's output named ``output`` (the first when None) as an array, or all the
    outputs as a dict when ``output="*"``, and the split's labels as given. From config,
    ``fn`` is a dotted path (``mypackage.metrics.weighted_f1``).
    """

    def __init__(self, fn: Callable[[Any, Any], float] | str, name: str, direction: str = "maximize",
                 loss: str = "cross_entropy", needs_labels: bool = True, output: str | None = None,
                 label: str = "", doc: str = "") -> None:
        super().__init__(None if output == "*" else output)
        if isinstance(fn, str):
            fn = _resolve(fn)
        if not callable(fn):
            raise ConfigError(f"metric {name}: fn must be a callable or a dotted path to one, got {fn!r}")
        if direction not in DIRECTIONS:
            raise ConfigError(f"metric {name}: direction {direction!r} not in {DIRECTIONS}")
        if loss not in LOSSES:
            raise ConfigError(f"metric {name}: loss {loss!r} not in {LOSSES}")
        if not name or not name.replace("_", "").isalnum():
            raise ConfigError(f"metric name {name!r} must be letters, digits and underscores (it is a column)")
        self.fn, self.all_outputs = fn, output == "*"
        self.name, self.direction, self.loss, self.needs_labels = name, direction, loss, bool(needs_labels)
        self.label, self.doc = label or name, doc or f"{name} by {getattr(fn, '__qualname__', 'a user function')}"

    def score(self, outputs: Outputs, targets: Targets, reference: Outputs | None = None) -> float:
        value = self.fn(dict(outputs) if self.all_outputs else self.pick(outputs), targets)
        return float(value)


def _resolve(path: str) -> Callable[..., Any]:
    import importlib

    module, _, attribute = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"metric fn {path!r} cannot be imported: {exc}") from None


def default_metric() -> Metric:
    return Accuracy()


__all__ = ["Accuracy", "CosineFidelity", "FromFunction", "LOSSES", "MacroF1", "MeanAbsoluteError",
           "MeanSquaredError", "Metric", "TopKAccuracy", "default_metric"]
