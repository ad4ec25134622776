"""Which sampler finds the best front: hypervolume at equal trials and at equal wall time, against random.

    python bench/samplers.py [--samplers nsga2 nsga3 tpe random gp tpe_refine random_refine]
                             [--seeds 1 2 3 4 5] [--trials 40] [--workload digits] [--keep DIR]
                             [--within 0.01] [-- extra overrides]

Runs ``python -m search`` once per sampler and seed, as a user would (``remeasure=false``, so a
run is the search itself). Per seed, every objective is made a loss and scaled to [0, 1] over
the completed trials of all that seed's runs, and each run's front gets its hypervolume with the
reference point at 1.1 (search/results/history.py's space). "Equal wall time" cuts every run of a
seed at the shortest one's duration. Prints each sampler's hypervolume per seed and the median
over seeds of its ratio to random's; then, per run, how much faster and smaller than the fp32
baseline its best trials are among those within 1 % of the baseline's quality (``--within``).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf
from optuna._hypervolume import compute_hypervolume

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from search.plugins import plugins_from_config  # noqa: E402
from search.results.history import REFERENCE  # noqa: E402
from search.results.pareto import pareto_mask  # noqa: E402


def run_search(results: Path, sampler: str, seed: int, trials: int, workload: str, extra: list[str]) -> Path:
    name = f"{sampler}-{seed}"
    if not (results / name / "pareto.csv").exists():
        command = [sys.executable, "-m", "search", f"sampler={sampler}", f"seed={seed}", f"trials={trials}",
                   f"workload={workload}", f"run={name}", f"results_dir={results}", "remeasure=false", *extra]
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return results / name


def completed(run: Path) -> pd.DataFrame:
    table = pd.read_csv(run / "trials.csv")
    table = table[table["state"] == "COMPLETE"].copy()
    start = pd.to_datetime(table["started_at"]).min()
    table["elapsed_s"] = (pd.to_datetime(table["completed_at"]) - start).dt.total_seconds()
    return table


def hypervolume(losses: np.ndarray) -> float:
    if not len(losses):
        return 0.0
    front = losses[pareto_mask(pd.DataFrame(losses), [(i, "minimize") for i in range(losses.shape[1])])]
    return float(compute_hypervolume(front, np.full(losses.shape[1], REFERENCE)))


def loss_scale(every: pd.DataFrame, objectives: list[tuple[str, str]]):
    """Rows -> losses in [0, 1]: each objective made a loss and scaled over ``every`` (one seed's runs)."""
    scaled = {}
    for metric, direction in objectives:
        sign = -1.0 if direction == "maximize" else 1.0
        low, high = (sign * every[metric]).min(), (sign * every[metric]).max()
        scaled[metric] = (sign, low, (high - low) or 1.0)

    def losses(table: pd.DataFrame) -> np.ndarray:
        return np.column_stack([(s * table[m] - low) / span for m, (s, low, span) in scaled.items()])

    return losses


def seed_scores(runs: dict[str, pd.DataFrame], objectives: list[tuple[str, str]]) -> dict[str, tuple[float, float]]:
    """Each sampler's (hypervolume at equal trials, at equal wall time) for one seed."""
    losses = loss_scale(pd.concat(runs.values()), objectives)
    horizon = min(table["elapsed_s"].max() for table in runs.values())
    return {name: (hypervolume(losses(table)), hypervolume(losses(table[table["elapsed_s"] <= horizon])))
            for name, table in runs.items()}


def versus_baseline(table: pd.DataFrame, objectives: list[tuple[str, str]], within: float) -> dict[str, float]:
    """Each minimized objective's baseline / best, over the trials whose quality (the first maximized
    objective) is within ``within`` (a share) of the baseline's; latency at the baseline's batch size."""
    quality = next(m for m, d in objectives if d == "maximize")
    base = table[table["baseline"].astype(str) == "True"].iloc[0]
    good = table[(table[quality] >= base[quality] * (1 - within)) & (table["batch_size"] == base["batch_size"])]
    return {m: float(base[m] / good[m].min()) for m, d in objectives if d == "minimize" and good[m].min() > 0}


def print_versus_baseline(runs: dict[tuple[str, int], pd.DataFrame], objectives: list[tuple[str, str]],
                          within: float) -> None:
    minimized = [m for m, d in objectives if d == "minimize"]
    print(f"\nbest within {within:.0%} of the baseline's {next(m for m, d in objectives if d == 'maximize')}, "
          "baseline / best (higher is better)")
    print(f"| sampler | seed | {' | '.join(minimized)} |")
    print(f"|---|---|{'---|' * len(minimized)}")
    for (name, seed), table in sorted(runs.items()):
        ratios = versus_baseline(table, objectives, within)
        cells = " | ".join(f"{ratios[m]:.1f}x" if m in ratios else "n/a" for m in minimized)
        print(f"| {name} | {seed} | {cells} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samplers", nargs="+",
                        default=["nsga2", "nsga3", "tpe", "random", "gp", "tpe_refine", "random_refine"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--workload", default="digits")
    parser.add_argument("--keep", type=Path, help="keep the run folders here (and reuse finished ones)")
    parser.add_argument("--within", type=float, default=0.01, help="quality share of the baseline's (0.01: 1 %%)")
    parser.add_argument("extra", nargs="*", help="more overrides for every run, after --")
    args = parser.parse_args()
    if "random" not in args.samplers:
        args.samplers.append("random")
    with tempfile.TemporaryDirectory() as scratch:
        results = args.keep or Path(scratch)
        scores: dict[str, dict[int, tuple[float, float]]] = {s: {} for s in args.samplers}
        tables: dict[tuple[str, int], pd.DataFrame] = {}
        for seed in args.seeds:
            runs = {s: run_search(results, s, seed, args.trials, args.workload, args.extra) for s in args.samplers}
            config = OmegaConf.to_container(OmegaConf.load(runs["random"] / "config.yaml"), resolve=True)
            objectives = list(plugins_from_config(config).schema.objectives)
            tables.update({(s, seed): completed(r) for s, r in runs.items()})
            for name, (equal_trials, equal_time) in seed_scores({s: tables[s, seed] for s in runs},
                                                                objectives).items():
                scores[name][seed] = (equal_trials, equal_time)
                print(f"seed {seed} {name}: hypervolume {equal_trials:.3f} (equal wall time {equal_time:.3f})",
                      flush=True)
    print(f"\n{args.trials} trials, workload {args.workload}, seeds {args.seeds}")
    print(f"| sampler | {' | '.join(f'seed {s}' for s in args.seeds)} | median vs random | at equal wall time |")
    print(f"|---|{'---|' * len(args.seeds)}---|---|")
    for name in args.samplers:
        ratios = [scores[name][s][0] / scores["random"][s][0] for s in args.seeds]
        timed = [scores[name][s][1] / scores["random"][s][1] for s in args.seeds]
        cells = " | ".join(f"{scores[name][s][0]:.3f}" for s in args.seeds)
        print(f"| {name} | {cells} | {statistics.median(ratios):.2f}x | {statistics.median(timed):.2f}x |")
    print_versus_baseline(tables, objectives, args.within)


if __name__ == "__main__":
    main()
