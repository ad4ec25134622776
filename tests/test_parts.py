"""Small parts of the driver and worker: Pareto front, atomic files, stage cache, one trial end to end."""

from __future__ import annotations

import onnxruntime as ort
import pandas as pd
import pytest

from evaluators import Accuracy, Size
from search.cache import StageCache, stage_key
from search.files import write_atomically, write_text
from search.pareto import pareto_mask
from search.worker import run_trial
from search.workloads import Workload

OBJECTIVES = [("accuracy", "maximize"), ("latency_ms", "minimize")]


def test_pareto_keeps_non_dominated_and_ties_drops_dominated():
    table = pd.DataFrame({"accuracy": [0.9, 0.95, 0.95, 0.85, 0.99],
                          "latency_ms": [1.0, 2.0, 2.0, 1.5, 5.0]})
    assert pareto_mask(table, OBJECTIVES).tolist() == [True, True, True, False, True]


def test_pareto_direction_matters():
    table = pd.DataFrame({"accuracy": [0.9, 0.8], "latency_ms": [1.0, 1.0]})
    assert pareto_mask(table, OBJECTIVES).tolist() == [True, False]
    assert pareto_mask(table, [("accuracy", "minimize"), ("latency_ms", "minimize")]).tolist() == [False, True]


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "trials.csv"
    write_text(path, "old")

    def half_then_crash(tmp):
        tmp.write_text("ne")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        write_atomically(path, half_then_crash)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["trials.csv"]


def test_stage_cache_builds_once_per_key_and_evicts_oldest():
    cache, calls = StageCache(max_entries=2), []

    def builder(value):
        return lambda: calls.append(value) or value

    assert cache.get_or_build("a", builder("a")) == "a"
    assert cache.get_or_build("a", builder("a2")) == "a"
    cache.get_or_build("b", builder("b"))
    cache.get_or_build("c", builder("c"))  # evicts a
    cache.get_or_build("a", builder("a3"))
    assert calls == ["a", "b", "c", "a3"] and cache.hits == 1


def test_stage_key_depends_on_config_input_and_target():
    base = stage_key("student", {"rate": 0.5}, "teacher", "cpu")
    assert base == stage_key("student", {"rate": 0.5}, "teacher", "cpu")
    assert len({base, stage_key("student", {"rate": 0.4}, "teacher", "cpu"),
                stage_key("student", {"rate": 0.5}, "other", "cpu"),
                stage_key("student", {"rate": 0.5}, "teacher", "gpu")}) == 4


def test_a_trial_runs_end_to_end_in_a_worker_function(tiny_workload):
    candidate = {"target": "cpu", "quant_bits": 8, "prune_rate": 0.5, "prune_round_to": 4,
                 "distill_temperature": 2.0, "distill_alpha": 0.5, "batch_size": 16}
    result = run_trial(tiny_workload, [Accuracy(), Size()], {"name": "cpu"}, candidate, seed=0)
    assert result["error"] == ""
    assert 0 <= result["metrics"]["accuracy"] <= 1
    assert result["metrics"]["size_bytes"] == len(result["model_bytes"])
    ort.InferenceSession(result["model_bytes"], providers=["CPUExecutionProvider"])
    assert {"prune", "distill", "quantize+check", "accuracy", "size"} <= set(result["stage_s"])


def test_a_failing_candidate_comes_back_as_an_error_not_an_exception(tiny_workload, conv_only):
    workload = Workload(name="conv", model=conv_only, train=tiny_workload.train, val=tiny_workload.val,
                        test=tiny_workload.test, key="conv")
    int4 = run_trial(workload, [Size()], {"name": "cpu"}, {"target": "cpu", "quant_bits": 4}, seed=0)
    assert int4["error"].startswith("not applicable: int4")
    broken = run_trial(tiny_workload, [Size()], {"name": "cpu"}, {"target": "cpu", "prune_rate": 1.5}, seed=0)
    assert broken["error"].startswith("ValueError: prune rate must be in [0, 1)")
