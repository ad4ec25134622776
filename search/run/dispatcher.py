"""The dispatcher: asks the study for candidates, keeps up to ``workers`` of them in flight on Ray, and
hands back finished, failed or timed-out ones. The re-timing phase submits through it too."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import optuna
import ray
from optuna.distributions import CategoricalDistribution

from search.core import attributes
from search.core.messages import TrialRequest, TrialResult
from search.strategy import study as studies
from search.run.cluster import task_result
from search.trial.shared_workload import WorkloadRef, fetching_workload
from search.run.shipping import ship_user_code
from search.run.store import start_service, workload_fingerprint
from search.run.state import Search, say
from search.trial.worker import SessionWorker, TrialPlugins, run_trial
from search.core.candidate import Candidate
from search.runtime.target import Target
from search.workloads import Workload
from spaces import Knob, space, suggest_candidate
from spaces import projected, refusal


class Dispatcher:
    """Keeps up to ``workers`` trials in flight and hands back finished, failed or timed-out ones."""

    def __init__(self, search: Search, workload: Workload, task: Callable[..., TrialResult] = run_trial) -> None:
        self.search = search
        # max_retries re-runs a trial whose worker process died; a Python exception is not retried
        # (run_trial returns it as the trial's error instead).
        # Each target's trials reserve its own Ray resources (a GPU target's num_gpus).
        # Each worker process keeps the workload between trials (search/trial/shared_workload.py).
        self.session_process = ray.remote(SessionWorker)  # one actor class, exported once, for every session
        self.tasks = {name: ray.remote(fetching_workload(task)).options(
                          num_cpus=t.num_cpus, num_gpus=t.num_gpus, max_retries=search.settings.max_retries)
                      for name, t in search.targets.items()}
        shipped = ship_user_code()  # the user's modules go by value: workers and other nodes need not import them
        if shipped:
            say(f"your code goes to the workers with the trials (pickled by value): {', '.join(shipped)}")
        # Artifacts are addressed by the weights and data too: a model changed under the same name on resume
        # builds afresh.
        workload = dataclasses.replace(workload, key=f"{workload.key}-{workload_fingerprint(workload)}")
        # Sent once; workers on other nodes fetch it from the object store, and each worker process keeps it.
        self.workload_ref = WorkloadRef(ray.put(workload))
        self.store, store_name = start_service(search.run_dir)  # the handle kept here keeps the actor alive
        self.plugins_ref = ray.put(TrialPlugins(search.knobs, search.evaluators, store_name))
        self.in_flight: dict[ray.ObjectRef, tuple[optuna.Trial, float]] = {}  # ref -> (trial, start time)
        self.space = space(search.knobs)
        self.skipped = 0
        self.measured: dict[Candidate, int] = {}  # candidate -> its trial: completed, stopped at a rung, in flight
        self.repeats = 0  # draws in a row that repeated a measured trial

    def remember(self, trials: list[optuna.trial.FrozenTrial]) -> None:
        """Know the candidates a resumed study measured already, so that a draw of one is re-asked."""
        for trial in trials:
            if trial.state == optuna.trial.TrialState.COMPLETE or attributes.stopped_at_rung(trial):
                found = attributes.candidate_of(trial)
                if found:
                    self.measured.setdefault(Candidate.from_dict(found), trial.number)

    def submit(self, study: optuna.Study) -> bool:
        """Ask for a candidate and dispatch it; False when its target cannot run it (kept, as PRUNED)."""
        with studies.batched(study):  # the trial, its params and its candidate: one commit to study.db
            return self._submit(study)

    def _submit(self, study: optuna.Study) -> bool:
        trial = study.ask(fixed_distributions=self.space)
        candidate = suggest_candidate(self.search.knobs, trial, self.search.target, self.search.settings.batch_size)
        attributes.write_candidate(trial, candidate)
        target = self.search.targets[candidate.target]
        reason = refusal(self.search.knobs, candidate.values, target)
        if reason:  # re-asked at once, moved to what the target runs; the draw is kept as PRUNED
            moved = within_space(projected(self.search.knobs, trial.params, target), self.space)
            if moved != trial.params:  # the same params would be refused again: leave it to the sampler
                study.enqueue_trial(moved)
                reason += "; re-asked with the nearest settings it runs"
            else:
                reason += "; re-asked (the sampler draws again)"
            studies.skip(study, trial, reason)
            self.skipped += 1
            return False
        twin = self.measured.get(candidate)
        if twin is not None:  # the same build under the same runtime: its figures would say nothing new
            studies.skip(study, trial, f"repeats trial {twin} (the same build and runtime settings); re-asked")
            self.repeats += 1
            return False
        self.measured[candidate], self.repeats = trial.number, 0
        # One seed for the run, not one per trial: the same settings build the same model, so the
        # run's artifact store serves repeated builds and results reproduce.
        request = TrialRequest(candidate, self.search.target_config(candidate.target), self.search.settings.seed,
                               self.search.rung_plan())
        ref = self.tasks[candidate.target].remote(self.workload_ref, self.plugins_ref, request)
        self.in_flight[ref] = (trial, time.monotonic())
        return True

    def session_worker(self, target: str, share: int) -> tuple[ray.actor.ActorHandle, ray.ObjectRef]:
        """A fresh process for one re-timing session on ``target``, holding 1 / ``share`` of what a trial there
        reserves, and the reference that resolves (to its process id) once it is ready to time: started, imports
        done and workload fetched (search/trial/worker.py SessionWorker)."""
        spec = self.search.targets[target]
        worker = self.session_process.options(num_cpus=share_of(spec.num_cpus, share),
                                              num_gpus=share_of(spec.num_gpus, share)).remote()
        return worker, worker.ready.remote(self.workload_ref, self.plugins_ref)

    def remeasure(self, worker: ray.actor.ActorHandle, candidate: Candidate, model_bytes: bytes) -> ray.ObjectRef:
        """Re-time a finished trial's model alone on its node, in ``worker`` (a session's process); rebuilt
        first when ``model_bytes`` is empty."""
        request = TrialRequest(candidate, self.search.target_config(candidate.target), self.search.settings.seed,
                               model_bytes=model_bytes)
        return worker.remeasure.remote(self.workload_ref, self.plugins_ref, request)

    def next_done(self, timeout_s: float) -> tuple[optuna.Trial, TrialResult] | None:
        """A finished (or timed-out) trial and its result, or None if none within ``timeout_s``."""
        overdue = self._overdue()
        if overdue is not None:
            ray.cancel(overdue, force=True)  # kills the worker: a stuck native call ignores a polite cancel
            limit = self.search.settings.trial_timeout_s
            return self._ended(overdue, TrialResult.failed(f"timed out: ran past trial_timeout_s={limit:g} and was "
                                                           "cancelled"))
        ready, _ = ray.wait(list(self.in_flight), num_returns=1, timeout=timeout_s)
        if not ready:
            return None
        return self._ended(ready[0], task_result(ready[0]))

    def _ended(self, ref: ray.ObjectRef, result: TrialResult) -> tuple[optuna.Trial, TrialResult]:
        """The trial of a task that ended, and its result."""
        self.release_claims(ref, result)
        trial = self.in_flight.pop(ref)[0]
        if result.error and not result.stopped:  # it measured nothing: a later draw of it may run
            self.measured = {c: n for c, n in self.measured.items() if n != trial.number}
        self.skipped += result.not_applicable  # a draw that could not run, as one refused before it was sent
        return trial, result

    def release_claims(self, ref: ray.ObjectRef, result: TrialResult) -> None:
        """A task that ended in error may have died holding store claims (a killed or cancelled worker
        cannot release them itself): they are released, so a trial waiting on its build builds it."""
        if result.error:
            self.store.release.remote(ref.task_id().hex())

    def _overdue(self) -> ray.ObjectRef | None:
        limit = self.search.settings.trial_timeout_s
        if limit is None:
            return None
        now = time.monotonic()
        return next((ref for ref, (_, start) in self.in_flight.items() if now - start > limit), None)


def runnable_cover(cover: list[dict[str, Any]], targets: dict[str, Target], knobs: list[Knob]) -> list[dict[str, Any]]:
    """Cover trials across targets: each mode on a target that runs it (the round robin may pair
    a pipeline with a one-core target), and every target in at least one. The knobs decide what
    a target runs: the params run there when projecting them onto it moves nothing."""
    if len(targets) < 2:
        return cover
    placed = []
    for fixed in cover:
        runs = [name for name, t in targets.items() if projected(knobs, dict(fixed), t) == fixed]
        placed.append({**fixed, "target": fixed["target"] if fixed["target"] in runs or not runs else runs[0]})
    return placed + [{"target": name} for name in targets if name not in {f["target"] for f in placed}]


def share_of(amount: float, share: int) -> float:
    """1 / ``share`` of a Ray resource amount, as Ray takes it: a whole number above 1, four decimals below."""
    part = amount / share
    if part >= 1:
        return float(math.floor(part))
    return max(math.floor(part * 1e4) / 1e4, 1e-4) if amount > 0 else 0.0


def within_space(params: dict[str, Any], distributions: dict[str, Any]) -> dict[str, Any]:
    """The params the space holds; one it does not (the target's nearest precision was not
    declared) is left to the sampler, and a refused draw again is re-asked again."""
    def holds(name: str, value: Any) -> bool:
        dist = distributions.get(name)
        if isinstance(dist, CategoricalDistribution):
            return value in dist.choices
        return dist is not None and dist.low <= value <= dist.high

    return {name: value for name, value in params.items() if holds(name, value)}
