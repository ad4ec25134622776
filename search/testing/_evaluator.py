"""The promises every evaluator keeps: it fills what it declares, and what it declares reaches every view."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from torch import nn

from evaluators import Built, Evaluator, Size, TaskMetric
from search.core.attributes import CANDIDATE, OUTCOME, Outcome
from search.core.candidate import Candidate
from search.config import make_schema
from search.results.card import model_card
from search.results.html import pareto_figure
from search.results.plots import axis_label, plot_front
from search.results.tables import pareto_table, trials_table, write_tables
from search.runtime.target import Target
from search.testing._shipped import DEFAULT_TARGET, composed_target, shipped_knobs
from search.transforms import export_onnx
from search.workloads import Split

DIRECTIONS = ("maximize", "minimize")
# Settings that shrink a measurement to a few calls: the contract checks what is filled, not how precisely.
QUICK = {"budget_s": 0.05, "min_time_s": 0.0, "warmup": 1, "min_repeats": 5, "window_s": 0.05}


class SmallCNN(nn.Module):
    """Two convs and a Linear classifier on 1x8x8 inputs: a real model that exports and runs in milliseconds."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1),
                                      nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.head = nn.Linear(16 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def small_built(target: Target) -> Built:
    """SmallCNN exported to ONNX, with 64 random test rows in the digits' layout, ready to measure on ``target``."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    test = Split(rng.random((64, 1, 8, 8), dtype=np.float32), rng.integers(0, 10, 64).astype(np.int64))
    model_bytes = export_onnx(SmallCNN().eval(), torch.from_numpy(test.x[:8]))
    return Built(model_bytes, Candidate(target=target.name, batch_size=8), target, test)


def shrunk(evaluator: Evaluator) -> Evaluator:
    """The evaluator with the timing settings it has shrunk to ``QUICK``."""
    for attribute, value in QUICK.items():
        if hasattr(evaluator, attribute):
            setattr(evaluator, attribute, value)
    return evaluator


def partner_of(evaluator: Evaluator) -> Evaluator:
    """A second objective for the plots' axes: size, or the task metric for an evaluator of size."""
    own = {c.name for c in evaluator.declared_columns()}
    return next(e for e in (Size(), TaskMetric()) if not own & {c.name for c in e.declared_columns()})


def results_of(evaluators: list[Evaluator], figures: dict[str, Any]) -> tuple[Any, Any, Any]:
    """(schema, trials table, front) of three trials with ``figures`` scaled, as a run's folder would hold them."""
    schema = make_schema(shipped_knobs(), evaluators)
    study = optuna.create_study(directions=[d for _, d in schema.objectives])
    candidate = Candidate(target=DEFAULT_TARGET, quant_bits=32, parallelism="sequential").to_dict()
    for number in range(3):
        scaled = {k: (v * (1 + number) if isinstance(v, float) else v) for k, v in figures.items()}
        study.add_trial(optuna.trial.create_trial(
            params={}, distributions={}, values=[scaled[m] for m, _ in schema.objectives],
            user_attrs={CANDIDATE: candidate,
                        OUTCOME: Outcome(metrics=scaled, node="n", duration_s=1.0).to_json()}))
    table = trials_table(study.trials, schema)
    return schema, table, pareto_table(table, schema)


class EvaluatorContract:
    """Inherit it and give the ``evaluator`` fixture (an ``evaluators.Evaluator``); every test below runs on it.

    It measures a small CNN it builds itself on the shipped cpu target, with timing settings shrunk
    (``QUICK``); override ``built`` to measure a model of your own (a ``evaluators.Built``).
    """

    @pytest.fixture
    def evaluator(self) -> Evaluator:
        raise NotImplementedError

    @pytest.fixture
    def built(self) -> Iterator[Built]:
        found = small_built(composed_target(DEFAULT_TARGET))
        try:
            yield found
        finally:
            found.close()

    def test_fills_exactly_its_declared_columns(self, evaluator: Evaluator, built: Built):
        declared = [c.name for c in evaluator.declared_columns()]
        assert evaluator.metric in declared and evaluator.direction in DIRECTIONS, (evaluator.metric, declared)
        assert set(shrunk(evaluator).measure(built)) == set(declared)
        if evaluator.interval:
            assert set(evaluator.interval) <= set(declared), f"interval {evaluator.interval} names undeclared columns"

    def test_columns_reach_both_tables_the_plots_and_the_card(self, evaluator: Evaluator, built: Built,
                                                              tmp_path: Path):
        evaluator.objective = True  # as an objective it must also reach the plots' axes
        partner = partner_of(evaluator)
        figures = {**shrunk(partner).measure(built), **shrunk(evaluator).measure(built)}
        schema, table, front = results_of([partner, evaluator], figures)
        write_tables(tmp_path, table, front)
        trials_csv, pareto_csv = pd.read_csv(tmp_path / "trials.csv"), pd.read_csv(tmp_path / "pareto.csv")
        for column in evaluator.declared_columns():
            assert column.name in trials_csv.columns and column.name in pareto_csv.columns, column.name
            assert trials_csv[column.name].notna().all(), column.name
        plot_front(tmp_path / "pareto.png", table, front, schema)
        assert (tmp_path / "pareto.png").stat().st_size > 1000
        figure = pareto_figure(table, front, schema)
        titles = [axis.title.text for axis in [*figure.select_xaxes(), *figure.select_yaxes()]]
        assert axis_label(evaluator.metric, table, schema) in titles
        assert any(evaluator.metric in str(trace.hovertext) for trace in figure.data)
        run = {"target": dataclasses.asdict(built.target),
               "workload_info": {"name": "w", "input_name": "input", "input_shape": [1, 8, 8], "output_name": "logits",
                                 "preprocessing": "", "output_meaning": ""}}
        card = model_card(front.iloc[0].to_dict(), run, schema)
        assert {c.name for c in evaluator.declared_columns()} <= set(card["metrics"])
        assert card["measured"].get(evaluator.name), f"{evaluator.name} says nothing in the card about how it measured"
