"""Stop rules: the exact front grows exactly when the hypervolume does; a time budget and a stall end a search."""

from __future__ import annotations

import numpy as np

from search.results.history import REFERENCE
from search.run.stopping import ExactFront, StopRules, as_loss


def hypervolume(points: np.ndarray) -> float:
    from search.core.optuna_private import compute_hypervolume

    return float(compute_hypervolume(points, np.full(points.shape[1], REFERENCE)))


def test_a_trial_enters_the_exact_front_exactly_when_it_grows_the_hypervolume():
    rng = np.random.default_rng(0)
    points = rng.random((60, 3))
    points[10] = points[3]  # a tie adds no volume
    front, seen = ExactFront(), []
    for point in points:
        before = hypervolume(np.array(seen)) if seen else 0.0
        seen.append(point)
        grew = hypervolume(np.array(seen)) > before + 1e-12
        assert front.add(point) == grew


def test_the_stall_counts_finished_trials_since_the_front_last_grew():
    rules = StopRules(time_budget_s=None, stall_trials=3, directions=["maximize", "minimize"])
    rules.seed([[0.9, 1.0]])
    for values in ([0.8, 2.0], None, [0.9, 1.0]):  # dominated, failed, a tie
        assert rules.reason() == ""
        rules.finished(values)
    assert "did not grow in the last 3 trials" in rules.reason()
    rules.finished([0.95, 1.5])  # a new trade-off: the front grew
    assert rules.reason() == "" and rules.since_growth == 0
    assert list(as_loss([0.9, 1.0], ["maximize", "minimize"])) == [-0.9, 1.0]


def test_a_spent_time_budget_stops_asking():
    rules = StopRules(time_budget_s=0.01, stall_trials=None, directions=["minimize"])
    rules.started -= 1.0
    assert rules.reason().startswith("time_budget=0.01 s spent")
