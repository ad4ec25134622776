"""Do the figures a run prints hold when measured again?

    python bench/figures.py [--workloads digits text] [--seeds 0 1 2] [--trials 40] [--fresh 3] [--rounds 15]
                            [--out results/bench-figures] [--keep]

For each workload and seed: a default search (``python -m search``, in its own process), then

* every front member's bundle (what ``search.pick --out`` writes) timed by its own verify.py in
  ``--fresh`` fresh processes, one member after another, round after round, each started once the
  machine is quiet (as a re-timing session starts): the share of those p50s
  inside the card's interval (goal: at least 90 %), the card's median half-width (relative), and
  the spread the fresh p50s show around the card's (95th percentile of |fresh / card - 1|): the
  interval should be no wider than that spread, so that coverage is not bought by width;
* the summary's headline latency ratio (the baseline against its fastest member, as the run
  prints it) against the same two bundles timed in this one process, ``--rounds`` interleaved
  rounds, ratio of the medians (goal: within 5 %);
* the front's size, and on the same trials the front the sessions' own intervals would give (is the
  front's size bought by the widened intervals?).

Run folders are kept under --out and reused when they are complete (delete them to search again).
Prints one line per run and the figures pooled over seeds per workload; writes figures.json.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from search.core import attributes  # noqa: E402
from search.pick import run_schema, write_out  # noqa: E402
from search.results.intervals import t_95  # noqa: E402
from search.results.pareto import pareto_mask  # noqa: E402
from search.results.tables import trial_row  # noqa: E402
from search.strategy.study import load_run_study  # noqa: E402
from search.run.summary import summary  # noqa: E402
from search.runtime import portable  # noqa: E402
from search.runtime.node_load import wait_until_quiet  # noqa: E402

QUIET_WAIT_S = 20  # as the re-timing sessions wait (remeasure_quiet_s)
HEADLINE = re.compile(r"vs fp32 baseline \(trial (\d+)[^)]*\):.*?latency_ms ([\d.]+)x lower[^(]*\(trial (\d+)")
FRESH_P50 = re.compile(r"^latency p50 ([\d.eE+-]+) ms", re.MULTILINE)


def searched(workload: str, seed: int, trials: int, out: Path) -> Path:
    """The run folder of a default search of ``workload`` at ``seed`` (searched now unless complete)."""
    run = out / f"{workload}-s{seed}"
    if not (run / "pareto.csv").exists():
        shutil.rmtree(run, ignore_errors=True)
        command = [sys.executable, "-m", "search", f"workload={workload}", f"seed={seed}", f"trials={trials}",
                   f"results_dir={out.resolve()}", f"run={run.name}"]
        print("$", " ".join(command[1:]), flush=True)
        subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return run


def bundled(run: Path, trial: int) -> Path:
    """Trial ``trial``'s bundle under the run folder (written as ``search.pick --out`` writes it)."""
    folder = run / "bench-bundles" / f"trial-{trial}"
    if not (folder / "bundle.json").exists():
        config, schema = run_schema(run)
        table = pd.read_csv(run / "trials.csv")
        write_out(run, table[table["trial"] == trial].iloc[0], folder, config, schema)
    return folder


def spec_of(folder: Path) -> dict:
    return json.loads((folder / "bundle.json").read_text())


def bundle_module(folder: Path):
    """A bundle's own run.py (every bundle ships the same one), imported from the bundle as a user would."""
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    return importlib.import_module("run")


def fresh_p50(folder: Path) -> tuple[float, float | None]:
    """The p50 (ms) the bundle's verify.py measures in a process of its own, started once the machine is quiet
    (what the search left, Ray's processes ending among it, is not what a user's verify.py meets), and the
    cores that were busy just before it."""
    settled = wait_until_quiet(QUIET_WAIT_S)
    done = subprocess.run([sys.executable, str(folder / "verify.py")], capture_output=True, text=True, cwd=folder)
    found = FRESH_P50.search(done.stdout)
    if not found:
        raise RuntimeError(f"{folder}/verify.py printed no p50:\n{done.stdout}\n{done.stderr}")
    return float(found.group(1)), settled.busy_cores


def coverage(members: dict[int, Path], fresh: int) -> list[dict]:
    """One record per (member, fresh process): the fresh p50 against the card's p50 and interval."""
    specs = {n: spec_of(f) for n, f in members.items()}
    cards = {n: spec["card_figures"] for n, spec in specs.items()}
    notes = {n: (spec.get("intervals") or {}).get("latency_ms") or {} for n, spec in specs.items()}
    found = []
    for round_ in range(fresh):
        for number, folder in members.items():
            card = cards[number]
            p50, busy = fresh_p50(folder)
            low, high = card.get("latency_ci_low_ms", card["latency_ms"]), card.get("latency_ci_high_ms")
            high = card["latency_ms"] if high is None else high
            # the interval had it also spanned what the figures moved since the search (the rule before sessions
            # were fresh processes)
            note, centre = notes[number], card["latency_ms"]
            moved = math.exp(t_95(note.get("pairs") or 1) * note.get("moment_rms_log", 0.0))
            wide_low, wide_high = min(low, centre / moved), max(high, centre * moved)
            found.append({"trial": number, "round": round_, "fresh_ms": p50, "card_ms": centre, "busy_cores": busy,
                          "low_ms": low, "high_ms": high, "inside": bool(low <= p50 <= high),
                          "half_width": (high - low) / 2 / centre,
                          "inside_with_moment": bool(wide_low <= p50 <= wide_high),
                          "half_width_with_moment": (wide_high - wide_low) / 2 / centre})
    return found


def one_process_ratio(baseline: Path, best: Path, rounds: int) -> float:
    """The baseline's p50 over the best member's, both timed in this process, interleaved rounds (once the
    machine is quiet)."""
    wait_until_quiet(QUIET_WAIT_S)
    timed = {}
    bundle_run = bundle_module(baseline)
    for name, folder in (("baseline", baseline), ("best", best)):
        spec = spec_of(folder)
        model = bundle_run.load(folder)
        inputs, _ = bundle_run.sample(folder, spec)
        timed[name] = (model, model.feeds(portable.batch_of(inputs, spec["batch_size"]), {}),
                       spec["latency_protocol"], [])
    for round_ in range(rounds):
        order = list(timed) if round_ % 2 == 0 else list(reversed(timed))
        for name in order:
            model, feeds, protocol, p50s = timed[name]
            p50s.append(float(np.median(portable.time_calls(model.runner, feeds, **protocol))))
    for model, *_ in timed.values():
        model.close()
    return statistics.median(timed["baseline"][3]) / statistics.median(timed["best"][3])


def unwidened_front(run: Path) -> int:
    """The size of the front of the run's completed trials with each row's own session intervals (not widened)."""
    _, schema = run_schema(run)
    study = load_run_study(run)
    finals = attributes.finals_of(study)
    rows = [trial_row(t, schema, finals.get(t.number)) for t in study.get_trials(deepcopy=False)
            if t.state.name == "COMPLETE"]
    table = pd.DataFrame(rows, columns=schema.columns)
    return int(pareto_mask(table, schema.objectives, schema.intervals).sum())


def figures_of(run: Path, fresh: int, rounds: int) -> dict:
    """The coverage records, front size and headline ratios of one finished run."""
    text = summary(run)
    headline = HEADLINE.search(text)
    if not headline:
        raise RuntimeError(f"{run}: the summary has no latency headline:\n{text}")
    baseline, printed, best = int(headline.group(1)), float(headline.group(2)), int(headline.group(3))
    front = pd.read_csv(run / "pareto.csv")
    members = {int(n): bundled(run, int(n)) for n in front["trial"]}
    records = coverage(members, fresh)
    independent = one_process_ratio(bundled(run, baseline), bundled(run, best), rounds)
    return {"run": str(run), "front": len(front), "unwidened_front": unwidened_front(run), "records": records,
            "headline": printed, "independent": independent, "headline_error": printed / independent - 1,
            "baseline": baseline, "best": best, "sessions": session_p50s(run)}


def session_p50s(run: Path) -> dict[str, list[float]]:
    """Each re-timed trial's p50 (ms) in each of its re-timing sessions (for weighing other interval rules on
    the same fresh timings)."""
    finals = attributes.finals_of(load_run_study(run))
    return {str(n): [s.get("latency_ms") for s in [f.metrics, *f.sessions]] for n, f in finals.items() if f.metrics}


def pooled(runs: list[dict]) -> dict:
    """Coverage, median half-width and spread over every run's records; the worst headline error."""
    records = [r for run in runs for r in run["records"]]
    moved = [abs(r["fresh_ms"] / r["card_ms"] - 1) for r in records]
    return {"inside": statistics.fmean(r["inside"] for r in records), "count": len(records),
            "median_half_width": statistics.median(r["half_width"] for r in records),
            "inside_with_moment": statistics.fmean(r["inside_with_moment"] for r in records),
            "median_half_width_with_moment": statistics.median(r["half_width_with_moment"] for r in records),
            "spread_95": float(np.percentile(moved, 95)), "median_moved": statistics.median(moved),
            "worst_headline_error": max(abs(run["headline_error"]) for run in runs),
            "fronts": [run["front"] for run in runs],
            "unwidened_fronts": [run["unwidened_front"] for run in runs]}


def run_line(run: dict) -> str:
    share = statistics.fmean(r["inside"] for r in run["records"])
    return (f"{Path(run['run']).name:<12} front {run['front']:>2} ({run['unwidened_front']} unwidened)  "
            f"inside {share:6.1%} of {len(run['records']):>3}  "
            f"headline {run['headline']:.2f}x, one process {run['independent']:.2f}x "
            f"({run['headline_error']:+.1%})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", default=["digits", "text"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--fresh", type=int, default=3, help="fresh verify.py processes per front member")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds of the one-process ratio")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "bench-figures")
    args = parser.parse_args()
    report = {}
    for workload in args.workloads:
        runs = []
        for seed in args.seeds:
            runs.append(figures_of(searched(workload, seed, args.trials, args.out), args.fresh, args.rounds))
            print(run_line(runs[-1]), flush=True)
        report[workload] = {"runs": runs, "pooled": pooled(runs)}
        p = report[workload]["pooled"]
        print(f"{workload}: {p['inside']:.1%} of {p['count']} fresh-process p50s inside the card's interval "
              f"(goal >= 90 %); median half-width {p['median_half_width']:.1%} against a spread of "
              f"{p['spread_95']:.1%} (95th percentile of |fresh / card - 1|; median {p['median_moved']:.1%}); "
              f"worst headline error {p['worst_headline_error']:.1%} (goal <= 5 %); fronts {p['fronts']} "
              f"({p['unwidened_fronts']} with the sessions' own intervals); had the intervals also spanned the "
              f"move since the search: {p['inside_with_moment']:.1%} inside, median half-width "
              f"{p['median_half_width_with_moment']:.1%}",
              flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "figures.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
