"""The evaluator interface and what it measures: a built candidate on its target."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Sequence

import numpy as np

from search.core.candidate import Candidate
from search.core.errors import ConfigError
from search.core.schema import Column
from search.runtime.runners import Runner
from search.runtime.target import Target
from search.core.metrics import Metric, default_metric
from search.workloads import Split

DIRECTIONS = ("maximize", "minimize")


@dataclass
class Built:
    """A candidate's final ONNX model with what is needed to run it on its target."""

    model_bytes: bytes
    candidate: Candidate
    target: Target
    test: Split
    metric: Metric = field(default_factory=default_metric)
    # the original model's outputs on the test split, by name: filled when the workload's metric or an
    # evaluator of the run needs them (``needs_reference``), else None
    reference: dict[str, np.ndarray] | None = None
    output_names: list[str] = field(default_factory=list)
    _runner: Runner | None = field(default=None, repr=False)

    @property
    def runner(self) -> Runner:
        """One runner per built model, executing the candidate's parallelism mode on its target."""
        if self._runner is None:
            from evaluators.runtime import runner_for

            self._runner = runner_for(self.model_bytes, self.target, self.candidate)
        return self._runner

    def close(self) -> None:
        """Stop the runner's threads (a pipeline's stages, a replica pool)."""
        if self._runner is not None:
            self._runner.close()
            self._runner = None

    def batch(self) -> dict[str, np.ndarray]:
        """One inference call's inputs by name: the first ``batch_size`` test rows (repeated if too few)."""
        return self.test.batch_of(self.candidate.batch_size)


def rows_of(feeds: dict[str, np.ndarray]) -> int:
    """Rows (the batch) of a call's inputs."""
    return len(next(iter(feeds.values())))


class Evaluator(abc.ABC):
    """Measures one thing of a built candidate, and declares what it fills.

    Attributes:
        name: the evaluator's name in config.
        columns: every column ``measure`` returns, with units and labels (the first is usually
            ``metric``); trials.csv, pareto.csv, the plots, the page, the card and pick show them.
        metric: the column its objective value comes from.
        direction: ``maximize`` or ``minimize``.
        objective: whether the study optimizes ``metric`` (else it is only recorded).
        timed: whether the figure depends on what else runs on the node: timed evaluators run
            with the node to themselves, and are run again on the front in the re-timing phase.
        interval: the columns holding a confidence interval of ``metric``, if it has one; the
            front treats values whose intervals overlap as ties.
        noise_floor: the front widens the interval to at least +- this fraction of the value.
        needs_reference: True when ``measure`` reads ``built.reference``, the original model's outputs on the
            test split: the run then computes them once at start (otherwise only a metric that compares with
            the original model, such as cosine fidelity, gets them).
    """

    name: str = ""
    columns: tuple[Column, ...] = ()
    metric: str = ""
    direction: str = "minimize"
    timed: bool = False
    interval: tuple[str, str] | None = None
    noise_floor: float = 0.0
    needs_reference: bool = False

    def __init__(self, objective: bool = True) -> None:
        self.objective = bool(objective)

    @abc.abstractmethod
    def measure(self, built: Built) -> dict[str, Any]:
        """Return the columns this evaluator fills, including ``metric``."""

    def card_note(self, row: dict[str, Any], target: dict[str, Any]) -> str:
        """How ``row``'s figure was measured, for the model card (``target``: its target's config)."""
        return ""

    def for_workload(self, workload: dict[str, Any]) -> None:  # noqa: B027 - most evaluators fit every workload
        """Adapt to the run's workload (its description, ``search.workloads.describe``): the task
        metric takes the workload's metric's name and direction. Called before columns are read."""

    def start_note(self, targets: Sequence[Target], on_cluster: bool) -> str:
        """Said once when the run starts (which meter runs); may refuse the run with a ConfigError."""
        return ""

    def declared_columns(self) -> tuple[Column, ...]:
        """``columns``, or just ``metric`` for an evaluator that declares none."""
        return self.columns or (Column(self.metric),)


def noise_intervals(evaluators: Sequence[Evaluator]) -> dict[str, tuple[str, str, float]]:
    """metric -> (low column, high column, floor) for every evaluator whose figure has noise."""
    return {e.metric: (*e.interval, e.noise_floor) for e in evaluators if e.interval}


def check_noise_floor(name: str, floor: float) -> float:
    if not 0 <= floor < 1:
        raise ConfigError(f"{name}: noise_floor must be in [0, 1), got {floor}")
    return float(floor)


def objectives(evaluators: Sequence[Evaluator]) -> list[tuple[str, str]]:
    """(metric, direction) of every objective, in config order: the study's objectives."""
    found = [(e.metric, e.direction) for e in evaluators if e.objective]
    if not found:
        raise ConfigError("no evaluator is an objective; set objective: true on at least one")
    for metric, direction in found:
        if direction not in DIRECTIONS:
            raise ConfigError(f"evaluator for {metric}: direction {direction!r} not in {DIRECTIONS}")
    return found
