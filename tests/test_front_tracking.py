"""The front kept up to date trial by trial is the front recomputed from scratch, at every step."""

from __future__ import annotations

import numpy as np
import pandas as pd

from search.results.pareto import bounds, extend_front, pareto_mask, row_bounds
from search.results.tables import FrontTracker
from search.core.schema import Field, Schema

OBJECTIVES = (("accuracy", "maximize"), ("latency_ms", "minimize"), ("size_bytes", "minimize"))
INTERVALS = {"latency_ms": ("latency_ci_low_ms", "latency_ci_high_ms", 0.02)}


def noisy_table(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    table = pd.DataFrame({"trial": np.arange(n), "state": "COMPLETE",
                          "accuracy": rng.choice([0.95, 0.97, 0.98, 0.99], n), "latency_ms": rng.uniform(0.1, 1, n),
                          "size_bytes": rng.integers(1, 40, n)})
    table["latency_ci_low_ms"] = table["latency_ms"] * rng.uniform(0.85, 1, n)
    table["latency_ci_high_ms"] = table["latency_ms"] * rng.uniform(1, 1.15, n)
    return table


def test_one_row_at_a_time_gives_the_whole_front_at_every_step():
    table = noisy_table(300, seed=0)
    front = np.zeros(0, dtype=bool)
    for n in range(1, len(table) + 1):
        new = np.zeros(n, dtype=bool)
        new[-1] = True
        front = extend_front(table.iloc[:n], OBJECTIVES, INTERVALS, np.append(front, False), new)
        assert (front == pareto_mask(table.iloc[:n], OBJECTIVES, INTERVALS)).all(), n
    assert 1 < front.sum() < len(table)  # a real front: neither everything nor one row


def test_one_rows_bounds_from_its_dict_are_those_from_a_table():
    table = noisy_table(50, seed=1).astype({"latency_ci_low_ms": object})
    table.loc[3, "latency_ci_low_ms"] = None  # a row measured without an interval
    for row in table.to_dict("records"):
        low, high = bounds(pd.DataFrame([row]), OBJECTIVES, INTERVALS)
        mine = row_bounds(row, OBJECTIVES, INTERVALS)
        np.testing.assert_array_equal(mine[0], low)
        np.testing.assert_array_equal(mine[1], high)


def test_several_new_rows_at_once_give_the_whole_front():
    table = noisy_table(400, seed=1)
    earlier = pareto_mask(table.iloc[:350], OBJECTIVES, INTERVALS)
    new = np.arange(400) >= 350
    assert (extend_front(table, OBJECTIVES, INTERVALS, np.append(earlier, np.zeros(50, bool)), new)
            == pareto_mask(table, OBJECTIVES, INTERVALS)).all()


def test_the_tracker_recomputes_when_figures_change_under_it():
    schema = Schema(fields=(Field("target", kind="str"),), objectives=OBJECTIVES, intervals=INTERVALS)
    table = noisy_table(60, seed=2)
    tracker = FrontTracker()
    for n in (20, 40, 60):
        assert set(tracker.front(table.iloc[:n], schema, version=0)["trial"]) == \
            set(table.iloc[:n][pareto_mask(table.iloc[:n], OBJECTIVES, INTERVALS)]["trial"])
    best = int(table["latency_ms"].idxmin())
    retimed = table.copy()
    retimed.loc[best, ["latency_ms", "latency_ci_low_ms", "latency_ci_high_ms"]] = [50.0, 49.0, 51.0]
    front = tracker.front(retimed, schema, version=frozenset({best}))  # a re-timed trial: the version moves
    assert set(front["trial"]) == set(retimed[pareto_mask(retimed, OBJECTIVES, INTERVALS)]["trial"])
