"""Search's front vs the hand grid, as ratios against the fp32 baseline timed in this same process.

    python bench/vs_hand_grid.py results/<run> [--rounds 7] [--max-drop 0.01]

Builds the fp32 baseline and the hand-tuned recipe (prune 50 % + distillation + int8 static,
1 thread, batch 32) with the product's own pipeline, loads the run's Pareto models, and times
all of them in interleaved rounds (so drift hits every model alike). Prints median latency
over rounds and the ratios: speed-up and size reduction vs the baseline, and accuracy drop.
The search's entries are its fastest Pareto members within --max-drop accuracy of the
baseline: one at 1 thread (the hand grid's setting) and one at any parallelism.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import pandas as pd
import torch

from evaluators import Accuracy, Built, Latency
from search.core.candidate import Candidate
from search.runtime.target import Target
from search.trial.build import build_candidate
from search.workloads import digits

torch.set_num_threads(1)
HAND_GRID = Candidate(target="cpu", quant_bits=8, prune_rate=0.5, distill_temperature=4.0, distill_alpha=0.9)


def build(workload, cand: Candidate) -> Built:
    model_bytes = build_candidate(workload, cand, Target(name="cpu"), seed=0, timings={})
    return Built(model_bytes, cand, Target(name="cpu"), workload.test)


def from_run(run: Path, workload, max_drop: float, baseline_acc: float, one_thread: bool) -> tuple[str, Built] | None:
    front = pd.read_csv(run / "pareto.csv")
    front = front[front["accuracy"] >= baseline_acc - max_drop].sort_values("latency_ms")
    if one_thread:
        degree = "degree" if "degree" in front.columns else "threads"  # a run from before the rename has threads
        front = front[front[degree] == 1]
    if front.empty:
        return None
    row = front.iloc[0]
    card = json.loads((run / "models" / f"trial-{int(row['trial'])}.json").read_text())
    cand = Candidate(target="cpu", parallelism=card["runtime"]["parallelism"],
                     degree=card["runtime"]["degree"], batch_size=card["runtime"]["batch_size"],
                     micro_batches=card["runtime"].get("micro_batches"))
    model_bytes = (run / "models" / card["model_file"]).read_bytes()
    label = f"search trial {int(row['trial'])} ({card['parameters']}, {cand.parallelism} x{cand.degree})"
    return label, Built(model_bytes, cand, Target(name="cpu"), workload.test)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run", type=Path, nargs="?")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--max-drop", type=float, default=0.01)
    args = parser.parse_args()
    workload = digits.load(seed=0)
    models = {"fp32 baseline": build(workload, Candidate(target="cpu")),
              "hand grid (prune 0.5 + KD + int8, 1 thread)": build(workload, HAND_GRID)}
    base_acc = Accuracy().measure(models["fp32 baseline"])["accuracy"]
    if args.run:  # the run's accuracies were measured on this same split (same seed), so the filter is fair
        for one_thread in (True, False):
            found = from_run(args.run, workload, args.max_drop, base_acc, one_thread)
            if found:
                models[found[0]] = found[1]
    timer = Latency(warmup=50, min_repeats=300, max_repeats=5000, budget_s=1.0)
    rounds = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, built in models.items():
            rounds[name].append(timer.measure(built)["latency_ms"])
    base_ms = statistics.median(rounds["fp32 baseline"])
    base_size = len(models["fp32 baseline"].model_bytes)
    print(f"{'model':<90} {'p50 ms':>8} {'speed-up':>8} {'smaller':>8} {'accuracy':>9} {'drop':>7}")
    for name, built in models.items():
        ms = statistics.median(rounds[name])
        acc = Accuracy().measure(built)["accuracy"]
        print(f"{name:<90} {ms:8.3f} {base_ms / ms:7.2f}x {base_size / len(built.model_bytes):7.1f}x "
              f"{acc:9.4f} {base_acc - acc:+7.4f}")


if __name__ == "__main__":
    main()
