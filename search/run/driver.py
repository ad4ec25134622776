"""The search driver: Optuna ask/tell in this process, trials built and measured by Ray workers."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution
import ray
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from evaluators import Evaluator, objectives
from evaluators.energy import choose_meter
from search import study as studies
from search.run.cluster import check_reachable, cluster_address, start_ray, stop_ray, task_result
from search.config import Settings, target_configs, to_container
from search.errors import ConfigError
from search.files import write_text
from search.run.interrupt import StopRequest
from search.run.retime import retime_front
from search.run.state import Search, say, update_run_folder
from search.results.render import render
from search.results.progress import Progress
from search.runtime.target import Target, widest
from search.transforms.export import INPUT_NAME, OUTPUT_NAME
from search.run.worker import run_trial
from search.workloads import Workload, check_exportable, check_workload
from search.workloads._base import predict_classes
from spaces import TargetChoice, baseline_params, cover_params, space, suggest_candidate

RESUME_CHECKED = ("workload", "space", "target", "targets", "evaluators", "batch_size")
# trials.csv and pareto.csv are views of study.db (the durable record, told after every trial):
# rewritten at most this often during a run, and always at its end or interruption.
TABLES_EVERY_S = 1.0
# A study across targets skips candidates a target cannot run; past this many per trial asked
# for, the targets have too little in common for the search to get anywhere.
MAX_SKIPPED_PER_TRIAL = 10


class Every:
    """True at most once per ``seconds`` (and on the first call)."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.last = seconds, float("-inf")

    def ready(self) -> bool:
        now = time.monotonic()
        if now - self.last < self.seconds:
            return False
        self.last = now
        return True


def _instantiate(node: Any, what: str) -> Any:
    try:
        return instantiate(node)
    except ConfigError:
        raise
    except Exception as exc:  # a broken factory or a bad argument: one line naming it
        cause = exc.__cause__ or exc
        raise ConfigError(f"{what} ({node.get('_target_', '?')}): {type(cause).__name__}: {cause}") from None


def prepare(cfg: DictConfig) -> Search:
    settings = Settings.from_config(cfg)
    run_dir = settings.results_dir / (settings.run or datetime.now().strftime("%Y%m%d-%H%M%S"))
    configs = [_with_engine_cache(c, run_dir) for c in target_configs(cfg)]
    targets = [Target.from_config(c) for c in configs]
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise ConfigError(f"targets must have different names; got {names}")
    for target in targets:
        target.check_available()
    address = cluster_address(to_container(cfg.cluster))
    if address:
        check_reachable(address)
    knobs = [_instantiate(node, f"knob {name}") for name, node in cfg.space.knobs.items()]
    if len(targets) > 1:
        knobs.insert(0, TargetChoice(targets))
    for knob in knobs:
        knob.narrow(widest(targets))
    evaluators = [_instantiate(node, f"evaluator {name}") for name, node in cfg.evaluators.items()]
    config = to_container(cfg)
    config["target"], config["target_configs"] = configs[0], dict(zip(names, configs, strict=True))
    return Search(settings, config, targets[0], knobs, evaluators, objectives(evaluators), run_dir,
                  meter_note=_meter_note(evaluators, targets, address), targets=dict(zip(names, targets, strict=True)))


def _with_engine_cache(target: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """TensorRT builds an engine per model and shape (seconds to minutes): cache them in the run folder."""
    if target.get("provider") != "TensorrtExecutionProvider":
        return target
    cache = str((run_dir / "trt-engines").resolve())
    options = {"trt_engine_cache_path": cache, **(target.get("provider_options") or {})}
    return {**target, "provider_options": options}


def _meter_note(evaluators: list[Evaluator], targets: list[Target], address: str | None) -> str:
    """Decided here for a local run, so a meter the machine lacks is refused before any trial."""
    if not any(e.name == "energy" for e in evaluators):
        return ""
    if address:
        return "energy: each worker uses what its machine exposes (nvml, rapl or the estimate); every row names it"
    notes = {t.name: choose_meter(t).describe() for t in targets}
    if len(set(notes.values())) == 1:
        return f"energy: {next(iter(notes.values()))}"
    return "\n".join(f"energy on {name}: {note}" for name, note in notes.items())


TORCH_ONLY_KNOBS = ("prune_rate", "distillation")


def _leave_out_torch_knobs(search: Search, workload: Workload) -> None:
    """A bare ONNX model has no torch module to prune or distill: those knobs go, said once here."""
    dropped = [k.name for k in search.knobs if k.name in TORCH_ONLY_KNOBS]
    search.knobs = [k for k in search.knobs if k.name not in TORCH_ONLY_KNOBS]
    if dropped:
        say(f"workload {workload.name} is an ONNX model: {' and '.join(dropped)} are not searched (they need a "
             "torch module); quantization and parallelism are")


def _open_run_dir(search: Search) -> bool:
    """Create the run folder or check a resumed one; True when resuming."""
    config_path = search.run_dir / "config.yaml"
    resuming = config_path.exists()
    if resuming and not search.settings.resume_force:
        stored = OmegaConf.to_container(OmegaConf.load(config_path))
        changed = [k for k in RESUME_CHECKED if stored.get(k) != search.config.get(k)]
        if changed:
            raise ConfigError(f"run {search.run_dir} exists with a different {', '.join(changed)}; "
                              "use another run=NAME, or resume_force=true to resume anyway")
    try:
        search.run_dir.mkdir(parents=True, exist_ok=True)
        write_text(config_path, OmegaConf.to_yaml(search.config))
    except OSError as exc:
        raise ConfigError(f"cannot write results folder {search.run_dir}: {exc.strerror}") from None
    return resuming


def _workload_info(workload: Workload) -> dict[str, Any]:
    classes = predict_classes(workload)
    return {"name": workload.name, "input_name": INPUT_NAME, "input_shape": list(workload.input_shape),
            "output_name": OUTPUT_NAME, "preprocessing": workload.preprocessing,
            "output_meaning": f"logits over {classes} classes; argmax is the predicted class"}


class Dispatcher:
    """Keeps up to ``workers`` trials in flight and hands back finished, failed or timed-out ones."""

    def __init__(self, search: Search, workload: Workload, task: Callable[..., dict] = run_trial) -> None:
        self.search = search
        # max_retries re-runs a trial whose worker process died; a Python exception is not retried
        # (run_trial returns it as the trial's error instead).
        # Each target's trials reserve its own Ray resources (a GPU target's num_gpus).
        self.tasks = {name: ray.remote(task).options(num_cpus=t.num_cpus, num_gpus=t.num_gpus,
                                                     max_retries=search.settings.max_retries)
                      for name, t in search.targets.items()}
        self.workload_ref = ray.put(workload)  # sent once; workers on other nodes fetch it from the object store
        self.evaluators_ref = ray.put(search.evaluators)
        self.in_flight: dict[ray.ObjectRef, tuple[optuna.Trial, float]] = {}  # ref -> (trial, start time)
        self.space = space(search.knobs)
        self.skipped = 0

    def submit(self, study: optuna.Study) -> bool:
        """Ask for a candidate and dispatch it; False when its target cannot run it (kept, as PRUNED)."""
        trial = study.ask(fixed_distributions=self.space)
        candidate = suggest_candidate(self.search.knobs, trial, self.search.runtime.target, self.search.settings.batch_size)
        trial.set_user_attr("candidate", candidate.to_dict())
        target = self.search.targets[candidate.target]
        reason = target.refuses(candidate)
        if reason:  # re-asked at once, moved to what the target runs; the draw is kept as PRUNED
            moved = _within_space(target.project(trial.params), self.space)
            if moved != trial.params:  # the same params would be refused again: leave it to the sampler
                study.enqueue_trial(moved)
                reason += "; re-asked with the nearest settings it runs"
            studies.skip(study, trial, reason)
            self.skipped += 1
            return False
        # One seed for the run, not one per trial: the same settings build the same model, so
        # workers' stage caches serve repeated (prune, distill) prefixes and results reproduce.
        ref = self.tasks[candidate.target].remote(self.workload_ref, self.evaluators_ref,
                                                  self.search.target_config(candidate.target), candidate.to_dict(),
                                                  self.search.settings.seed)
        self.in_flight[ref] = (trial, time.monotonic())
        return True

    def next_done(self, timeout_s: float) -> tuple[optuna.Trial, dict[str, Any]] | None:
        """A finished (or timed-out) trial and its result, or None if none within ``timeout_s``."""
        overdue = self._overdue()
        if overdue is not None:
            ray.cancel(overdue, force=True)  # kills the worker: a stuck native call ignores a polite cancel
            limit = self.search.settings.trial_timeout_s
            return self._pop(overdue), {"error": f"timed out: ran past trial_timeout_s={limit:g} and was cancelled"}
        ready, _ = ray.wait(list(self.in_flight), num_returns=1, timeout=timeout_s)
        if not ready:
            return None
        return self._pop(ready[0]), task_result(ready[0])

    def _overdue(self) -> ray.ObjectRef | None:
        limit = self.search.settings.trial_timeout_s
        if limit is None:
            return None
        now = time.monotonic()
        return next((ref for ref, (_, start) in self.in_flight.items() if now - start > limit), None)

    def _pop(self, ref: ray.ObjectRef) -> optuna.Trial:
        return self.in_flight.pop(ref)[0]


def _runnable(cover: list[dict[str, Any]], targets: dict[str, Target]) -> list[dict[str, Any]]:
    """Cover trials across targets: each mode on a target that runs it (the round robin may pair
    a pipeline with a one-core target), and every target in at least one."""
    if len(targets) < 2:
        return cover
    placed = []
    for fixed in cover:
        runs = [name for name, t in targets.items() if t.project(fixed) == fixed]  # nothing to move: it runs there
        placed.append({**fixed, "target": fixed["target"] if fixed["target"] in runs or not runs else runs[0]})
    return placed + [{"target": name} for name in targets if name not in {f["target"] for f in placed}]


def _within_space(params: dict[str, Any], distributions: dict[str, Any]) -> dict[str, Any]:
    """The params the space holds; one it does not (the target's nearest precision was not
    declared) is left to the sampler, and a refused draw again is re-asked again."""
    def holds(name: str, value: Any) -> bool:
        dist = distributions.get(name)
        if isinstance(dist, CategoricalDistribution):
            return value in dist.choices
        return dist is not None and dist.low <= value <= dist.high

    return {name: value for name, value in params.items() if holds(name, value)}


def run_search(cfg: DictConfig) -> Path:
    search = prepare(cfg)
    # Everything that can refuse the run is checked before the run folder is touched.
    workload = check_workload(_instantiate(cfg.workload, "workload factory"), cfg.workload.get("_target_", "?"))
    check_exportable(workload)
    if workload.is_onnx:
        _leave_out_torch_knobs(search, workload)
    search.config["workload_info"] = _workload_info(workload)
    sampler = _instantiate(cfg.sampler, "sampler")
    resuming = _open_run_dir(search)
    # only what fits in the trials asked for: an enqueued trial never asked would stay WAITING
    cover = _runnable(cover_params(search.knobs), search.targets) if search.settings.cover else []
    cover = cover[:search.settings.trials - 1]
    study = studies.open_study(search.run_dir, search.objectives, sampler, baseline_params(search.knobs), cover)
    search.finals.update(studies.final_figures(study))
    rerun = studies.requeue_stale(study)
    done, _ = studies.finished(study.get_trials(deepcopy=False))
    say(f"{'resuming' if resuming else 'starting'} run {search.run_dir}: {done}/{search.settings.trials} trials done"
         + (f", {rerun} interrupted trial(s) re-queued" if rerun else "")
         + f"; target {', '.join(search.targets)}; objectives {', '.join(f'{m} ({d[:3]})' for m, d in search.objectives)}")
    if search.meter_note:
        say(search.meter_note)
    progress = Progress(search.settings.trials, already_done=done)
    with StopRequest() as stop:
        try:
            start_ray(search.config["cluster"], search.settings.workers, list(search.targets.values()))
            if not stop.requested:
                dispatcher = Dispatcher(search, workload)
                _loop(search, study, dispatcher, progress, stop)
                progress.finish()
                if search.settings.remeasure and not stop.requested:
                    retime_front(search, study, dispatcher, stop)
        except KeyboardInterrupt:
            stop.requested = True
        finally:
            stop_ray()
    progress.finish()
    update_run_folder(search, study.get_trials(deepcopy=False), {}, tables=False)  # models; render writes tables
    render(search.run_dir, study, search.objectives, search.intervals)  # every table and plot, from study.db
    if stop.requested:
        say(f"interrupted: finished trials are saved; resume with the same command and run={search.run_dir.name}")
        raise KeyboardInterrupt
    return search.run_dir


def _loop(search: Search, study: optuna.Study, dispatcher: Dispatcher, progress: Progress, stop: StopRequest) -> None:
    total, workers = search.settings.trials, search.settings.workers
    tables_due = Every(TABLES_EVERY_S)
    done, _ = studies.finished(study.get_trials(deepcopy=False))
    while not stop.requested:
        while len(dispatcher.in_flight) < workers and done + len(dispatcher.in_flight) < total:
            if not dispatcher.submit(study) and dispatcher.skipped > MAX_SKIPPED_PER_TRIAL * total:
                raise ConfigError(f"{dispatcher.skipped} drawn candidates could not run on their target; the targets "
                                  "share too little of the space (see the error column of trials.csv)")
        if not dispatcher.in_flight:
            return
        finished = dispatcher.next_done(timeout_s=0.5)
        if finished is None:
            continue
        trial, result = finished
        completed = studies.record(study, trial, result, search.objectives)
        trials = study.get_trials(deepcopy=False)  # one read of the storage per finished trial
        done, failed = studies.finished(trials)
        new_models = {trial.number: result["model_bytes"]} if completed else {}
        _, front = update_run_folder(search, trials, new_models, tables=tables_due.ready())
        progress.update(front, done, failed)


__all__ = ["run_search", "prepare"]
