"""The search driver: Optuna ask/tell in this process, trials built and measured by Ray workers.

It composes the run from config and loops; it names no plugin: knobs, evaluators and targets
describe themselves (spaces/, evaluators/, conf/target/).
"""

from __future__ import annotations

import shutil
import time
from datetime import datetime
from pathlib import Path

import optuna
from omegaconf import DictConfig, OmegaConf

from search.bundle.sample import largest_batch, write_run_sample
from search.config import (Settings, constrained, instantiate_plugin, load_evaluators, load_knobs, make_schema,
                           target_configs, to_container)
from search.core import attributes
from search.core.constraints import parse_constraints
from search.core.errors import ConfigError
from search.core.files import write_text
from search.results.progress import Progress
from search.results.render import render
from search.run.cluster import check_reachable, cluster_address, start_ray, stop_ray
from search.run.dispatcher import Dispatcher, runnable_cover
from search.run.failures import SystematicFailure, take_error
from search.run.failures import verdict as fail_fast_verdict
from search.run.interrupt import StopRequest
from search.run.lock import RunLock
from search.run.manifest import carry_forward, make_manifest
from search.run.retime import retime_front
from search.run.rungs import recovery_history
from search.run.state import (Search, load_machines, note_machine, say, start_growing_fronts, take_finished,
                              trial_constraints, update_run_folder)
from search.run.stopping import StopRules
from search.run.tracking import TrackingSink, check_tracking, open_tracking
from search.run.warm_start import warm_params
from search.runtime.target import Target, in_run_folder
from search.strategy import study as studies
from search.workloads import Workload, check_exportable, check_workload, describe
from search.workloads.quiet import quiet_hugging_face
from spaces import TargetChoice, baseline_params, cover_params, runtime_knobs

RESUME_CHECKED = ("workload", "space", "target", "targets", "evaluators", "batch_size")
# trials.csv and pareto.csv are views of study.db (the durable record, told after every trial):
# rewritten at most this often during a run, and always at its end or interruption.
TABLES_EVERY_S = 1.0
# Free space a run folder's disk must have at the start: study.db, the tables and the front's models
# of a long run of a small model take tens of MB.
MIN_FREE_BYTES = 64 * 2**20
# A study across targets skips candidates a target cannot run; past this many per trial asked
# for, the targets have too little in common for the search to get anywhere.
MAX_SKIPPED_PER_TRIAL = 10
# A draw that repeats a measured trial is re-asked; this many in a row, and the sampler has nothing new
# left to propose in this space (a small one, nearly covered): the search ends there, said so.
MAX_REPEATS_IN_A_ROW = 25


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


def prepare(cfg: DictConfig) -> Search:
    settings = Settings.from_config(cfg)
    parse_constraints(cfg.get("constraints"))  # the columns they name are checked once the workload is known
    run_dir = settings.results_dir / (settings.run or datetime.now().strftime("%Y%m%d-%H%M%S"))
    configs = [in_run_folder(c, run_dir) for c in target_configs(cfg)]
    targets = [Target.from_config(c) for c in configs]
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise ConfigError(f"targets must have different names; got {names}")
    for target in targets:
        target.check_available()
    address = cluster_address(to_container(cfg.cluster))
    if address:
        check_reachable(address)
    knobs = load_knobs(cfg.space.knobs)
    if len(targets) > 1:
        knobs.insert(0, TargetChoice(targets))
    for knob in knobs:
        knob.narrow(targets)
    evaluators = load_evaluators(cfg.evaluators)
    config = to_container(cfg)
    config["target"], config["target_configs"] = configs[0], dict(zip(names, configs, strict=True))
    notes = [n for n in (e.start_note(targets, on_cluster=bool(address)) for e in evaluators) if n]
    return Search(settings, config, targets[0], knobs, evaluators, make_schema(knobs, evaluators), run_dir,
                  notes=notes, targets=dict(zip(names, targets, strict=True)))


def _leave_out_torch_knobs(search: Search, workload: Workload) -> None:
    """A bare ONNX model has no torch module: knobs that need one go, said once here."""
    dropped = [k.name for k in search.knobs if k.needs_torch]
    search.knobs = [k for k in search.knobs if not k.needs_torch]
    if dropped:
        say(f"workload {workload.name} is an ONNX model: {' and '.join(dropped)} are not searched (they need a "
            "torch module); the other knobs are")


def check_free_space(folder: Path) -> None:
    """Refuse a results folder on a disk too full for a run, before anything there is written:
    a run that fills the disk half way would end in a database error, not a result."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    usage = shutil.disk_usage(existing)
    free = usage.free
    if usage.total and free < MIN_FREE_BYTES:  # total 0: a pseudo file system (/proc); writing it fails, said so
        raise ConfigError(f"results folder {folder}: only {free // 1024} KiB free on its disk; a run needs at least "
                          f"{MIN_FREE_BYTES // 2**20} MiB (study.db, tables, models): free some space or set "
                          "results_dir")


def clear_temporaries(run_dir: Path) -> None:
    """Remove what a killed driver's atomic writes left half done: only their temporary files
    (every file a run keeps is renamed into place whole, so none of those is ever half-written)."""
    for folder in (run_dir, run_dir / "models"):
        for leftover in folder.glob(".*.tmp"):
            leftover.unlink(missing_ok=True)


def _open_run_dir(search: Search) -> bool:
    """Create the run folder or check a resumed one; True when resuming."""
    clear_temporaries(search.run_dir)
    config_path = search.run_dir / "config.yaml"
    studies.check_existing(search.run_dir, search.objectives)
    resuming = config_path.exists()
    stored = OmegaConf.to_container(OmegaConf.load(config_path)) if resuming else {}
    if resuming and not search.settings.resume_force:
        changed = [k for k in RESUME_CHECKED if stored.get(k) != search.config.get(k)]
        if changed:
            raise ConfigError(f"run {search.run_dir} exists with a different {', '.join(changed)}; "
                              "use another run=NAME, or resume_force=true to resume anyway")
    manifests, differ = carry_forward(stored, make_manifest(search.settings.seed))
    search.config.update(manifests)
    if differ:
        say(f"note: since this run's last session {'; '.join(differ[:6])}"
            + (f" and {len(differ) - 6} more" if len(differ) > 6 else "")
            + ": figures from before and after may differ (config.yaml keeps both manifests)")
    try:
        search.run_dir.mkdir(parents=True, exist_ok=True)
        write_text(config_path, OmegaConf.to_yaml(search.config))
        load_machines(search)
    except OSError as exc:
        raise ConfigError(f"cannot write results folder {search.run_dir}: {exc.strerror}") from None
    return resuming


def adopt_workload(search: Search, workload: Workload) -> None:
    """Fit the run to its workload: the task metric's column and direction, the knobs a bare ONNX
    model leaves out; the schema and objectives are made again from them."""
    # a knob left out for this model keeps its columns (unset), as the contract lists them
    configured = list(search.knobs)
    if workload.is_onnx:
        _leave_out_torch_knobs(search, workload)
    search.config["workload_info"] = describe(workload)
    for plugin in [*configured, *search.evaluators]:
        plugin.for_workload(search.config["workload_info"])
    search.schema = constrained(make_schema(configured, search.evaluators), search.config)


def make_sampler(cfg: DictConfig, search: Search) -> optuna.samplers.BaseSampler:
    """The config's sampler; one that re-runs built models (search/strategy/refine.py) is told which params only
    change how a model runs: those of the knobs that build nothing."""
    sampler = instantiate_plugin(cfg.sampler, "sampler")
    if hasattr(sampler, "set_runtime_params"):
        runtime = runtime_knobs(search.knobs)
        sampler.set_runtime_params([p for k in runtime for p in k.distributions()],
                                   [f.name for k in runtime for f in k.fields])
    return sampler


def run_search(cfg: DictConfig, workload: Workload | None = None) -> Path:
    """Run the search of ``cfg``; ``workload`` given (from Python) replaces the config's factory."""
    search = prepare(cfg)
    # Everything that can refuse the run is checked before the run folder is touched.
    check_tracking(search.config)
    if workload is None:
        with quiet_hugging_face(cfg.workload.get("_target_")):  # from_pretrained's bars stay out of the run's log
            workload = instantiate_plugin(cfg.workload, "workload factory", "workload")
    workload = check_workload(workload, cfg.workload.get("_target_", "?") if "workload" in cfg else "optimize()",
                              keep_reference=any(e.needs_reference for e in search.evaluators))
    check_exportable(workload)
    adopt_workload(search, workload)
    sampler = make_sampler(cfg, search)
    check_free_space(search.run_dir)
    with RunLock(search.run_dir) as lock:  # one driver per run folder, from before it is written until the end
        return _run(search, workload, sampler, lock)


def _run(search: Search, workload: Workload, sampler: optuna.samplers.BaseSampler, lock: RunLock) -> Path:
    resuming = _open_run_dir(search)
    lock.announce()
    if not workload.is_onnx:  # after every refusal: what the knobs learn here costs time, and they may say it
        for knob in search.knobs:
            knob.for_model(workload)
    write_run_sample(search.run_dir, workload.test, largest_batch(search.knobs))  # for the bundles pick writes
    # only what fits in the trials asked for: an enqueued trial never asked would stay WAITING
    cover = runnable_cover(cover_params(search.knobs), search.targets, search.knobs) if search.settings.cover else []
    cover = cover[:search.settings.trials - 1]
    warm = _warm_start(search, resuming, room=search.settings.trials - 1 - len(cover))
    study = studies.open_study(search.run_dir, search.objectives, sampler, baseline_params(search.knobs), cover, warm)
    search.finals.update(attributes.finals_of(study))
    rerun = studies.requeue_stale(study)
    trials = study.get_trials(deepcopy=False)
    done, _ = studies.finished(trials)
    search.rungs = recovery_history(search.settings.recovery_rungs, workload, search.objectives,
                                    [attributes.outcome_of(t) for t in trials
                                     if t.state == optuna.trial.TrialState.COMPLETE])
    say(f"{'resuming' if resuming else 'starting'} run {search.run_dir}: {done}/{search.settings.trials} trials done"
        + (f", {rerun} interrupted trial(s) re-queued" if rerun else "")
        + f"; target {', '.join(search.targets)}; objectives "
        + ", ".join(f"{m} ({d[:3]})" for m, d in search.objectives))
    for note in search.notes:
        say(note)
    tracking = open_tracking(search, workload.name)  # None: off (conf/search.yaml tracking.uri)
    progress = Progress(search.settings.trials, already_done=done, objectives=search.objectives,
                        time_budget_s=search.settings.time_budget_s)
    failure: SystematicFailure | None = None
    with StopRequest() as stop:
        try:
            start_ray(search.config["cluster"], search.settings.workers, list(search.targets.values()))
            if not stop.requested:
                dispatcher = Dispatcher(search, workload)
                ended_early = search_loop(search, study, dispatcher, progress, stop, tracking)
                attributes.write_stop(study, ended_early)
                progress.finish()
                if search.settings.remeasure and not stop.requested:
                    retime_front(search, study, dispatcher, stop)
        except KeyboardInterrupt:
            stop.requested = True
        except SystematicFailure as exc:  # the tables are written below, then the run ends with the reason
            failure = exc
        finally:
            stop_ray()
    progress.finish()
    _, front = update_run_folder(search, study.get_trials(deepcopy=False), {}, tables=False)  # models; render: tables
    render(search.run_dir, study, search.schema)  # every table and plot, from study.db
    if tracking is not None:  # after render: the tables and models are final, the re-timed figures too
        tracking.finish(search, study.get_trials(deepcopy=False), set(front["trial"]),
                        "FAILED" if failure else "KILLED" if stop.requested else "FINISHED")
    if failure is not None:
        raise failure
    if stop.requested:
        say(f"interrupted: finished trials are saved; resume with the same command and run={search.run_dir.name}")
        raise KeyboardInterrupt
    return search.run_dir


def search_loop(search: Search, study: optuna.Study, dispatcher: Dispatcher, progress: Progress,
                stop: StopRequest, tracking: TrackingSink | None = None) -> str:
    """Runs trials until ``trials`` have finished; returns "" then, or why it ended earlier (a stop rule)."""
    total, workers = search.settings.trials, search.settings.workers
    tables_due = Every(TABLES_EVERY_S)
    trials = study.get_trials(deepcopy=False)
    done, failed = studies.finished(trials)
    start_growing_fronts(search, trials)
    rules = StopRules(search.settings.time_budget_s, search.settings.stall_trials, [d for _, d in search.objectives])
    rules.seed([t.values for t in trials if t.state == optuna.trial.TrialState.COMPLETE and t.values])
    dispatcher.remember(trials)
    errors: list[str] = []  # of the trials this driver finished, in order ("" completed): what fail-fast reads
    ending = ""
    while not stop.requested:
        ending = ending or _ending(rules, len(dispatcher.in_flight))
        while not ending and len(dispatcher.in_flight) < workers and done + len(dispatcher.in_flight) < total:
            if dispatcher.submit(study):
                continue
            if dispatcher.skipped > MAX_SKIPPED_PER_TRIAL * total:
                raise ConfigError(f"{dispatcher.skipped} drawn candidates could not run (on their target, or on this "
                                  "model); the space holds too little that runs (see the error column of trials.csv)")
            if dispatcher.repeats >= MAX_REPEATS_IN_A_ROW:
                ending = _ending_because(f"the space looks exhausted: the last {dispatcher.repeats} draws all "
                                         "repeated measured trials", len(dispatcher.in_flight))
        if not dispatcher.in_flight:
            return ending
        finished = dispatcher.next_done(timeout_s=0.5)
        if finished is None:
            continue
        trial, result = finished
        take_error(search.run_dir, trial.number, result)
        note_machine(search, result)
        error, frozen = studies.record(study, trial, result, search.objectives,
                                       trial_constraints(search, trial, result))
        if not studies.tried(frozen):  # a setting the model cannot take: PRUNED with the reason, and asked again
            take_finished(search, frozen, None, tables_due.ready(), lambda: study.get_trials(deepcopy=False))
            continue
        done, failed = done + 1, failed + bool(error)  # record leaves it COMPLETE or FAIL: no re-read of every trial
        rules.finished(frozen.values if frozen.state == optuna.trial.TrialState.COMPLETE else None)
        if search.rungs is not None and frozen.state == optuna.trial.TrialState.COMPLETE:
            search.rungs.add(result.recovery, result.metrics.get(search.rungs.quality))
        front = take_finished(search, frozen, None if error else result.model_bytes,
                              tables_due.ready(), lambda: study.get_trials(deepcopy=False))
        if tracking is not None:  # the row take_finished made: MLflow shows what trials.csv says
            tracking.log_trial(search.rows[frozen.number][1])
        progress.update(front, done, failed, search.growing[""].feasible())
        errors.append(error)
        verdict = fail_fast_verdict(search.settings.fail_fast, errors)
        if verdict:
            progress.finish()
            raise SystematicFailure(f"stopped after {len(errors)} trial(s): {verdict}; finished trials are saved in "
                                    f"{search.run_dir}: fix the cause, then run the same command to resume")


def _warm_start(search: Search, resuming: bool, room: int) -> list[tuple[dict, str]]:
    """The earlier run's front to queue (a new run only: a resumed one has queued it already)."""
    earlier = search.settings.warm_start
    if earlier is None:
        return []
    if resuming:
        say(f"warm_start={earlier} applies to a new run only; this one resumes where it was")
        return []
    every = warm_params(search, earlier)
    found = every[:max(room, 0)]
    say(f"warm start: {len(found)} member(s) of {earlier}'s front queued after the baseline and cover trials, "
        "each measured again here" + (f" (of {len(every)}: trials={search.settings.trials} leaves room for "
                                      f"{max(room, 0)})" if len(found) < len(every) else ""))
    return [(params, f"{earlier.name} trial {number}") for number, params in found]


def _ending(rules: StopRules, in_flight: int) -> str:
    """A stop rule's reason, said once when it fires."""
    return _ending_because(rules.reason(), in_flight)


def _ending_because(reason: str, in_flight: int) -> str:
    if reason:
        say(f"stopping: {reason}; no new trials" + (f", waiting for the {in_flight} in flight" if in_flight else ""))
    return reason


__all__ = ["adopt_workload", "prepare", "run_search", "search_loop"]
