"""One trial, end to end, inside a Ray worker: the knobs build it (search/run/build.py), the evaluators measure it.

Everything crossing the Ray boundary is a plain dict; inside, typed objects.
"""

from __future__ import annotations

import functools
import socket
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import torch

from evaluators._base import Built, Evaluator
from search.candidate import Candidate
from search.errors import NotApplicable
from search.run.build import build_candidate, quick_model
from search.run.rungs import RecoveryWatch, RungPlan, StopRecovery
from search.run.store import StageStore, service
from search.runtime.machine import describe_machine
from search.runtime.node_lock import building, measuring_alone
from search.runtime.target import Target
from search.workloads._base import Workload
from spaces import Knob
from spaces._base import declared_fields


@dataclass
class TrialResult:
    """What a worker returns: metrics, the model, and where and how long it ran."""

    metrics: dict[str, Any] = field(default_factory=dict)
    model_bytes: bytes = b""
    node: str = ""
    machine: dict[str, Any] = field(default_factory=dict)  # the node's, for the cards (search/manifest.py)
    duration_s: float = 0.0
    stage_s: dict[str, float] = field(default_factory=dict)
    reuse: dict[str, Any] = field(default_factory=dict)  # artifacts the run's store served, and the time saved
    recovery: list[float] = field(default_factory=list)  # best validation score after each recovery epoch
    stopped: bool = False  # a recovery rung stopped it (``error`` says why): a PRUNED trial, not a failed one
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialResult:
        return cls(**data)


def measure(built: Built, evaluators: list[Evaluator], result: TrialResult) -> None:
    for evaluator in evaluators:
        start = time.perf_counter()
        result.metrics.update(evaluator.measure(built))
        result.stage_s[evaluator.name] = time.perf_counter() - start


@functools.cache  # a node's machine does not change while its worker lives
def node_machine() -> dict[str, Any]:
    """The machine this worker measures on, with the ONNX Runtime that measures."""
    import onnxruntime as ort

    return {**describe_machine(), "onnxruntime": ort.__version__, "providers": list(ort.get_available_providers())}


def node_name() -> str:
    """Host and Ray node: two Ray nodes on one host are told apart by their node id."""
    import ray

    if ray.is_initialized():
        return f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:8]}"
    return socket.gethostname()


@dataclass
class TrialPlugins:
    """The run's knobs (they build the candidate) and evaluators (they measure it): sent to the
    object store once, and fetched by every worker."""

    knobs: list[Knob]
    evaluators: list[Evaluator]
    store: str = ""  # the name of the run's artifact store actor ("": this process's memory only)


def trial_store(plugins: TrialPlugins) -> StageStore:
    """This trial's view of the run's store; its claims carry the Ray task's id, which a retry keeps
    and the driver can name to release them."""
    import ray

    claimant = (ray.get_runtime_context().get_task_id() or "") if ray.is_initialized() else ""
    return StageStore(service(plugins.store) if plugins.store else None, claimant)


def run_trial(workload: Workload, plugins: TrialPlugins, target_cfg: dict, candidate: dict, seed: int,
              plan: RungPlan | None = None) -> dict:
    """The Ray task body. Never raises for a failing candidate: the reason goes back as ``error``.
    With a ``plan``, recovery may stop at a rung (search/run/rungs.py)."""
    return _build_and_measure(workload, plugins, plugins.evaluators, target_cfg, candidate, seed, model_bytes=b"",
                              plan=plan)


def remeasure_trial(workload: Workload, plugins: TrialPlugins, target_cfg: dict, candidate: dict, seed: int,
                    model_bytes: bytes) -> dict:
    """The re-timing phase's Ray task: run a finished trial's timed evaluators again, alone on the node.

    Without ``model_bytes`` (a model that left models/ during the search) it is rebuilt from its
    parameters and measured in full, so every figure belongs to the bytes that come back.
    """
    if not model_bytes:
        return _build_and_measure(workload, plugins, plugins.evaluators, target_cfg, candidate, seed, model_bytes=b"")
    timed = [e for e in plugins.evaluators if e.timed]
    return _build_and_measure(workload, plugins, timed, target_cfg, candidate, seed, model_bytes)


def preview(workload: Workload, plugins: TrialPlugins, cand: Candidate, target: Target, seed: int,
            stage_s: dict[str, float], model: Any) -> dict[str, float]:
    """The figures besides the task metric, measured on a quick build of ``model`` as it stands (a
    recovery rung's): they depend on the architecture and the build settings, not on the weights."""
    started = time.perf_counter()
    quick = quick_model(workload, cand, plugins.knobs, target, seed, model)
    built = Built(quick, cand, target, workload.test, workload.metric, workload.reference, workload.output_names)
    others, partial = [e for e in plugins.evaluators if e.metric != workload.metric.name], TrialResult()
    try:
        measure(built, [e for e in others if not e.timed], partial)
        with measuring_alone():
            measure(built, [e for e in others if e.timed], partial)
    finally:
        built.close()
    stage_s["rung_preview"] = time.perf_counter() - started
    return partial.metrics


def _build_and_measure(workload: Workload, plugins: TrialPlugins, evaluators: list[Evaluator], target_cfg: dict,
                       candidate: dict, seed: int, model_bytes: bytes, plan: RungPlan | None = None) -> dict:
    """Builds the candidate unless its ``model_bytes`` are given, then runs ``evaluators`` on it."""
    torch.set_num_threads(1)  # training shares the node with other trials; one core each
    started = time.perf_counter()
    result = TrialResult(node=node_name(), machine=node_machine(), model_bytes=model_bytes)
    try:
        target = Target.from_config(target_cfg)
        cand = Candidate.from_dict(candidate, declared_fields(plugins.knobs))
        facts: dict[str, Any] = {}  # what the build learned (prune_removed); kept only if the trial succeeds
        if not result.model_bytes:
            store = trial_store(plugins)
            watch = RecoveryWatch(plan, functools.partial(preview, workload, plugins, cand, target, seed,
                                                          result.stage_s))
            try:
                with building():
                    result.model_bytes = build_candidate(workload, cand, target, seed, result.stage_s, facts,
                                                         plugins.knobs, store, watch)
            finally:
                result.reuse, result.recovery = store.reuse.as_metrics(), watch.trace
        built = Built(result.model_bytes, cand, target, workload.test, workload.metric, workload.reference,
                      workload.output_names)
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
    except StopRecovery as exc:
        result.error, result.stopped = str(exc), True
    except Exception as exc:  # a failing trial is recorded with its reason; the search goes on
        last = traceback.extract_tb(exc.__traceback__)[-1]
        result.error = f"{type(exc).__name__}: {exc} (at {last.filename.rsplit('/', 1)[-1]}:{last.lineno})"
    result.duration_s = time.perf_counter() - started
    return result.to_dict()
