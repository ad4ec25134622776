"""Multi-fidelity recovery: hypervolume against wall time with recovery rungs and without.

    python bench/rungs.py [--seeds 1 2 3] [--trials 30] [--workload digits] [--keep DIR] [-- extra overrides]

Runs ``python -m search`` twice per seed, as a user would (``remeasure=false``): once with the
default ``recovery_rungs`` and once with ``recovery_rungs=[]``. Both get the same trials (a trial a
rung stops counts as one). Per seed, objectives are scaled as in bench/samplers.py over both runs'
completed trials, and each run's hypervolume is taken at a quarter, half, three quarters and all of
the run without rungs' wall time (a run that ended earlier keeps its final front). Prints the
hypervolumes, the median ratio with/without at each mark, each run's wall time and the trials stopped.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from samplers import completed, hypervolume, loss_scale  # noqa: E402
from search.config import plugins_from_config  # noqa: E402

MARKS = (0.25, 0.5, 0.75, 1.0)
VARIANTS = {"rungs": [], "no-rungs": ["recovery_rungs=[]"]}


def run(results: Path, variant: str, seed: int, trials: int, workload: str, extra: list[str]) -> Path:
    name = f"{variant}-{seed}"
    if not (results / name / "pareto.csv").exists():
        command = [sys.executable, "-m", "search", f"seed={seed}", f"trials={trials}", f"workload={workload}",
                   f"run={name}", f"results_dir={results}", "remeasure=false", *VARIANTS[variant], *extra]
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return results / name


def wall_s(folder: Path) -> float:
    table = pd.read_csv(folder / "trials.csv").dropna(subset=["started_at", "completed_at"])
    return (pd.to_datetime(table["completed_at"]).max() - pd.to_datetime(table["started_at"]).min()).total_seconds()


def stopped(folder: Path) -> int:
    table = pd.read_csv(folder / "trials.csv")
    return int(table["error"].fillna("").astype(str).str.startswith("stopped after recovery epoch").sum())


def seed_curve(runs: dict[str, Path]) -> dict[str, list[float]]:
    """Each variant's hypervolume at each mark of the run without rungs' wall time."""
    config = OmegaConf.to_container(OmegaConf.load(runs["no-rungs"] / "config.yaml"), resolve=True)
    objectives = list(plugins_from_config(config).schema.objectives)
    tables = {v: completed(folder) for v, folder in runs.items()}
    losses = loss_scale(pd.concat(tables.values()), objectives)
    horizon = wall_s(runs["no-rungs"])
    return {v: [hypervolume(losses(t[t["elapsed_s"] <= mark * horizon])) for mark in MARKS] for v, t in tables.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--workload", default="digits")
    parser.add_argument("--keep", type=Path, help="keep the run folders here (and reuse finished ones)")
    parser.add_argument("extra", nargs="*", help="more overrides for every run, after --")
    args = parser.parse_args()
    ratios: list[list[float]] = [[] for _ in MARKS]
    with tempfile.TemporaryDirectory() as scratch:
        results = args.keep or Path(scratch)
        print(f"| seed | variant | {' | '.join(f'HV at {m:.0%} time' for m in MARKS)} | wall s | stopped |")
        print(f"|---|---|{'---|' * len(MARKS)}---|---|")
        for seed in args.seeds:
            runs = {v: run(results, v, seed, args.trials, args.workload, args.extra) for v in VARIANTS}
            curve = seed_curve(runs)
            for variant, folder in runs.items():
                cells = " | ".join(f"{hv:.3f}" for hv in curve[variant])
                print(f"| {seed} | {variant} | {cells} | {wall_s(folder):.0f} | {stopped(folder)} |", flush=True)
            for i, (with_rungs, without) in enumerate(zip(curve["rungs"], curve["no-rungs"], strict=True)):
                if without:  # a run with no front member inside the joint front's nadir yet has no ratio
                    ratios[i].append(with_rungs / without)
    print(f"\n{args.trials} trials, workload {args.workload}, seeds {args.seeds}: median hypervolume with rungs / "
          "without, at each share of the run without rungs' wall time")
    print(" | ".join(f"{m:.0%}: {statistics.median(r):.2f}x ({len(r)} seeds)" if r else f"{m:.0%}: n/a"
                     for m, r in zip(MARKS, ratios, strict=True)))


if __name__ == "__main__":
    main()
