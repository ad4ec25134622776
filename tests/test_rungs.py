"""Multi-fidelity recovery: rungs stop a candidate the front beats even at its best plausible quality."""

from __future__ import annotations

import dataclasses
import threading

import optuna
import pytest

from evaluators import Accuracy, Size
from search.strategy import study as studies
from search.run.rungs import RungHistory, recovery_history
from search.core.attributes import Outcome
from search.core.candidate import Candidate
from search.core.messages import TrialRequest, TrialResult
from search.trial.recovery import RecoveryWatch, RungPlan, StopRecovery
from search.trial.worker import TrialPlugins, run_trial
from search.runtime.node_lock import building, measuring_alone
from search.transforms.training import train_model
from spaces import Distillation, PruneRate, QuantBits

FRONT = [{"accuracy": 0.99, "latency_ms": 1.0, "size_bytes": 100.0}]


def plan(**changes) -> RungPlan:
    base = RungPlan(rungs=[2, 4], quality="accuracy", sign=1, gains={2: 0.02, 4: 0.01}, offset=0.0, front=FRONT,
                    senses={"latency_ms": -1, "size_bytes": -1}, floors={"latency_ms": 0.05})
    return dataclasses.replace(base, **changes)


def test_a_candidate_stops_only_when_the_front_beats_it_beyond_noise():
    slow_and_big = {"latency_ms": 2.0, "size_bytes": 200.0}
    assert plan().verdict(2, 8, 0.90, slow_and_big).startswith("stopped after recovery epoch 2 of 8")
    assert plan().verdict(2, 8, 0.98, slow_and_big) == "", "0.98 + 1.1 x 0.02 could still beat 0.99"
    assert plan().verdict(2, 8, 0.90, {"latency_ms": 1.03, "size_bytes": 200.0}) == "", "1.03 vs 1.0 ms is noise"
    assert plan().verdict(2, 8, 0.90, {"latency_ms": 0.5, "size_bytes": 200.0}) == "", "faster: it may join the front"
    assert plan(offset=0.1).verdict(2, 8, 0.90, slow_and_big) == "", "test scores ran above validation before"


def test_a_metric_to_minimize_is_bounded_downwards():
    mse = plan(quality="mse", sign=-1, front=[{"mse": 0.10, "latency_ms": 1.0, "size_bytes": 100.0}])
    assert mse.verdict(2, 8, 0.20, {"latency_ms": 2.0, "size_bytes": 200.0})  # 0.20 - 0.022 cannot reach 0.10
    assert mse.verdict(2, 8, 0.11, {"latency_ms": 2.0, "size_bytes": 200.0}) == ""


def test_history_gives_no_plan_before_enough_full_recoveries():
    history = RungHistory([0.25, 0.5], epochs=8, quality="accuracy", sign=1)
    assert history.rungs == [2, 4]
    objectives = [("accuracy", "maximize"), ("latency_ms", "minimize"), ("size_bytes", "minimize")]
    for final in (0.95, 0.96):
        history.add([0.5, 0.8, 0.9, 0.9, 0.92, 0.93, 0.94, 0.95, final], test_score=final + 0.01)
    history.add([0.5, 0.9], test_score=0.9)  # a stopped or odd trace: not evidence of a full recovery
    assert history.plan(FRONT, objectives, {}) is None
    history.add([0.5] * 9, test_score=0.4)
    made = history.plan(FRONT, objectives, {"latency_ms": 0.05})
    assert made.rungs == [2, 4] and made.gains == {2: pytest.approx(0.06), 4: pytest.approx(0.04)}
    assert made.offset == pytest.approx(0.01) and made.senses == {"latency_ms": -1, "size_bytes": -1}


def test_a_resumed_run_learns_from_its_earlier_trials(tiny_workload):
    workload = dataclasses.replace(tiny_workload, distill_epochs=4)
    outcomes = [Outcome(metrics={"accuracy": 0.4}, recovery=[0.1, 0.2, 0.3, 0.3, 0.4])] * 3
    history = recovery_history([0.5], workload, [("accuracy", "maximize")], outcomes)
    assert history.rungs == [2] and history.gains == {2: [pytest.approx(0.1)] * 3}
    assert recovery_history([], workload, [("accuracy", "maximize")], outcomes) is None
    assert recovery_history([0.5], workload, [("size_bytes", "minimize")], outcomes) is None


def test_training_reports_each_epoch_and_a_rung_stops_it(tiny_workload):
    seen = []

    def rung(model, epoch, epochs, best):
        seen.append((epoch, epochs, best))
        if epoch == 2:
            raise StopRecovery("hopeless")

    with pytest.raises(StopRecovery):
        train_model(tiny_workload.model, tiny_workload.train, tiny_workload.val, epochs=5, lr=1e-3, seed=0,
                    after_epoch=rung)
    assert [s[:2] for s in seen] == [(0, 5), (1, 5), (2, 5)]
    assert all(later >= earlier for (_, _, earlier), (_, _, later) in zip(seen, seen[1:], strict=False)), "best so far"


def test_a_worker_stops_a_hopeless_candidate_after_measuring_a_quick_build(tiny_workload):
    workload = dataclasses.replace(tiny_workload, distill_epochs=4)
    perfect = plan(rungs=[1], gains={1: 0.0}, front=[{"accuracy": 1.0, "size_bytes": 1.0}],
                   senses={"size_bytes": -1}, floors={})
    plugins = TrialPlugins([QuantBits(), PruneRate(), Distillation()], [Accuracy(), Size()])
    candidate = {"target": "cpu", "quant_bits": 8, "prune_rate": 0.5, "distill_temperature": 2.0,
                 "distill_alpha": 0.5, "batch_size": 16}
    result = run_trial(workload, plugins, TrialRequest(Candidate.from_dict(candidate), {"name": "cpu"}, 0, perfect))
    assert result.stopped and result.error.startswith("stopped after recovery epoch 1 of 4"), result.error
    assert len(result.recovery) == 2 and result.stage_s["rung_preview"] > 0
    assert not result.model_bytes
    goes_on = run_trial(workload, plugins, TrialRequest(Candidate.from_dict(candidate), {"name": "cpu"}, 0))
    assert not goes_on.error and len(goes_on.recovery) == 5, "without a plan it recovers in full"


def test_a_stopped_trial_is_pruned_and_counts_as_tried():
    study = optuna.create_study(directions=["maximize"])
    trial = study.ask()
    stopped = TrialResult(stopped=True, error="stopped after recovery epoch 1 of 4: ...")
    assert studies.record(study, trial, stopped, [("accuracy", "maximize")])[0] == ""
    frozen = study.get_trials()[0]
    assert frozen.state == optuna.trial.TrialState.PRUNED
    assert studies.finished(study.get_trials()) == (1, 0)


def test_timing_inside_a_build_sets_the_build_lock_aside(tmp_path):
    lock, done = tmp_path / "node.lock", threading.Event()

    def quick_build_timed_mid_training():
        with building(lock):
            with measuring_alone(lock):
                pass
            with measuring_alone(lock):  # and again, the build's shared hold taken back in between
                done.set()

    worker = threading.Thread(target=quick_build_timed_mid_training, daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert done.is_set(), "measuring inside a build waited on the build's own lock"


def test_recovery_watch_measures_the_quick_build_once():
    previews = []
    watch = RecoveryWatch(plan(rungs=[1, 2], gains={1: 0.5, 2: 0.5}), lambda model: previews.append(1) or
                          {"latency_ms": 0.1, "size_bytes": 1.0})
    for epoch in range(4):
        watch(None, epoch, 3, 0.5 + epoch / 10)
    assert previews == [1] and watch.trace == [0.5, 0.6, 0.7, 0.8]
