"""Whole searches across targets and parallelism modes, through the real command."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import search

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_target_run(tmp_path_factory, teacher_cache) -> Path:
    results = tmp_path_factory.mktemp("targets")
    # one round_to: no draw is re-asked as another prune value's, which would hide a target's refusal behind it
    proc = search(results, teacher_cache, "targets=[cpu,cpu_1t]", "trials=8", "workers=2", "run=two", "seed=1",
                  "remeasure=true", "space.knobs.prune_rate.round_to=[8]")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return results / "two"


def test_a_study_across_targets_measures_each_and_keeps_a_front_per_target(two_target_run):
    table = pd.read_csv(two_target_run / "trials.csv")
    done = table[table["state"] == "COMPLETE"]
    assert len(done) == 8 and set(done["target"]) == {"cpu", "cpu_1t"}
    one_core = done.loc[done["target"] == "cpu_1t", "parallelism"]
    assert len(one_core) >= 1 and (one_core == "sequential").all()
    for target in ("cpu", "cpu_1t"):
        front = pd.read_csv(two_target_run / f"pareto-{target}.csv")
        assert len(front) and (front["target"] == target).all()
        for trial in front["trial"]:  # every target's front members are kept, with cards naming the target
            card = json.loads((two_target_run / "models" / f"trial-{trial}.json").read_text())
            assert card["runtime"]["target"] == target


def test_draws_a_target_cannot_run_are_kept_with_the_reason_and_not_counted(two_target_run):
    table = pd.read_csv(two_target_run / "trials.csv")
    same_model = table["error"].fillna("").str.contains("removes the very channels")  # a prune draw named anew
    skipped = table[(table["state"] == "PRUNED") & ~same_model]
    assert len(skipped) >= 1, "no draw asked a target for what it lacks: nothing here was checked"
    assert skipped["error"].str.startswith("not applicable: target").all()
    assert (table["state"] == "COMPLETE").sum() == 8  # trials=8 counts what was built and measured


def test_parallel_modes_run_end_to_end_with_their_degree_in_the_card(tmp_path, teacher_cache):
    proc = search(tmp_path, teacher_cache, "space.knobs.parallelism.modes=[inter_op,data_parallel,pipeline]",
                  "space.knobs.prune_rate.high=0.1", "trials=7", "workers=2", "run=modes", "seed=3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pd.read_csv(tmp_path / "modes" / "trials.csv")
    done = table[table["state"] == "COMPLETE"]
    parallel = done[done["parallelism"] != "sequential"]
    assert set(parallel["parallelism"]) <= {"inter_op", "data_parallel", "pipeline"} and len(parallel) >= 3
    assert (parallel["threads"] >= 2).all() and (parallel["latency_ms"] > 0).all() and (parallel["energy_mj"] > 0).all()
    pipelines = done.loc[done["parallelism"] == "pipeline", "micro_batches"]
    assert len(pipelines) >= 1 and (pipelines == 4).all()
    assert done["accuracy"].min() > 0.9  # scored through the mode's own runner: replicas and stages give real answers


def test_pick_for_a_target_chooses_from_that_targets_own_front(two_target_run, tmp_path):
    from search.pick import pick

    row = pick([str(two_target_run), "--target", "cpu_1t", "--sort", "latency_ms", "--out", str(tmp_path)])
    own_front = pd.read_csv(two_target_run / "pareto-cpu_1t.csv")
    assert row["target"] == "cpu_1t" and row["latency_ms"] == own_front["latency_ms"].min()
    assert (tmp_path / f"trial-{int(row['trial'])}.onnx").exists()
