"""One trial, end to end, inside a Ray worker: the knobs build it (search/trial/build.py), the evaluators measure it.

A task takes a ``TrialRequest`` and returns a ``TrialResult`` (search/core/messages.py): typed on both sides
of the Ray boundary. A failing candidate comes back as a result with its reason, never as an exception.
"""

from __future__ import annotations

import functools
import os
import socket
import time
import traceback
from dataclasses import dataclass
from typing import Any

import torch

from evaluators import Built, Evaluator
from search.core.candidate import Candidate
from search.core.errors import NotApplicable
from search.core.messages import TrialRequest, TrialResult
from search.trial.build import build_candidate, quick_model
from search.trial.shared_workload import WorkloadRef, fetch
from search.trial.recovery import RecoveryWatch, StopRecovery
from search.trial.store_client import StageStore, service
from search.runtime.machine import describe_machine
from search.runtime.node_load import Settled, wait_until_quiet
from search.runtime.node_lock import building, measuring_alone
from search.runtime.target import Target
from search.workloads import Workload
from spaces import Knob
from spaces import declared_fields


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


def run_trial(workload: Workload, plugins: TrialPlugins, request: TrialRequest) -> TrialResult:
    """The Ray task body. Never raises for a failing candidate: the reason goes back as ``error``.
    With ``request.plan``, recovery may stop at a rung (search/trial/recovery.py)."""
    return _build_and_measure(workload, plugins, plugins.evaluators, request)


def remeasure_trial(workload: Workload, plugins: TrialPlugins, request: TrialRequest) -> TrialResult:
    """The re-timing phase's Ray task: run a finished trial's timed evaluators again on ``request.model_bytes``,
    alone on the node.

    Without the model (one that left models/ during the search) it is rebuilt from its parameters and
    measured in full, so every figure belongs to the bytes that come back.
    """
    if not request.model_bytes:
        return _build_and_measure(workload, plugins, plugins.evaluators, request)
    return _build_and_measure(workload, plugins, [e for e in plugins.evaluators if e.timed], request)


@dataclass(frozen=True)
class SessionStart:
    """A re-timing session's process, ready: its id, and what its wait for a quiet node found."""

    pid: int
    settled: Settled


class SessionWorker:
    """One re-timing session's process (a Ray actor): started, and made ready, before it times anything.

    Each session of the re-timing phase gets a fresh one, as a bundle's verify.py is a fresh process: the
    scatter of a model's p50 between sessions is then the scatter between processes, which a search's long-lived
    workers cannot show (their p50s sat a few per cent from every fresh process's, each model by an offset of its
    own: bench/figures.py). Ready first, because a process that starts (imports torch, fetches the workload)
    while another one measures slows that measurement by several per cent."""

    def ready(self, box: WorkloadRef, plugins: TrialPlugins) -> int:
        """Fetch the workload, import the runtime; returns this process's id."""
        del plugins  # resolved by Ray on the way in: its modules are imported now, not during a timing
        fetch(box)
        node_machine()
        return os.getpid()

    def settle(self, quiet_wait_s: float) -> SessionStart:
        """Just before the session's first timing: wait up to ``quiet_wait_s`` for the node to go quiet (what a
        search leaves behind: search/runtime/node_load.py)."""
        return SessionStart(os.getpid(), wait_until_quiet(quiet_wait_s))

    def remeasure(self, box: WorkloadRef, plugins: TrialPlugins, request: TrialRequest) -> TrialResult:
        return remeasure_trial(fetch(box), plugins, request)


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


def _build_and_measure(workload: Workload, plugins: TrialPlugins, evaluators: list[Evaluator],
                       request: TrialRequest) -> TrialResult:
    """Builds the candidate unless the request carries its model, then runs ``evaluators`` on it."""
    torch.set_num_threads(1)  # training shares the node with other trials; one core each
    started = time.perf_counter()
    result = TrialResult(node=node_name(), machine=node_machine(), model_bytes=request.model_bytes)
    seed, plan = request.seed, request.plan
    try:
        target = Target.from_config(request.target)
        cand = request.candidate
        cand.check_declared(declared_fields(plugins.knobs))
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
        result.error, result.not_applicable = f"not applicable: {exc}", True
    except StopRecovery as exc:
        result.error, result.stopped = str(exc), True
    except Exception as exc:  # a failing trial is recorded with its reason; the search goes on
        last = traceback.extract_tb(exc.__traceback__)[-1]
        result.error = f"{type(exc).__name__}: {exc} (at {last.filename.rsplit('/', 1)[-1]}:{last.lineno})"
    result.duration_s = time.perf_counter() - started
    return result
