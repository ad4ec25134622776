"""A quality floor the search honours: ``constraints.*`` (search/core/constraints.py) marks every row, hands the
misses to the sampler, makes the front the feasible trials' and, where none is feasible, keeps the closest."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pandas as pd
import pytest

from search.core.constraints import Constraints, Limit, constraints_for, parse_constraints
from search.core.errors import ConfigError
from search.core.schema import Column, Field, Schema
from search.results.tables import GrowingFront, front_pool, pareto_table
from search.strategy.study import load_run_study
from tests.conftest import search

LIMITS = constraints_for({"max_metric_drop": 0.02, "max_latency_ms": 2.0}, ["accuracy", "latency_ms", "size_bytes"],
                         ("accuracy", "maximize"))
SCHEMA = Schema(fields=(Field("target"), Field("batch_size")),
                metrics=(Column("accuracy"), Column("latency_ms"), Column("size_bytes")),
                objectives=(("accuracy", "maximize"), ("latency_ms", "minimize")), constraints=LIMITS)
BASELINE = {"trial": 0, "state": "COMPLETE", "baseline": True, "accuracy": 0.90, "latency_ms": 3.0}


def completed(trial: int, accuracy: float, latency: float) -> dict:
    return {"trial": trial, "state": "COMPLETE", "baseline": False, "accuracy": accuracy, "latency_ms": latency}


def test_a_drop_is_measured_worse_ward_from_the_baseline_and_misses_add_up_relative_to_their_bounds():
    drop, latency = LIMITS.limits
    assert (drop.column, drop.op, drop.bound(BASELINE)) == ("accuracy", ">=", pytest.approx(0.88))
    assert LIMITS.misses(completed(1, 0.89, 1.0), BASELINE) == [0.0, 0.0]
    assert LIMITS.misses(completed(2, 0.80, 3.0), BASELINE) == pytest.approx([0.08 / 0.88, 0.5])
    assert LIMITS.marked(completed(3, 0.80, 1.0), BASELINE)["feasible"] is False
    assert LIMITS.marked(BASELINE, BASELINE)["feasible"] is False, "a limit on latency holds for the baseline too"
    lower = constraints_for({"max_metric_drop": 0.1}, ["mse"], ("mse", "minimize")).limits[0]
    assert (lower.op, lower.bound({"mse": 1.0})) == ("<=", pytest.approx(1.1)), "worse-ward for a minimized metric"
    assert drop.miss(completed(4, 0.1, 1.0), None) == 0.0, "before the baseline is measured, a drop is not held"


@pytest.mark.parametrize("raw, said", [({"max_metric_drop": -0.01}, "not negative"),
                                       ({"max_latency_ms": "fast"}, "expected a number"),
                                       ({"latency_ms": 2}, "expected constraints.max_metric_drop"),
                                       ({"max_": 2}, "expected constraints.max_metric_drop")])
def test_bad_limits_are_one_line(raw, said):
    with pytest.raises(ConfigError, match=said):
        parse_constraints(raw)


def test_a_limit_on_a_column_the_rows_do_not_have_names_the_columns_they_do():
    with pytest.raises(ConfigError, match="no numeric column 'latency_p99'.*latency_ms"):
        constraints_for({"max_latency_p99": 1}, ["accuracy", "latency_ms"], ("accuracy", "maximize"))


def test_the_front_is_the_feasible_trials_and_where_none_is_the_closest():
    rows = [LIMITS.marked(r, BASELINE) for r in (BASELINE, completed(1, 0.895, 1.5), completed(2, 0.70, 0.5),
                                                 completed(3, 0.89, 1.0))]
    table = pd.DataFrame(rows, columns=SCHEMA.columns)
    assert list(pareto_table(table, SCHEMA)["trial"]) == [1, 3], "trial 2 is faster, but misses the floor"
    none_met = [LIMITS.marked(r, BASELINE) for r in (completed(1, 0.70, 5.0), completed(2, 0.85, 2.5))]
    table = pd.DataFrame(none_met, columns=SCHEMA.columns)
    assert list(pareto_table(table, SCHEMA)["trial"]) == [2], "the least violation, alone"
    assert front_pool(None, None) is None


def test_the_growing_front_matches_the_whole_table_as_rows_arrive_in_any_order():
    rng = np.random.default_rng(0)
    rows = [BASELINE] + [completed(n, float(rng.uniform(0.7, 0.92)), float(rng.uniform(0.5, 4.0)))
                         for n in range(1, 40)]
    rows = [LIMITS.marked(r, BASELINE) for r in rows]
    for order in (rows, rows[::-1], [*rows[1:], rows[0]]):
        front = GrowingFront.of(pd.DataFrame([], columns=SCHEMA.columns), SCHEMA)
        for at, row in enumerate(order, start=1):
            front.add(row, SCHEMA)
            whole = pareto_table(pd.DataFrame(order[:at], columns=SCHEMA.columns), SCHEMA)
            assert sorted(r["trial"] for r in front.members()) == sorted(whole["trial"]), at
        assert front.feasible() == sum(bool(r["feasible"]) for r in rows)


def test_an_unconstrained_schema_has_no_feasibility_columns():
    assert "feasible" not in Schema(fields=(Field("target"),)).columns
    assert {"feasible", "violation"} <= set(SCHEMA.columns)
    assert not Constraints() and Limit("max_x", "x", "<=", 1.0).text() == "max_x=1"


def test_a_run_whose_limits_no_trial_meets_says_so_keeps_the_closest_and_the_sampler_read_the_misses(
        tmp_path, teacher_cache):
    proc = search(tmp_path, teacher_cache, "workers=1", "run=floor", "trials=4", "remeasure=false",
                  "constraints.max_latency_ms=0.000001", "constraints.max_metric_drop=0.05")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "floor"
    front = pd.read_csv(run / "pareto.csv")
    assert len(front) == 1 and not front["feasible"].any()
    table = pd.read_csv(run / "trials.csv")
    done = table[table["state"] == "COMPLETE"]
    assert front["violation"].iloc[0] == pytest.approx(done["violation"].min())
    closest = int(front["trial"].iloc[0])
    assert (run / "models" / f"trial-{closest}.onnx").exists(), "the closest model is saved"
    assert f"no trial met them; the closest is trial {closest}" in proc.stdout
    assert "· 0 feasible · front 1" in proc.stderr, "the progress line counts the feasible trials"
    assert "constraints max_latency_ms=1e-06, max_metric_drop=0.05" in proc.stdout
    study = load_run_study(run)
    measured = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    assert all(t.constraints["max_latency_ms"] > 0 for t in measured), "Optuna's samplers read the misses"
    assert json.loads(json.dumps(study.trials[0].constraints)) == {"max_latency_ms": pytest.approx(
        done.set_index("trial").loc[0, "search_latency_ms"] / 1e-6 - 1, rel=1e-6), "max_metric_drop": 0.0}


def test_a_bad_limit_from_the_shell_is_one_line_and_exit_2(tmp_path, teacher_cache):
    proc = search(tmp_path, teacher_cache, "trials=2", "constraints.max_nope=1")  # the others: parse_constraints
    assert proc.returncode == 2 and "no numeric column 'nope'" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_limits_on_any_column_compose_from_overrides_as_the_shell_and_optimize_give_them():
    from search.config import compose_config

    cfg = compose_config(["constraints.max_latency_ms=2", "constraints.max_metric_drop=0.01"])
    assert dict(cfg.constraints) == {"max_latency_ms": 2, "max_metric_drop": 0.01}
    assert dict(compose_config([]).constraints) == {}, "unconstrained by default"
