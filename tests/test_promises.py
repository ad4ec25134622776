"""Promises the README makes, checked only through the public surface.

Nothing here imports the package: each test drives ``python -m search`` as a user does (the conftest
``search`` helper) and reads what the README says a run folder holds: trials.csv, pareto.csv,
pareto.html, config.yaml, models/*.json and study.db (with sqlite3 or ``optuna.load_study``).
Runs are shared through module-scoped fixtures to keep the wall time small.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from tests.conftest import REPO, copy_run, quick_overrides, search, tried
from tests.driver_control import kill_session, running_trials, wait_for_running

pytestmark = pytest.mark.slow

# What a trial builds and runs (README "Results columns"): equal values mean the same parameters.
CANDIDATE = ["quant_bits", "quant_mode", "quant_granularity", "prune_rate", "prune_round_to", "distill_temperature",
             "distill_alpha", "parallelism", "threads", "batch_size"]
# The fields the kill marker and a trials.csv row both name (the marker holds the candidate as the worker got it).
MARKED = ["quant_bits", "quant_mode", "prune_rate", "prune_round_to", "distill_temperature", "distill_alpha",
          "parallelism", "batch_size"]
OBJECTIVES = ["accuracy", "latency_ms", "energy_mj", "size_bytes"]
KILL_ONCE = "tests.plugins_for_tests.KillOnce"


def kill_once_overrides(marker_dir: Path) -> list[str]:
    """Adds the test evaluator that SIGKILLs its own worker the first time it measures a non-baseline trial."""
    return [f"+evaluators.kill_once._target_={KILL_ONCE}", f"+evaluators.kill_once.marker_dir={marker_dir}",
            "+evaluators.kill_once.objective=false"]


def same_candidate(a: pd.Series, b: pd.Series, columns: list[str] = CANDIDATE) -> bool:
    """Equal candidate columns, an empty field (NaN) equal to an empty one."""
    return all((pd.isna(a[c]) and pd.isna(b[c])) or (not pd.isna(a[c]) and not pd.isna(b[c]) and a[c] == b[c])
               for c in columns)


def front_of(done: pd.DataFrame, floors: dict[str, float] | None) -> set[int]:
    """The README's front, written independently of the package.

    Every objective becomes a (low, high) interval in the minimized sense (accuracy is negated).
    Accuracy and size are exact. With ``floors``, latency and energy take their CI columns widened to
    at least +-floor of the value; without, their values alone (plain exact dominance). A row is
    dominated when another is no worse on every objective (low_j <= high_i) and clearly better on at
    least one (high_j < low_i).
    """
    lows, highs = [-done["accuracy"].to_numpy(float)], [-done["accuracy"].to_numpy(float)]
    for metric, low_col, high_col in (("latency_ms", "latency_ci_low_ms", "latency_ci_high_ms"),
                                      ("energy_mj", "energy_ci_low_mj", "energy_ci_high_mj")):
        value = done[metric].to_numpy(float)
        if floors is None:
            lows.append(value)
            highs.append(value)
        else:
            lows.append(np.minimum(done[low_col].to_numpy(float), value * (1 - floors[metric])))
            highs.append(np.maximum(done[high_col].to_numpy(float), value * (1 + floors[metric])))
    lows.append(done["size_bytes"].to_numpy(float))
    highs.append(done["size_bytes"].to_numpy(float))
    low, high = np.column_stack(lows), np.column_stack(highs)
    return {int(trial) for i, trial in enumerate(done["trial"])
            if not np.any(np.all(low <= high[i], axis=1) & np.any(high < low[i], axis=1))}


# --- one run for the noise-aware front, the cover trials and max_retries=1 ---------------------------------

# Floors this wide make nearly every latency and energy pair tie (intervals [0.05 v, 1.95 v] overlap unless the
# figures are 39x apart), so the front is decided by accuracy and size, while exact dominance keeps the fastest
# rows. Pruning is off so that few distinct models (fp32, int8 minmax, int8 dynamic) are each run several ways:
# seen with seeds 0, 1 and 2, the noise-aware front always differed from the exact one.
FLOOR = 0.95
DECLARED = {"precision": {"32", *(f"8/{m}/{g}" for m in ("minmax", "dynamic") for g in ("per_tensor", "per_channel"))},
            "parallelism": {"sequential", "intra_op", "pipeline"},
            "batch_size": {8, 32}}
COVER_TRIALS = max(len(values) for values in DECLARED.values())  # the fewest trials holding every value once
NOISY_TRIALS = 8


@pytest.fixture(scope="module")
def noisy_run(tmp_path_factory, teacher_cache) -> tuple[Path, Path]:
    """(run folder, kill marker folder) of a run with cover trials, wide noise floors and a worker killed once."""
    results = tmp_path_factory.mktemp("noisy")
    marker = results / "marker"
    proc = search(results, teacher_cache, f"trials={NOISY_TRIALS}", "workers=2", "run=noisy", "seed=0", "cover=true",
                  "space.knobs.quant_bits.choices=[32,8]", "space.knobs.quant_bits.modes=[minmax,dynamic]",
                  "space.knobs.parallelism.modes=[sequential,intra_op,pipeline]",
                  "space.knobs.batch_size.choices=[8,32]", "space.knobs.prune_rate.high=0",
                  f"evaluators.latency.noise_floor={FLOOR}", f"evaluators.energy.noise_floor={FLOOR}",
                  "max_retries=1", *kill_once_overrides(marker))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return results / "noisy", marker


def test_pareto_csv_is_the_noise_aware_front_of_the_completed_rows(noisy_run):
    run, _ = noisy_run
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{run / 'study.db'}")
    assert study.metric_names == OBJECTIVES, "the reference below covers exactly these objectives"
    table = tried(pd.read_csv(run / "trials.csv"))
    done = table[table["state"] == "COMPLETE"]
    assert len(done) >= 5
    intervals = ["latency_ci_low_ms", "latency_ci_high_ms", "energy_ci_low_mj", "energy_ci_high_mj"]
    assert done[OBJECTIVES + intervals].notna().all().all()
    floors = {"latency_ms": FLOOR, "energy_mj": FLOOR}
    front = set(pd.read_csv(run / "pareto.csv")["trial"].astype(int))
    assert front == front_of(done, floors)
    exact = front_of(done, None)
    assert front != exact, ("with these floors the noise-aware front must differ from plain dominance "
                            f"(both {sorted(front)}): the floors were not applied")
    kept = {int(p.stem.split("-")[1]) for p in (run / "models").glob("trial-*.onnx")}
    assert kept == front, "models/ holds the noise-aware front"


def _precision(row: pd.Series) -> str:
    if row["quant_bits"] != 8:
        return str(int(row["quant_bits"]))
    return f"8/{row['quant_mode']}/{row['quant_granularity']}"


def test_cover_trials_measure_every_declared_mode_right_after_the_baseline(noisy_run):
    run, _ = noisy_run
    table = pd.read_csv(run / "trials.csv").set_index("trial")
    assert bool(table.loc[0, "baseline"])
    cover = table.loc[1:COVER_TRIALS]
    assert list(cover.index) == list(range(1, COVER_TRIALS + 1))
    measured = (cover["state"] == "COMPLETE") | (  # a setting the model cannot take is re-asked, never a failure
        (cover["state"] == "PRUNED") & cover["error"].fillna("").str.startswith("not applicable"))
    assert measured.all(), cover[["state", "error"]]
    assert {_precision(r) for _, r in cover.iterrows()} == DECLARED["precision"]
    assert set(cover["parallelism"]) == DECLARED["parallelism"]
    assert set(cover["batch_size"].astype(int)) == DECLARED["batch_size"]
    # and nothing outside the declared space is ever tried
    assert {_precision(r) for _, r in table.iterrows()} <= DECLARED["precision"]
    assert set(table["parallelism"]) <= DECLARED["parallelism"]
    assert set(table["batch_size"].astype(int)) <= DECLARED["batch_size"]


def test_a_trial_whose_worker_died_is_rerun_under_max_retries(noisy_run):
    run, marker = noisy_run
    killed = json.loads((marker / "killed.json").read_text())["candidate"]  # written just before the kill
    table = tried(pd.read_csv(run / "trials.csv"))
    assert len(table) == NOISY_TRIALS
    assert (table["state"] == "COMPLETE").all(), table[["trial", "state", "error"]]
    victim = pd.Series(killed)
    again = table[[same_candidate(row, victim, MARKED) for _, row in table.iterrows()]]
    assert len(again) >= 1, f"no row holds the killed trial's parameters {killed}"


def test_a_trial_whose_worker_died_fails_without_retries_and_the_search_goes_on(tmp_path, teacher_cache):
    marker = tmp_path / "marker"
    proc = search(tmp_path, teacher_cache, "trials=3", "workers=2", "run=noretry", "seed=0", "cover=false",
                  "remeasure=false", "space.knobs.quant_bits.choices=[32,8]", "space.knobs.prune_rate.high=0",
                  "max_retries=0", *kill_once_overrides(marker))
    assert proc.returncode == 0, proc.stderr[-3000:]
    killed = pd.Series(json.loads((marker / "killed.json").read_text())["candidate"])
    table = tried(pd.read_csv(tmp_path / "noretry" / "trials.csv"))
    assert len(table) == 3, "the failed trial counts towards trials and the search still finished them"
    failed = table[table["state"] == "FAIL"]
    assert len(failed) == 1, table[["trial", "state", "error"]]
    assert same_candidate(failed.iloc[0], killed, MARKED)
    assert re.search(r"(?i)worker.*died|died unexpectedly|crash", failed.iloc[0]["error"]), failed.iloc[0]["error"]
    assert (table.drop(failed.index)["state"] == "COMPLETE").all()


# --- resume after the driver is killed ---------------------------------------------------------------------

def test_trials_in_flight_when_the_driver_is_killed_are_rerun_with_the_same_parameters(tmp_path, teacher_cache):
    args = ["trials=5", "workers=2", "run=killed", "seed=0", "remeasure=false"]
    command = [sys.executable, "-m", "search", *quick_overrides(tmp_path, teacher_cache), *args]
    db = tmp_path / "killed" / "study.db"
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_for_running(proc, db, baseline_too=False)
    finally:
        kill_session(proc)  # the driver and the Ray it started, workers included
    in_flight = set(running_trials(db))
    assert any(n > 0 for n in in_flight), "the driver was killed while a trial past the baseline ran"
    killed = optuna.load_study(study_name="search", storage=f"sqlite:///{db}")
    before = {t.number: t.values for t in killed.trials if t.state.name == "COMPLETE"}
    again = search(tmp_path, teacher_cache, *args)  # the same command
    assert again.returncode == 0, again.stderr[-3000:]
    after = {t.number: t.values for t in optuna.load_study(study_name="search", storage=f"sqlite:///{db}").trials}
    assert all(after[n] == values for n, values in before.items()), "a trial finished before the kill changed"
    table = tried(pd.read_csv(tmp_path / "killed" / "trials.csv"))
    rerun = table["error"].fillna("").str.startswith("re-run as")
    assert set(table.loc[rerun, "trial"]) == in_flight, "exactly the trials in flight are marked re-run"
    used: set[int] = set()  # each interrupted trial needs a run of its own
    for _, stale in table[rerun].iterrows():
        later = table[(table["trial"] > stale["trial"]) & ~rerun & table["state"].isin(["COMPLETE", "FAIL"])]
        again = [int(row["trial"]) for _, row in later.iterrows()
                 if int(row["trial"]) not in used and same_candidate(row, stale)]
        assert again, f"trial {stale['trial']} was not run again with its parameters"
        used.add(again[0])
    finished = table[~rerun & table["state"].isin(["COMPLETE", "FAIL"])]
    assert len(finished) == 5, "trials counts finished trials, not the interrupted ones"
    assert finished["baseline"].sum() == 1


# --- resume refused when what was measured would change -----------------------------------------------------

RUN_ARGS = ["trials=3", "workers=2", "run=three", "seed=0"]  # as the finished_digits_run fixture made it
REFUSED = {"workload": "workload.distill_epochs=4", "target": "+target=cpu_1t",
           "evaluators": "evaluators.latency.budget_s=0.3", "batch_size": "batch_size=16"}
NAMED = {"workload": r"\bworkload\b", "target": r"\btarget\b", "evaluators": r"\bevaluators\b",
         "batch_size": r"\bbatch[_ ]size\b"}


def _fingerprint(run: Path) -> dict[str, tuple[str, int]]:
    """Every file of a run folder: its hash and modification time."""
    return {str(p.relative_to(run)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(run.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def refused(finished_digits_run, tmp_path_factory, teacher_cache) -> dict[str, tuple]:
    """Each changed resume, on its own copy of one finished run, all at once:
    case -> (process, run folder, fingerprint before)."""
    copies = {}
    for case in REFUSED:
        results = tmp_path_factory.mktemp(f"refused-{case}")
        copy_run(finished_digits_run, results / "three")
        copies[case] = (results, _fingerprint(results / "three"))
    with ThreadPoolExecutor(len(REFUSED)) as pool:
        procs = {case: pool.submit(search, copies[case][0], teacher_cache, *RUN_ARGS, change)
                 for case, change in REFUSED.items()}
        return {case: (procs[case].result(), copies[case][0] / "three", copies[case][1]) for case in REFUSED}


@pytest.mark.parametrize("case", list(REFUSED))
def test_resume_with_a_changed_setting_is_refused_in_one_line_and_touches_nothing(refused, case):
    proc, run, before = refused[case]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr[-3000:]
    message = lines[0].replace(str(run), "<run>")
    assert re.search(NAMED[case], message), f"the error does not name the changed {case}: {message}"
    untouched = [c for c in ("workload", "target", "evaluators") if c != case]
    assert not [c for c in untouched if re.search(NAMED[c], message)], f"names a part that did not change: {message}"
    assert _fingerprint(run) == before, "a refused resume changed the run folder"


def test_resume_force_resumes_a_changed_batch_size_and_keeps_the_earlier_rows(finished_digits_run, tmp_path,
                                                                              teacher_cache):
    copy_run(finished_digits_run, tmp_path / "three")
    before = pd.read_csv(tmp_path / "three" / "trials.csv", dtype=str)
    proc = search(tmp_path, teacher_cache, "trials=4", "workers=2", "run=three", "seed=0", "batch_size=16",
                  "resume_force=true", "remeasure=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = pd.read_csv(tmp_path / "three" / "trials.csv", dtype=str)
    assert len(after) == 4
    pd.testing.assert_frame_equal(after.iloc[:3].reset_index(drop=True), before)
    assert after.iloc[3]["batch_size"] == "16", "the resumed trial runs under the new batch size"


# --- energy is labelled an estimate where nothing meters it -------------------------------------------------

def _has_rapl() -> bool:
    return any(os.access(p, os.R_OK) for p in Path("/sys/class/powercap").glob("*/energy_uj"))


def test_estimated_energy_is_labelled_estimate_on_the_plot_axis_and_in_the_cards(finished_digits_run):
    if _has_rapl():
        pytest.skip("this machine has a RAPL energy counter: energy is measured, not estimated")
    run = finished_digits_run
    done = pd.read_csv(run / "trials.csv").query("state == 'COMPLETE'")
    assert len(done) >= 1 and (done["energy_source"] == "estimate").all()
    page = (run / "pareto.html").read_text().replace("\\u002f", "/")
    titles = re.findall(r'"title":\{"text":"([^"]*)"', page)  # the figure's, the legend's and every axis's
    energy = [t for t in titles if t.startswith("energy")]
    assert energy, f"no energy axis among the page's axis titles {titles}"
    assert all("estimate" in t for t in energy), energy
    cards = sorted((run / "models").glob("trial-*.json"))
    assert cards
    for path in cards:
        card = json.loads(path.read_text())
        assert card["metrics"]["energy_source"] == "estimate"
        assert "ESTIMATE" in card["measured"]["energy"], card["measured"]["energy"]
