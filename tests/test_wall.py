"""The Ray wall: typed messages cross it (a ``TrialRequest`` out, a ``TrialResult`` back), and what a run keeps of
a trial in study.db is written and read through one codec (search/core/attributes.py) in the form earlier runs
wrote, so their folders still read."""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna
from ray import cloudpickle

from evaluators import Built, Evaluator
from search.core import attributes
from search.core.attributes import Final, Outcome
from search.core.candidate import Candidate
from search.core.messages import TrialRequest, TrialResult
from search.core.schema import Column
from search.strategy import study as studies
from search.trial.recovery import RungPlan
from search.trial.worker import TrialPlugins, run_trial
from search.workloads import check_workload
from spaces import QuantBits


def test_a_request_crosses_as_ray_pickles_it_and_keeps_its_types():
    cand = Candidate(target="cpu", quant_bits=8, quant_mode="minmax", parallelism="intra_op", degree=2)
    plan = RungPlan([1], "accuracy", 1, {1: 0.1}, 0.0, [{"accuracy": 0.9}], {})
    request = TrialRequest(cand, {"name": "cpu"}, 3, plan, b"onnx")
    across = cloudpickle.loads(cloudpickle.dumps(request))
    assert across == request and isinstance(across.candidate, Candidate) and isinstance(across.plan, RungPlan)
    assert across.candidate.runtime["intra_op_num_threads"] == 2


def test_a_result_crosses_back_typed():
    result = TrialResult(metrics={"accuracy": 0.9}, model_bytes=b"m", node="n", recovery=[0.1, 0.2], stopped=True,
                         error="stopped after recovery epoch 1 of 2")
    across = cloudpickle.loads(cloudpickle.dumps(result))
    assert across == result and across.recovery == [0.1, 0.2] and across.stopped
    assert TrialResult.failed("WorkerCrashedError: gone") == TrialResult(error="WorkerCrashedError: gone")


def test_the_codec_writes_what_earlier_runs_wrote_and_reads_it_back(tmp_path):
    study = optuna.create_study(storage=studies.sqlite_storage(tmp_path / "study.db"), directions=["maximize"])
    study.enqueue_trial({"x": 1}, user_attrs=attributes.queued(baseline=True, warm_start="old trial 3"))
    trial = study.ask({"x": optuna.distributions.CategoricalDistribution([1, 2])})
    cand = Candidate(target="cpu", quant_bits=32)
    attributes.write_candidate(trial, cand)
    result = TrialResult(metrics={"accuracy": 0.5}, node="n", duration_s=1.5, stage_s={"prune": 0.1},
                         reuse={"store_hits": 1}, recovery=[0.4, 0.5])
    studies.record(study, trial, result, [("accuracy", "maximize")])
    studies.store_final(study, trial.number, TrialResult(metrics={"accuracy": 0.5}, node="quiet", duration_s=0.2))
    again = optuna.load_study(study_name=study.study_name, storage=f"sqlite:///{tmp_path / 'study.db'}")
    frozen = again.trials[0]
    # the stored JSON is the form every earlier run folder holds
    assert frozen.user_attrs["candidate"] == cand.to_dict() and frozen.user_attrs["baseline"] is True
    assert frozen.user_attrs["outcome"] == {"metrics": {"accuracy": 0.5}, "node": "n", "duration_s": 1.5,
                                            "stage_s": {"prune": 0.1}, "reuse": {"store_hits": 1},
                                            "recovery": [0.4, 0.5], "error": ""}
    assert again.user_attrs["final:0"] == {"metrics": {"accuracy": 0.5}, "node": "quiet", "duration_s": 0.2,
                                           "error": ""}
    assert Candidate.from_dict(attributes.candidate_of(frozen)) == cand
    assert attributes.outcome_of(frozen) == Outcome.of_result(result, "")
    assert attributes.is_baseline(frozen) and attributes.warm_origin(frozen) == "old trial 3"
    assert attributes.finals_of(again) == {0: Final({"accuracy": 0.5}, "quiet", 0.2)}


def test_an_earlier_runs_partial_outcome_still_reads():
    frozen = optuna.trial.create_trial(value=1.0, user_attrs={"outcome": {"metrics": {"a": 1}, "node": "n"}})
    assert attributes.outcome_of(frozen) == Outcome(metrics={"a": 1}, node="n")
    assert attributes.error_of(frozen) == "" and attributes.candidate_of(frozen) == {}


class ReferenceAgreement(Evaluator):
    """An evaluator that reads the original model's outputs: the share of test rows whose argmax it keeps."""

    name, metric, direction, needs_reference = "agreement", "agreement", "maximize", True
    columns = (Column("agreement", doc="share of test rows whose top class is the original model's"),)

    def measure(self, built: Built) -> dict[str, Any]:
        mine = built.runner.run(built.test.rows(0, len(built.test)))[0].argmax(1)
        return {"agreement": float((mine == built.reference["logits"].argmax(1)).mean())}


def test_an_evaluator_that_needs_the_original_outputs_gets_them_whatever_the_metric(tiny_workload):
    assert check_workload(tiny_workload, "tiny").reference is None  # accuracy needs no reference
    workload = check_workload(tiny_workload, "tiny", keep_reference=True)
    assert set(workload.reference) == {"logits"} and len(workload.reference["logits"]) == len(workload.test)
    request = TrialRequest(Candidate(target="cpu", quant_bits=32, batch_size=64), {"name": "cpu"}, 0)
    result = run_trial(workload, TrialPlugins([QuantBits()], [ReferenceAgreement()]), request)
    assert result.error == "" and result.metrics["agreement"] == 1.0  # fp32 is the original model
    assert np.isfinite(result.duration_s)
