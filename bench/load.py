"""Thousands of trials: the driver's own cost per trial must stay flat as the study grows.

    python bench/load.py [--trials 2000] [--workers 4] [--sampler tpe_refine]

Runs the real driver loop (Optuna ask/tell on SQLite, trials.csv/pareto.csv every second, the
front, models and cards, the progress line) on a real local Ray with trials that build nothing
(bench/overhead.py's task), then prints: that every row is in trials.csv, the driver's cost per
trial over the first and the last 100 trials (the median gap between successive completions:
with trials that take no time, the driver is what paces them) with their ratio, and the driver's
peak resident memory. Goal: the last 100 within 1.5x of the first 100.
"""

from __future__ import annotations

import argparse
import io
import resource
import tempfile
import time

import numpy as np
import pandas as pd

from overhead import no_work
from search.strategy import study as studies
from search.config import compose_config
from search.results.progress import Progress
from search.run.cluster import start_ray, stop_ray
from search.run.dispatcher import Dispatcher
from search.run.driver import adopt_workload, make_sampler, prepare, search_loop
from search.run.interrupt import StopRequest
from search.workloads import check_workload, digits
from spaces import baseline_params

WINDOW = 100


def run(trials: int, workers: int, sampler: str, results: str) -> tuple[np.ndarray, int, float]:
    cfg = compose_config([f"trials={trials}", f"workers={workers}", f"results_dir={results}", "run=load",
                          f"sampler={sampler}", "cover=false"])
    search = prepare(cfg)
    workload = check_workload(digits.load(seed=0), "digits")
    adopt_workload(search, workload)
    search.run_dir.mkdir(parents=True)
    study = studies.open_study(search.run_dir, search.objectives, make_sampler(cfg, search),
                               baseline_params(search.knobs))
    started = time.perf_counter()
    with StopRequest() as stop:
        progress = Progress(trials, objectives=search.objectives, stream=io.StringIO())
        search_loop(search, study, Dispatcher(search, workload, task=no_work), progress, stop)
    wall = time.perf_counter() - started
    from search.results.render import render

    render(search.run_dir, study, search.schema)
    rows = len(pd.read_csv(search.run_dir / "trials.csv"))
    ends = np.sort([t.datetime_complete.timestamp() for t in study.trials if t.datetime_complete])
    return np.diff(ends) * 1e3, rows, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--sampler", default="tpe_refine")
    args = parser.parse_args()
    target = prepare(compose_config([])).target
    with tempfile.TemporaryDirectory() as results:
        start_ray({"object_store_memory": 200_000_000}, args.workers, [target])
        try:
            gaps, rows, wall = run(args.trials, args.workers, args.sampler, results)
        finally:
            stop_ray()
    first, last = float(np.median(gaps[5:5 + WINDOW])), float(np.median(gaps[-WINDOW:]))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.trials} trials, {args.workers} workers, sampler {args.sampler}: {rows} rows in trials.csv, "
          f"{wall:.0f} s of driver loop")
    print(f"driver ms per trial, median: first {WINDOW} {first:.1f}, last {WINDOW} {last:.1f}, "
          f"ratio {last / first:.2f} (goal <= 1.5)")
    print(f"driver peak resident memory: {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
