"""Parts behind the result tables: Pareto front, atomic files, the stage cache, and one trial in a worker."""

from __future__ import annotations

import onnx
import onnxruntime as ort
import pandas as pd
import pytest

import optuna

from evaluators import Accuracy, Latency, Size
from search.trial.store_client import stage_key
from search.core.files import write_atomically, write_bytes, write_text
from search.config import make_schema
from search.results.pareto import pareto_mask
from search.core.candidate import Candidate
from search.results.tables import trials_table
from search.runtime.target import Target
from search.trial.build import build_candidate
from search.core.attributes import Final
from search.core.messages import TrialRequest, TrialResult
from search.trial.worker import TrialPlugins, remeasure_trial, run_trial
from search.workloads import Workload
from search.workloads import Split
from spaces import BatchSize, Distillation, Parallelism, PruneRate, QuantBits

ACC_LAT = [("accuracy", "maximize"), ("latency_ms", "minimize")]
CANDIDATE = {"target": "cpu", "quant_bits": 8, "prune_rate": 0.5, "distill_temperature": 2.0,
             "distill_alpha": 0.5, "batch_size": 16}
# the knobs that build a candidate, in the order the default space runs them
BUILD_KNOBS = [QuantBits(), PruneRate(), Distillation()]
ACC_LAT_SCHEMA = make_schema([QuantBits(), PruneRate(), Distillation(), Parallelism(), BatchSize()],
                             [Accuracy(), Latency()])


def plugins(*evaluators) -> TrialPlugins:
    return TrialPlugins(BUILD_KNOBS, list(evaluators))


# --- Pareto front ------------------------------------------------------------------------------

def test_pareto_keeps_duplicates_and_drops_dominated_points():
    table = pd.DataFrame({
        "accuracy":   [0.90, 0.95, 0.95, 0.85, 0.99, 0.90],
        "latency_ms": [1.00, 2.00, 2.00, 1.50, 5.00, 1.20],
    })
    # 0.85@1.5 is worse than 0.90@1.0 on both; 0.90@1.2 ties on accuracy and is slower.
    assert pareto_mask(table, ACC_LAT).tolist() == [True, True, True, False, True, False]


def test_pareto_direction_of_each_objective_matters():
    table = pd.DataFrame({"accuracy": [0.9, 0.8], "latency_ms": [1.0, 1.0]})
    assert pareto_mask(table, ACC_LAT).tolist() == [True, False]
    assert pareto_mask(table, [("accuracy", "minimize"), ("latency_ms", "minimize")]).tolist() == [False, True]


def test_pareto_with_three_mixed_objectives():
    table = pd.DataFrame({"accuracy": [0.9, 0.9, 0.8], "latency_ms": [1.0, 1.0, 0.5],
                          "size_bytes": [100, 200, 300]})
    objectives = [*ACC_LAT, ("size_bytes", "minimize")]
    assert pareto_mask(table, objectives).tolist() == [True, False, True]


def test_pareto_ignores_columns_that_are_not_objectives():
    table = pd.DataFrame({"accuracy": [0.9, 0.9], "latency_ms": [1.0, 1.0], "size_bytes": [1, 1000]})
    assert pareto_mask(table, ACC_LAT).tolist() == [True, True]


def test_pareto_of_an_empty_table_is_empty():
    assert len(pareto_mask(pd.DataFrame({"accuracy": [], "latency_ms": []}), ACC_LAT)) == 0


# --- the noise-aware front ---------------------------------------------------------------------

LAT_CI = {"latency_ms": ("lat_low", "lat_high", 0.0)}


def test_pareto_treats_overlapping_latency_intervals_as_a_tie():
    table = pd.DataFrame({"accuracy": [0.95, 0.96], "latency_ms": [1.00, 1.02],
                          "lat_low": [0.97, 1.00], "lat_high": [1.03, 1.05]})
    assert pareto_mask(table, ACC_LAT).tolist() == [True, True]
    # within noise, 0.96 is as fast as 0.95 and more accurate: the faster-looking row goes
    assert pareto_mask(table, ACC_LAT, LAT_CI).tolist() == [False, True]


def test_pareto_keeps_a_row_that_is_only_faster_within_noise():
    # same accuracy, one looks 2 % faster but the intervals overlap: neither is clearly better
    table = pd.DataFrame({"accuracy": [0.95, 0.95], "latency_ms": [1.00, 1.02],
                          "lat_low": [0.97, 1.00], "lat_high": [1.03, 1.05]})
    assert pareto_mask(table, ACC_LAT).tolist() == [True, False]
    assert pareto_mask(table, ACC_LAT, LAT_CI).tolist() == [True, True]


def test_pareto_drops_a_row_that_is_clearly_slower():
    table = pd.DataFrame({"accuracy": [0.95, 0.95], "latency_ms": [1.00, 1.20],
                          "lat_low": [0.99, 1.18], "lat_high": [1.01, 1.22]})
    assert pareto_mask(table, ACC_LAT, LAT_CI).tolist() == [True, False]


def test_pareto_noise_floor_widens_narrow_intervals():
    table = pd.DataFrame({"accuracy": [0.95, 0.95], "latency_ms": [1.00, 1.03],
                          "lat_low": [1.00, 1.03], "lat_high": [1.00, 1.03]})
    assert pareto_mask(table, ACC_LAT, LAT_CI).tolist() == [True, False]
    floor = {"latency_ms": ("lat_low", "lat_high", 0.02)}  # 1.00 +- 2 % meets 1.03 +- 2 %
    assert pareto_mask(table, ACC_LAT, floor).tolist() == [True, True]


def test_pareto_rows_without_an_interval_compare_by_value():
    table = pd.DataFrame({"accuracy": [0.95, 0.95], "latency_ms": [1.00, 1.02],
                          "lat_low": [None, 1.00], "lat_high": [None, 1.05]})
    assert pareto_mask(table, ACC_LAT, LAT_CI).tolist() == [True, True]  # 1.00 lies inside [1.00, 1.05]


# --- the re-timing phase's figures in the table -------------------------------------------------

def _frozen(number: int, metrics: dict) -> optuna.trial.FrozenTrial:
    trial = optuna.trial.create_trial(values=[metrics["accuracy"], metrics["latency_ms"]],
                                      user_attrs={"candidate": {"target": "cpu"},
                                                  "outcome": {"metrics": metrics, "node": "search-node"}})
    trial.number = number
    return trial


def test_final_figures_replace_the_search_figures_and_are_flagged():
    trials = [_frozen(0, {"accuracy": 0.9, "latency_ms": 2.0}), _frozen(1, {"accuracy": 0.8, "latency_ms": 1.0})]
    finals = {1: Final({"latency_ms": 1.2, "latency_ci_low_ms": 1.1}, "quiet-node")}
    table = trials_table(trials, ACC_LAT_SCHEMA, finals).set_index("trial")
    assert table.loc[1, "latency_ms"] == 1.2 and table.loc[1, "search_latency_ms"] == 1.0
    assert table.loc[1, "final"] and table.loc[1, "node"] == "quiet-node" and table.loc[1, "accuracy"] == 0.8
    assert not table.loc[0, "final"] and table.loc[0, "latency_ms"] == 2.0


def test_a_failed_remeasurement_leaves_the_search_figures():
    trials = [_frozen(0, {"accuracy": 0.9, "latency_ms": 2.0})]
    table = trials_table(trials, ACC_LAT_SCHEMA, {0: Final({}, "n", error="boom")})
    assert not table.loc[0, "final"] and table.loc[0, "latency_ms"] == 2.0


def test_degree_is_written_with_its_old_name_threads_beside_it():
    trial = _frozen(0, {"accuracy": 0.9, "latency_ms": 2.0})
    trial.set_user_attr("candidate", {"target": "cpu", "parallelism": "intra_op", "degree": 3})
    old = _frozen(1, {"accuracy": 0.9, "latency_ms": 2.0})
    # stored before the rename
    old.set_user_attr("candidate", {"target": "cpu", "parallelism": "intra_op", "threads": 2})
    table = trials_table([trial, old], ACC_LAT_SCHEMA).set_index("trial")
    assert (table.loc[0, "degree"], table.loc[0, "threads"]) == (3, 3)
    assert (table.loc[1, "degree"], table.loc[1, "threads"]) == (2, 2)


# --- atomic files ------------------------------------------------------------------------------

def test_atomic_write_replaces_the_file(tmp_path):
    path = tmp_path / "sub" / "trials.csv"
    write_text(path, "old")
    write_bytes(path, b"new")
    assert path.read_bytes() == b"new"
    assert [p.name for p in path.parent.iterdir()] == ["trials.csv"]


def test_atomic_write_leaves_the_old_file_when_the_writer_raises(tmp_path):
    path = tmp_path / "trials.csv"
    write_text(path, "old")

    def half_then_crash(tmp):
        tmp.write_text("ne")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="mid-write"):
        write_atomically(path, half_then_crash)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["trials.csv"], "the temp file was left behind"


def test_atomic_write_that_fails_on_a_new_path_creates_nothing(tmp_path):
    path = tmp_path / "never.csv"
    with pytest.raises(OSError):
        write_atomically(path, lambda tmp: (_ for _ in ()).throw(OSError("disk full")))
    assert list(tmp_path.iterdir()) == []


# --- stage cache -------------------------------------------------------------------------------

def test_stage_key_is_stable_and_ignores_dict_order():
    assert stage_key("student", {"rate": 0.5, "T": 2}, "digits", "cpu") == \
        stage_key("student", {"T": 2, "rate": 0.5}, "digits", "cpu")


def test_stage_key_differs_when_stage_config_input_or_target_differs():
    base = ("student", {"rate": 0.5}, "digits", "cpu")
    variants = [("export", {"rate": 0.5}, "digits", "cpu"), ("student", {"rate": 0.4}, "digits", "cpu"),
                ("student", {"rate": 0.5}, "other", "cpu"), ("student", {"rate": 0.5}, "digits", "gpu")]
    keys = {stage_key(*base), *(stage_key(*v) for v in variants)}
    assert len(keys) == 5


# --- one trial in a worker ---------------------------------------------------------------------

def request(candidate: dict, target: dict | None = None, model_bytes: bytes = b"") -> TrialRequest:
    """What the dispatcher sends a worker: the candidate as the driver stores it, its target, the run's seed."""
    return TrialRequest(Candidate.from_dict(candidate), target or {"name": "cpu"}, 0, model_bytes=model_bytes)


def test_run_trial_builds_measures_and_returns_a_loadable_model(tiny_workload):
    result = run_trial(tiny_workload, plugins(Accuracy(), Size()), request(CANDIDATE))
    assert isinstance(result, TrialResult)
    assert result.error == ""
    assert set(result.metrics) == {"prune_removed", "accuracy", "size_bytes"}
    assert 0.0 <= result.metrics["accuracy"] <= 1.0
    assert result.model_bytes and result.metrics["size_bytes"] == len(result.model_bytes)
    session = ort.InferenceSession(result.model_bytes, providers=["CPUExecutionProvider"])
    assert session.run(None, {"input": tiny_workload.test.x[:3]})[0].shape == (3, 10)
    ops = {node.op_type for node in onnx.load_from_string(result.model_bytes).graph.node}
    assert "QuantizeLinear" in ops, "quant_bits 8 was applied"
    assert result.duration_s > 0 and result.node


def test_run_trial_int4_on_a_conv_only_model_is_not_applicable(tiny_workload, conv_only):
    workload = Workload(name="conv-only", model=conv_only, train=tiny_workload.train, val=tiny_workload.val,
                        test=tiny_workload.test, distill_epochs=1, key="conv-only-results-parts")
    result = run_trial(workload, plugins(Size()), request({"target": "cpu", "quant_bits": 4}))
    assert result.error.startswith("not applicable") and result.not_applicable
    assert result.metrics == {}


def test_run_trial_with_a_bad_prune_rate_returns_an_error_instead_of_raising(tiny_workload):
    result = run_trial(tiny_workload, plugins(Size()), request({"target": "cpu", "prune_rate": 1.5}))
    assert result.error.startswith("ValueError") and "prune rate" in result.error
    assert result.metrics == {} and result.model_bytes == b""


# (a target declaring precisions no knob knows is refused when the knobs are narrowed: test_spaces.py)
@pytest.mark.parametrize("target_cfg", [{"name": "cpu", "energy_meter": "solar"}, {"name": "cpu", "cores": 3}])
def test_run_trial_with_a_bad_target_config_returns_an_error(tiny_workload, target_cfg):
    result = run_trial(tiny_workload, plugins(Size()), request({"target": "cpu"}, target_cfg))
    assert result.error.startswith("ConfigError")


def test_run_trial_with_a_field_no_knob_declares_returns_an_error(tiny_workload):
    result = run_trial(tiny_workload, plugins(Size()), request({**CANDIDATE, "warp_factor": 9}))
    assert result.error.startswith("UnknownField") and "warp_factor" in result.error
    assert result.metrics == {} and result.model_bytes == b""


def test_remeasure_with_the_kept_model_runs_only_the_timed_evaluators(tiny_workload):
    first = run_trial(tiny_workload, plugins(Accuracy(), Size()), request(CANDIDATE))
    again = remeasure_trial(tiny_workload, plugins(Accuracy(), Latency(warmup=1, min_repeats=5, budget_s=0.05)),
                            request(CANDIDATE, model_bytes=first.model_bytes))
    assert again.error == "" and set(again.metrics) >= {"latency_ms", "latency_ci_low_ms"}
    assert "accuracy" not in again.metrics and again.model_bytes == first.model_bytes


def test_remeasure_without_the_model_rebuilds_it_and_measures_everything(tiny_workload):
    first = run_trial(tiny_workload, plugins(Accuracy()), request(CANDIDATE))
    rebuilt = remeasure_trial(tiny_workload, plugins(Accuracy(), Latency(warmup=1, min_repeats=5, budget_s=0.05)),
                              request(CANDIDATE))
    assert rebuilt.error == "" and rebuilt.metrics["accuracy"] == first.metrics["accuracy"]
    assert rebuilt.model_bytes


# --- no test sample reaches a build -------------------------------------------------------------

class UntouchableSplit(Split):
    """A test split that fails the test the moment anything reads its inputs or labels."""

    armed = False  # set once constructed: the split's own checks read it

    def __getattribute__(self, name: str):
        if name in ("x", "y") and object.__getattribute__(self, "armed"):
            raise AssertionError(f"the build read test.{name}")
        return super().__getattribute__(name)


def test_pruning_distillation_export_and_calibration_never_read_the_test_split(tiny_workload):
    sealed = UntouchableSplit(tiny_workload.test.x, tiny_workload.test.y)
    sealed.armed = True
    workload = Workload(name="sealed", model=tiny_workload.model, train=tiny_workload.train, val=tiny_workload.val,
                        test=sealed, classifier="head", distill_epochs=1, key="sealed-test-split")
    for bits in (8, 16, 32):  # 8: static int8, calibrated
        cand = Candidate(target="cpu", quant_bits=bits, prune_rate=0.5, distill_temperature=2.0, distill_alpha=0.5,
                         batch_size=16)
        assert build_candidate(workload, cand, Target(name="cpu"), seed=0, timings={})
    with pytest.raises(AssertionError, match="read test.x"):
        sealed.x  # noqa: B018 - the tripwire itself works
