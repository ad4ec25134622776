"""One trial, end to end, inside a Ray worker: prune -> distill -> export -> quantize -> check -> measure.

Everything crossing the Ray boundary is a plain dict; inside, typed objects.
"""

from __future__ import annotations

import socket
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import torch

from evaluators._base import Built, Evaluator
from search.runtime.node_lock import building, measuring_alone
from search.run.cache import STAGES, stage_key
from search.candidate import Candidate
from search.errors import NotApplicable
from search.runtime.target import Target
from search.transforms import check_onnx, distill, export_onnx, prune, quantize
from search.transforms.prune import removed_share
from search.workloads._base import Workload

CALIBRATION_SAMPLES = 256


@dataclass
class TrialResult:
    """What a worker returns: metrics, the model, and where and how long it ran."""

    metrics: dict[str, Any] = field(default_factory=dict)
    model_bytes: bytes = b""
    node: str = ""
    duration_s: float = 0.0
    stage_s: dict[str, float] = field(default_factory=dict)
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialResult:
        return cls(**data)


def _student(workload: Workload, cand: Candidate, seed: int, device: str, timings: dict[str, float],
             facts: dict[str, Any]) -> bytes:
    """fp32 ONNX of the pruned and recovered model (cached: it does not depend on bits or threads).

    ``facts`` receives ``prune_removed``, the share of channels really removed.
    """
    if workload.is_onnx:  # nothing torch-side applies: the model is the user's ONNX as it came
        if cand.prune_rate:
            raise NotApplicable("pruning needs a torch module; this workload is a bare ONNX model")
        facts["prune_removed"] = 0.0
        return workload.onnx_model
    example = torch.from_numpy(workload.train.x[:1])  # building never reads the test split
    config = {"rate": cand.prune_rate, "round_to": cand.prune_round_to, "T": cand.distill_temperature,
              "alpha": cand.distill_alpha, "seed": seed, "epochs": workload.distill_epochs}

    def build() -> tuple[bytes, float]:
        start = time.perf_counter()
        model = prune(workload.model, cand.prune_rate, example, workload.classifier, cand.prune_round_to)
        removed = removed_share(workload.model, model, workload.classifier)
        timings["prune"] = time.perf_counter() - start
        if cand.prune_rate > 0:
            start = time.perf_counter()
            distill(model, workload, cand.distill_temperature or 0.0, cand.distill_alpha or 0.0, seed, device)
            timings["distill"] = time.perf_counter() - start
        return export_onnx(model, torch.from_numpy(workload.train.x[:cand.batch_size])), removed

    model_bytes, facts["prune_removed"] = STAGES.get_or_build(stage_key("student", config, workload.key, cand.target),
                                                             build)
    return model_bytes


def build_candidate(workload: Workload, cand: Candidate, target: Target, seed: int, timings: dict[str, float],
                    facts: dict[str, Any] | None = None) -> bytes:
    fp32 = _student(workload, cand, seed, target.torch_device, timings, {} if facts is None else facts)
    start = time.perf_counter()
    calibration = workload.train.x[:CALIBRATION_SAMPLES]  # calibration never sees the test split
    model_bytes = quantize(fp32, cand.quant_bits, calibration, cand.batch_size, cand.quant_mode)
    check_onnx(model_bytes, workload.train.x[:cand.batch_size])
    timings["quantize+check"] = time.perf_counter() - start
    return model_bytes


def measure(built: Built, evaluators: list[Evaluator], result: TrialResult) -> None:
    for evaluator in evaluators:
        start = time.perf_counter()
        result.metrics.update(evaluator.measure(built))
        result.stage_s[evaluator.name] = time.perf_counter() - start


def node_name() -> str:
    """Host and Ray node: two Ray nodes on one host are told apart by their node id."""
    import ray

    if ray.is_initialized():
        return f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:8]}"
    return socket.gethostname()


def run_trial(workload: Workload, evaluators: list[Evaluator], target_cfg: dict, candidate: dict, seed: int) -> dict:
    """The Ray task body. Never raises for a failing candidate: the reason goes back as ``error``."""
    return _build_and_measure(workload, evaluators, target_cfg, candidate, seed, model_bytes=b"")


def remeasure_trial(workload: Workload, evaluators: list[Evaluator], target_cfg: dict, candidate: dict, seed: int,
                    model_bytes: bytes) -> dict:
    """The quiet phase's Ray task: run a finished trial's timed evaluators again, alone on the node.

    Without ``model_bytes`` (a model that left models/ during the search) it is rebuilt from its
    parameters and measured in full, so every figure belongs to the bytes that come back.
    """
    if not model_bytes:
        return _build_and_measure(workload, evaluators, target_cfg, candidate, seed, model_bytes=b"")
    return _build_and_measure(workload, [e for e in evaluators if e.timed], target_cfg, candidate, seed, model_bytes)


def _build_and_measure(workload: Workload, evaluators: list[Evaluator], target_cfg: dict, candidate: dict, seed: int,
                       model_bytes: bytes) -> dict:
    """Builds the candidate unless its ``model_bytes`` are given, then runs ``evaluators`` on it."""
    torch.set_num_threads(1)  # training shares the node with other trials; one core each
    started = time.perf_counter()
    result = TrialResult(node=node_name(), model_bytes=model_bytes)
    try:
        target = Target.from_config(target_cfg)
        cand = Candidate.from_dict(candidate)
        facts: dict[str, Any] = {}  # what the build learned (prune_removed); kept only if the trial succeeds
        if not result.model_bytes:
            with building():
                result.model_bytes = build_candidate(workload, cand, target, seed, result.stage_s, facts)
        built = Built(result.model_bytes, cand, target, workload.test)
        try:
            with building():  # accuracy, size, memory: what other trials do on the node cannot change them
                measure(built, [e for e in evaluators if not e.timed], result)
            with measuring_alone():  # timings and energy are only true on a node nothing else is using
                measure(built, [e for e in evaluators if e.timed], result)
        finally:
            built.close()  # a pipeline's stage threads, a replica pool
        result.metrics.update(facts)
    except NotApplicable as exc:
        result.error = f"not applicable: {exc}"
    except Exception as exc:  # a failing trial is recorded with its reason; the search goes on
        last = traceback.extract_tb(exc.__traceback__)[-1]
        result.error = f"{type(exc).__name__}: {exc} (at {last.filename.rsplit('/', 1)[-1]}:{last.lineno})"
    result.duration_s = time.perf_counter() - started
    return result.to_dict()
