"""The search's front on ``workload=text`` vs two recipes done by hand, timed in this one process.

    python -m search workload=text trials=30 run=text30      # the search (its wall time is printed by `time`)
    python bench/text_recipes.py results/text30 [--rounds 7] [--max-drop 0.01]

The recipes are what a user of ONNX Runtime would do by hand on the exported fp32 model:
dynamic int8 alone (``quantize_dynamic`` on MatMul, the usual CPU route), and the transformer
fusions followed by dynamic int8. Both are built with the product's own steps from the same
teacher, and each is timed at its best thread setting: 1 thread and every core (intra-op).
The search's entry is its fastest front member whose metric is within ``--max-drop`` (relative)
of the fp32 baseline's, at whatever parallelism it chose; also its fastest at 1 thread.
All models are timed in interleaved rounds (drift hits every model alike); medians are printed,
with the speed-up and size ratios of the search's entry over each recipe.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

import pandas as pd
import torch
from omegaconf import OmegaConf

from evaluators import Built, Latency, TaskMetric
from search.core.candidate import Candidate
from search.trial.build import build_candidate
from search.runtime.target import Target
from search.workloads import check_workload
from search.workloads.text import load
from spaces import Distillation, PruneRate, QuantBits, TransformerFusion

torch.set_num_threads(1)
CPU = Target(name="cpu")
KNOBS = [PruneRate(), Distillation(), TransformerFusion(), QuantBits(modes=("minmax", "dynamic"))]
RECIPES = {"fp32": {}, "dynamic int8": {"quant_bits": 8, "quant_mode": "dynamic"},
           "fusion + dynamic int8": {"fusion": "transformer", "quant_bits": 8, "quant_mode": "dynamic"}}


def built(workload, model_bytes: bytes, cand: Candidate) -> Built:
    return Built(model_bytes, cand, CPU, workload.test, workload.metric, workload.reference, workload.output_names)


def recipe(workload, fields: dict, parallelism: str, degree: int, batch: int) -> Built:
    cand = Candidate(target="cpu", parallelism=parallelism, degree=degree, batch_size=batch, **fields)
    return built(workload, build_candidate(workload, cand, CPU, seed=0, timings={}, knobs=KNOBS), cand)


def from_front(run: Path, workload, metric: str, floor: float, one_thread: bool,
               below_bytes: int | None = None) -> tuple[str, Built] | None:
    front = pd.read_csv(run / "pareto.csv")
    front = front[front[metric] >= floor].sort_values("latency_ms")
    if one_thread:
        front = front[front["degree"] == 1]
    if below_bytes is not None:
        front = front[front["size_bytes"] < below_bytes]
    if front.empty:
        return None
    row = front.iloc[0]
    card = json.loads((run / "models" / f"trial-{int(row['trial'])}.json").read_text())
    runtime = card["runtime"]
    cand = Candidate(target="cpu", parallelism=runtime["parallelism"], degree=runtime["degree"],
                     batch_size=runtime["batch_size"], micro_batches=runtime.get("micro_batches"))
    label = f"search trial {int(row['trial'])} ({card['parameters']}, {cand.parallelism} x{cand.degree})"
    return label, built(workload, (run / "models" / card["model_file"]).read_bytes(), cand)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run", type=Path)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--max-drop", type=float, default=0.01, help="relative drop of the metric allowed")
    args = parser.parse_args()
    config = OmegaConf.to_container(OmegaConf.load(args.run / "config.yaml"), resolve=True)
    workload = check_workload(load(**{k: v for k, v in config["workload"].items() if k != "_target_"}), "text")
    batch, cores = int(config["batch_size"]), os.cpu_count() or 1
    scorer = TaskMetric()
    scorer.for_workload({"metric": workload.metric.describe()})
    entries: dict[str, Built] = {}
    for name, fields in RECIPES.items():
        for parallelism, degree in (("sequential", 1), ("intra_op", cores)):
            entries[f"{name} ({parallelism} x{degree})"] = recipe(workload, fields, parallelism, degree, batch)
    base_score = scorer.measure(entries["fp32 (sequential x1)"])[scorer.metric]
    floor = base_score * (1 - args.max_drop)
    smallest_recipe = min(len(e.model_bytes) for label, e in entries.items() if not label.startswith("fp32"))
    for one_thread, below in ((False, None), (True, None), (False, smallest_recipe)):
        found = from_front(args.run, workload, scorer.metric, floor, one_thread, below)
        if found:  # the fastest within the drop; at 1 thread; and the fastest also smaller than every recipe
            entries[found[0]] = found[1]
    timer = Latency(warmup=10, min_repeats=50, budget_s=1.0)
    times: dict[str, list[float]] = {label: [] for label in entries}
    for _ in range(args.rounds):
        for label, entry in entries.items():
            times[label].append(timer.measure(entry)["latency_ms"])
    print(f"fp32 {scorer.metric} {base_score:.4f}; search entries within {args.max_drop:.0%} of it "
          f"(>= {floor:.4f}); batch {batch}, median of {args.rounds} interleaved rounds")
    rows = []
    for label, entry in entries.items():
        rows.append({"model": label, scorer.metric: round(scorer.measure(entry)[scorer.metric], 4),
                     "latency_ms": round(statistics.median(times[label]), 3), "size_bytes": len(entry.model_bytes)})
        entry.close()
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    searched = table[table["model"].str.startswith("search")]
    for name in ("dynamic int8", "fusion + dynamic int8"):
        hand = table[table["model"].str.startswith(name + " (")]
        best_hand = hand.loc[hand["latency_ms"].idxmin()]
        for _, row in searched.iterrows():
            print(f"{row['model'][:17]} vs {best_hand['model']}: {best_hand['latency_ms'] / row['latency_ms']:.2f}x "
                  f"faster, {best_hand['size_bytes'] / row['size_bytes']:.2f}x smaller")


if __name__ == "__main__":
    main()
