"""Is a latency figure taken during a search as true as one taken on an idle machine?

    python bench/timing_isolation.py [--measurements 15] [--model baseline|small] [--threads 1|2]

Times the same model (the fp32 digits CNN, or a pruned one with --model small) with the
search's own Latency evaluator: (a) on an idle machine, (b) while a 2-worker search runs
beside it, taking the same per-node measurement lock the trials take, and (c) during the
search without the lock, to show what the lock buys. Prints, per condition, the median of
the measured p50s, their CV across measurements, the median per-call CV and CI width, and
the ratio of medians against idle. Targets: medians within 5 % of idle, CV under 5 %.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from evaluators import Built, Latency
from search.runtime.node_lock import measuring_alone
from search.core.candidate import Candidate
from search.runtime.target import Target
from search.trial.build import build_candidate
from search.workloads import digits

REPO = Path(__file__).resolve().parent.parent
MODELS = {"baseline": Candidate(target="cpu"),
          "small": Candidate(target="cpu", prune_rate=0.5, prune_round_to=8, distill_temperature=4.0,
                             distill_alpha=0.9)}


def measure(built: Built, evaluator: Latency, count: int, lock: bool, pause_s: float) -> list[dict]:
    """``count`` independent measurements, with pauses between them so that builds interleave."""
    found = []
    for _ in range(count):
        with measuring_alone() if lock else contextlib.nullcontext():
            found.append(evaluator.measure(built))
        time.sleep(pause_s)
    return found


def summary(name: str, found: list[dict], idle_median: float | None) -> str:
    p50s = [m["latency_ms"] for m in found]
    median = statistics.median(p50s)
    cv = statistics.pstdev(p50s) / statistics.fmean(p50s)
    call_cv = statistics.median(m["latency_cv"] for m in found)
    width = statistics.median((m["latency_ci_high_ms"] - m["latency_ci_low_ms"]) / 2 / m["latency_ms"] for m in found)
    ratio = f"{median / idle_median:6.3f}" if idle_median else "     -"
    return (f"{name:<28} {median:9.4f} {ratio} {100 * cv:9.2f} % {100 * call_cv:9.1f} % {100 * width:9.2f} %"
            f" {statistics.median(m['latency_repeats'] for m in found):7.0f}")


def completed_trials(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
    except sqlite3.Error:
        return 0


def start_search(folder: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "search", f"results_dir={folder}", "run=load", "trials=400", "workers=2",
               "remeasure=false"]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while completed_trials(folder / "load" / "study.db") < 3:  # past start-up: builds are running
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the background search did not get going")
        time.sleep(1)
    return proc


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--measurements", type=int, default=15)
    parser.add_argument("--model", choices=sorted(MODELS), default="baseline")
    parser.add_argument("--pause-s", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of the timed session")
    args = parser.parse_args()
    torch.set_num_threads(1)
    workload, cand = digits.load(seed=0), MODELS[args.model]
    if args.threads > 1:
        cand = cand.replace(parallelism="intra_op", degree=args.threads)
    built = Built(build_candidate(workload, cand, Target(name="cpu"), seed=0, timings={}), cand, Target(name="cpu"),
                  workload.test)
    evaluator = Latency()  # the search's defaults
    print(f"model: {args.model}, batch {cand.batch_size}, {cand.get('degree', 1)} thread(s); "
          f"{args.measurements} measurements per condition; {os.cpu_count()} cores", flush=True)
    idle = measure(built, evaluator, args.measurements, lock=True, pause_s=args.pause_s)
    with tempfile.TemporaryDirectory(prefix="bench-quiet-") as folder:
        search = start_search(Path(folder))
        try:
            loaded = measure(built, evaluator, args.measurements, lock=True, pause_s=args.pause_s)
            unlocked = measure(built, evaluator, args.measurements, lock=False, pause_s=args.pause_s)
            trials = completed_trials(Path(folder) / "load" / "study.db")
        finally:
            search.send_signal(signal.SIGINT)
            search.wait(timeout=120)
    base = statistics.median(m["latency_ms"] for m in idle)
    print(f"\n{'condition':<28} {'p50 ms':>9} {'x idle':>6} {'CV of p50':>11} {'call CV':>11} {'CI +-':>11} "
          f"{'repeats':>7}")
    print(summary("(a) idle", idle, base))
    print(summary("(b) search, measured alone", loaded, base))
    print(summary("(c) search, no lock", unlocked, base))
    print(f"\nthe background search completed {trials} trials meanwhile (2 workers)")


if __name__ == "__main__":
    main()
