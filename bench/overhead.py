"""The driver's own cost per trial: the real ask/tell loop, result files and progress, with trials that do no work.

    python bench/overhead.py [--trials 60] [--samplers ...] [--profile SAMPLER]

Runs the real driver loop (Optuna ask/tell on SQLite, trials.csv/pareto.csv, models and cards,
progress line) over Ray with a task that returns at once, with 1 and then 2 workers, and
times a bare Ray task round trip in the same process. The per-trial figure is the median
interval between successive trial completions in the study. Target: under 50 ms.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time

import numpy as np
import optuna
import ray

from search.core.messages import TrialResult
from search.strategy import study as studies
from search.run.cluster import start_ray, stop_ray
from search.config import compose_config
from search.run.dispatcher import Dispatcher
from search.run.driver import adopt_workload, make_sampler, prepare, search_loop
from search.run.interrupt import StopRequest
from search.results.progress import Progress
from search.workloads import check_workload, digits
from spaces import baseline_params


def no_work(workload, plugins, request) -> TrialResult:
    """A trial that builds nothing: random objective values so the front is realistic."""
    rng = np.random.default_rng()
    metrics = {"accuracy": float(rng.uniform(0.9, 1.0)), "latency_ms": float(rng.uniform(0.1, 1.0)),
               "energy_mj": float(rng.uniform(0.05, 0.3)), "size_bytes": int(rng.integers(10_000, 400_000)),
               "energy_source": "estimate"}
    return TrialResult(metrics=metrics, node="bench")


def bare_round_trip_ms(repeats: int = 200) -> float:
    @ray.remote(num_cpus=1)
    def noop() -> int:
        return 0

    ray.get(noop.remote())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        ray.get(noop.remote())
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def warm_workers(count: int) -> None:
    """Every worker process has imported what a trial needs (torch, the workload) before any run is timed.

    Otherwise a worker's first task (about 2.5 s of imports here) lands inside a timed run: while it
    imports, the other worker serves dozens of trials on the one core left, and the driver shares it.
    """
    workload = ray.put(check_workload(digits.load(seed=0), "digits"))

    @ray.remote(num_cpus=1)
    def hold(_workload) -> int:
        time.sleep(1.0)  # holds its CPU, so that each of ``count`` tasks lands in a process of its own
        return 0

    ray.get([hold.remote(workload) for _ in range(count)])


def run_loop(workers: int, trials: int, results: str, sampler: str, task=no_work) -> optuna.Study:
    """The real driver loop (ask/tell on SQLite, result files, progress) over ``trials`` of ``task``."""
    cfg = compose_config([f"trials={trials}", f"workers={workers}", f"results_dir={results}",
                          f"run=overhead-{sampler}-{workers}", f"sampler={sampler}"])
    search = prepare(cfg)
    workload = check_workload(digits.load(seed=0), "digits")
    adopt_workload(search, workload)
    search.run_dir.mkdir(parents=True)
    study = studies.open_study(search.run_dir, search.objectives, make_sampler(cfg, search),
                               baseline_params(search.knobs))
    with StopRequest() as stop:
        progress = Progress(trials, objectives=search.objectives, stream=io.StringIO())
        search_loop(search, study, Dispatcher(search, workload, task=task), progress, stop)
    return study


def driver_ms_per_trial(workers: int, trials: int, results: str, sampler: str) -> tuple[float, float]:
    study = run_loop(workers, trials, results, sampler)
    ends = sorted(t.datetime_complete.timestamp() for t in study.trials)
    gaps = np.diff(ends)[trials // 4:] * 1e3  # skip the start: workers spin up, the first generation fills
    return float(np.median(gaps)), bare_round_trip_ms()


# Where a trial's driver time goes, for --profile: (label, a substring of "file:function" in the profile).
PARTS = (("Optuna ask, the sampler's draws excluded", "optuna/study/study.py:ask"),
         ("Optuna tell", "optuna/study/study.py:tell"),
         ("writes to study.db", "search/strategy/mirrored_storage.py:_write_unless_batching"),
         ("result rows, front, model files", "search/run/state.py:take_finished"),
         ("waiting on Ray", "ray/_private/worker.py:wait"))


def profile(sampler: str, trials: int, results: str) -> None:
    """One run at 1 worker under cProfile (which slows everything about 2x): ms per trial in each part."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.runcall(run_loop, 1, trials, results, sampler)
    stats = pstats.Stats(profiler).stats  # (file, line, function) -> (..., cumulative time, ...)

    def per_trial(pattern: str) -> float:
        return sum(v[3] for k, v in stats.items() if pattern in f"{k[0]}:{k[2]}") / trials * 1e3

    def outermost(method: str) -> float:
        """A sampler's draws: its wrappers call their base's, so the outermost is the largest."""
        return max((v[3] for k, v in stats.items() if k[2] == method), default=0.0) / trials * 1e3

    print(f"{sampler}, 1 worker, {trials} trials, under cProfile: "
          f"{per_trial('search/run/driver.py:search_loop'):.1f} ms per trial in the loop")
    sampled = outermost("sample_relative") + outermost("sample_independent")
    print(f"  {'the sampler (its draws)':42s} {sampled:6.1f} ms")
    for label, pattern in PARTS:
        spent = per_trial(pattern) - (sampled if pattern == "optuna/study/study.py:ask" else 0.0)
        print(f"  {label:42s} {spent:6.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--samplers", nargs="+", default=["tpe_refine", "nsga2", "random"])
    parser.add_argument("--profile", metavar="SAMPLER", help="instead: where the driver's time goes, by part")
    args = parser.parse_args()
    target = prepare(compose_config([])).target
    with tempfile.TemporaryDirectory() as results:
        start_ray({"object_store_memory": 200_000_000}, 2, [target])
        try:
            warm_workers(2)
            if args.profile:
                profile(args.profile, args.trials, results)
                return
            rows = [(s, w, *driver_ms_per_trial(w, args.trials, results, s)) for s in args.samplers for w in (1, 2)]
        finally:
            stop_ray()
    print(f"{'sampler':>8} {'workers':>7} {'driver ms/trial (median)':>25} {'bare Ray round trip ms (median)':>32}")
    for sampler, workers, per_trial, bare in rows:
        print(f"{sampler:>8} {workers:>7} {per_trial:>25.1f} {bare:>32.2f}")


if __name__ == "__main__":
    main()
