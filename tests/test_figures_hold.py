"""Figures that hold when measured again: the baseline re-timed with the front, and intervals that cover a new
session (search/results/intervals.py)."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time

import pandas as pd
import pytest

from search.core.schema import Column, Field, Schema
from search.core import attributes
from search.results.intervals import SESSIONS, Spread, run_spreads, session_mean, spread_note, t_95, widened
from search.runtime.node_load import busy_cores, wait_until_quiet
from search.run.dispatcher import share_of
from search.run.retime import RETIME_MAX_SESSIONS, SPREAD_DEGREES, sessions_for
from search.strategy.study import load_run_study

SCHEMA = Schema(fields=(Field("target"), Field("batch_size")),
                metrics=(Column("latency_ms"), Column("latency_ci_low_ms"), Column("latency_ci_high_ms"),
                         Column("size_bytes")),
                objectives=(("latency_ms", "minimize"), ("size_bytes", "minimize")),
                intervals={"latency_ms": ("latency_ci_low_ms", "latency_ci_high_ms", 0.02)}, timed=("latency_ms",))


def row(search_ms: float, final_ms: float, final: bool = True) -> dict:
    return {"final": final, "search_latency_ms": search_ms, "latency_ms": final_ms,
            "latency_ci_low_ms": final_ms * 0.999, "latency_ci_high_ms": final_ms * 1.001}


def test_the_spread_is_the_rms_of_the_log_ratios_of_the_trials_timed_twice():
    rows = [row(1.1, 1.0), row(1.0, 1.1), row(2.0, 2.0), row(5.0, 1.0, final=False)]  # the last was not re-timed
    spread = run_spreads(rows, SCHEMA)["latency_ms"]
    assert spread.pairs == 3
    assert spread.rms_log == pytest.approx(math.sqrt(2 * math.log(1.1) ** 2 / 3))
    assert spread.factor == pytest.approx(math.exp(t_95(3) * spread.rms_log))


def test_two_re_timing_sessions_are_the_pairs_where_a_run_kept_them():
    rows = [{**row(1.0, 1.0), SESSIONS: [{"latency_ms": 1.0}, {"latency_ms": 1.05}]},
            {**row(2.0, 2.0), SESSIONS: [{"latency_ms": 2.0}, {"latency_ms": 2.0}]}]
    spread = run_spreads(rows, SCHEMA)["latency_ms"]
    assert spread.pairs == 2 and spread.rms_log == pytest.approx(math.sqrt(math.log(1.05) ** 2 / 2))
    assert spread.sessions == 2
    one = Spread("latency_ms", 2, spread.rms_log)  # a new session moves less from a mean of two than from one
    assert spread.factor == pytest.approx(math.exp(t_95(2) * spread.rms_log * math.sqrt(3 / 4)))
    assert one.factor > spread.factor
    failed_second = {**row(3.0, 3.0), SESSIONS: [{"latency_ms": 3.0}]}
    assert run_spreads([*rows, failed_second], SCHEMA)["latency_ms"].sessions == 1, "the fewest sessions rule"


def test_a_re_timed_figure_is_the_geometric_mean_of_its_sessions():
    first = {"latency_ms": 2.0, "throughput_ips": 4.0, "accuracy": 0.5, "latency_repeats": 50, "energy_mj": 0.0}
    second = {"latency_ms": 8.0, "throughput_ips": 1.0, "accuracy": 0.5, "latency_repeats": 60, "energy_mj": 1.0}
    mean = session_mean([first, second], ("latency_ms", "throughput_ips", "energy_mj"))
    assert mean == pytest.approx({"latency_ms": 4.0, "throughput_ips": 2.0}), "a zero figure is not averaged"
    assert mean["throughput_ips"] * mean["latency_ms"] == pytest.approx(8.0), "batch / p50 still holds"


def test_few_pairs_widen_the_interval_and_never_below_the_session_or_the_floor():
    assert t_95(1) > t_95(3) > t_95(30) > 1.96 and t_95(500) == 1.96
    assert t_95(11) == t_95(10), "between tabled degrees of freedom, the wider quantile"
    narrow = {"latency_ms": Spread("latency_ms", 10, 0.0001)}  # hardly moved: the 2 % floor holds
    out = widened(row(1.0, 1.0), narrow, SCHEMA)
    assert out["latency_ci_low_ms"] == pytest.approx(1 / 1.02) and out["latency_ci_high_ms"] == pytest.approx(1.02)
    wide = {"latency_ms": Spread("latency_ms", 4, 0.05)}
    out = widened(row(1.0, 2.0), wide, SCHEMA)
    factor = math.exp(t_95(4) * 0.05)
    assert out["latency_ci_low_ms"] == pytest.approx(2 / factor)
    assert out["latency_ci_high_ms"] == pytest.approx(2 * factor)
    once = row(1.0, 1.0, final=False)
    assert widened(once, wide, SCHEMA) == once, "a row timed once keeps its session's interval"


def test_the_baseline_is_re_timed_and_the_ratios_are_against_its_re_timed_figures(finished_digits_run,
                                                                                    digits_run_output):
    table = pd.read_csv(finished_digits_run / "trials.csv")
    baseline = table[table["baseline"]].iloc[0]
    assert bool(baseline["final"]), "the re-timing phase re-times the baseline, on the front or not"
    stdout, stderr = digits_run_output
    assert f"vs fp32 baseline (trial {int(baseline['trial'])}, re-timed with the front)" in stdout
    assert "re-timing the baseline (trial 0)" in stderr
    front = pd.read_csv(finished_digits_run / "pareto.csv")
    for trial in front["trial"]:
        card = json.loads((finished_digits_run / "models" / f"trial-{trial}.json").read_text())
        versus = card["versus_baseline"]
        assert versus["trial"] == baseline["trial"] and versus["figures"] == "re-timed with the front"
        member = front[front["trial"] == trial].iloc[0]
        assert versus["latency_ms"]["baseline"] == pytest.approx(baseline["latency_ms"])
        assert versus["latency_ms"]["baseline_over_model"] == pytest.approx(baseline["latency_ms"]
                                                                            / member["latency_ms"])
        assert card["search_metrics"]["latency_ms"] == pytest.approx(member["search_latency_ms"])


def test_a_re_timed_cards_interval_covers_a_new_session_and_says_how(finished_digits_run):
    finals = attributes.finals_of(load_run_study(finished_digits_run))
    sessions = sessions_for(len(finals))
    assert finals and all(1 + len(f.sessions) == sessions for f in finals.values()), "each had the sessions"
    logs = [[math.log(s["latency_ms"]) for s in [f.metrics, *f.sessions]] for f in finals.values()]
    squares = sum((x - sum(one) / len(one)) ** 2 for one in logs for x in one)
    dof = len(finals) * (sessions - 1)
    assert dof >= min(SPREAD_DEGREES, len(finals) * (RETIME_MAX_SESSIONS - 1))
    table = pd.read_csv(finished_digits_run / "trials.csv")
    factor = max(math.exp(t_95(dof) * math.sqrt(2 * squares / dof) * math.sqrt((1 + 1 / sessions) / 2)), 1.02)
    for _, member in table[table["final"]].iterrows():
        final = finals[member["trial"]]
        mean = math.exp(sum(math.log(s["latency_ms"]) for s in [final.metrics, *final.sessions]) / sessions)
        assert member["latency_ms"] == pytest.approx(mean), "the re-timed figure is the mean of the sessions"
        assert member["latency_ci_low_ms"] <= member["latency_ms"] / factor * (1 + 1e-9)
        assert member["latency_ci_high_ms"] >= member["latency_ms"] * factor * (1 - 1e-9)
        card_path = finished_digits_run / "models" / f"trial-{member['trial']}.json"
        if card_path.exists():
            note = json.loads(card_path.read_text())["intervals"]["latency_ms"]
            assert note["pairs"] == len(finals) and note["degrees_of_freedom"] == dof
            assert "new timing session" in note["meaning"]


def test_what_the_figures_moved_since_the_search_is_reported_but_not_in_the_interval():
    steady = [{**row(1.1, 1.0), SESSIONS: [{"latency_ms": 1.0}, {"latency_ms": 1.0}]},
              {**row(1.0, 1.1), SESSIONS: [{"latency_ms": 1.1}, {"latency_ms": 1.1}]}]
    spread = run_spreads(steady, SCHEMA)["latency_ms"]
    assert spread.rms_log == 0.0 and spread.moment_rms_log == pytest.approx(math.log(1.1))
    assert spread.factor == 1.0, "the sessions agree: the search-time figures, beside builds, do not widen it"
    meaning = spread_note({"latency_ms": spread}, ["latency_ms"])["latency_ms"]["meaning"]
    assert "10.0% (root mean square) from the search's timings" in meaning and "not in the interval" in meaning


def test_few_re_timed_trials_get_more_sessions_so_that_the_spread_rests_on_enough_degrees_of_freedom():
    assert sessions_for(30) == sessions_for(10) == 2
    assert sessions_for(5) == 3 and sessions_for(4) == 4 and sessions_for(1) == RETIME_MAX_SESSIONS
    assert all(n * (sessions_for(n) - 1) >= SPREAD_DEGREES for n in range(4, 40))


def test_three_sessions_pool_their_scatter_around_each_rows_mean():
    rows = [{**row(1.0, 1.0), SESSIONS: [{"latency_ms": 1.0}, {"latency_ms": 1.1}, {"latency_ms": 1.0}]},
            {**row(2.0, 2.0), SESSIONS: [{"latency_ms": 2.0}, {"latency_ms": 2.0}, {"latency_ms": 2.0}]}]
    spread = run_spreads(rows, SCHEMA)["latency_ms"]
    logs = [0.0, math.log(1.1), 0.0]
    squares = sum((x - sum(logs) / 3) ** 2 for x in logs)
    assert spread.degrees == 4 and spread.sessions == 3 and spread.pairs == 2
    assert spread.rms_log == pytest.approx(math.sqrt(2 * squares / 4))
    assert spread.factor == pytest.approx(math.exp(t_95(4) * spread.rms_log * math.sqrt((1 + 1 / 3) / 2)))


def test_the_private_rays_trials_are_measured_at_nice_0_as_a_deployed_model_runs(finished_digits_run,
                                                                                  digits_run_output):
    machines = json.loads((finished_digits_run / "machines.json").read_text())
    assert machines and all(m["niceness"] == 0 for m in machines.values()), "Ray's default is nice 15"
    assert "RAY_worker_niceness" not in digits_run_output[1], "no warning where nothing is niced"


def test_each_re_timing_session_runs_in_a_fresh_process_ready_before_it_times(finished_digits_run, digits_run_output):
    # the first round's sessions (a re-timed figure can reshape the front, and a second round re-times newcomers)
    log = digits_run_output[1].split("re-timing phase: re-timing")[1]
    started = re.findall(r"re-timing phase: session (\d+)/(\d+) on cpu in a fresh process \(pid (\d+);", log)
    sessions = int(started[0][1]) if started else 0
    assert sessions >= 2 and [int(s) for s, _, _ in started] == list(range(1, sessions + 1)), log
    assert len({pid for *_, pid in started}) == sessions, "a process of its own for each session"
    ready = re.search(r"(\d+) fresh process\(es\) for (\d+) session\(s\) ready in [\d.]+ s \(pids ([\d, ]+)\)", log)
    assert ready and int(ready.group(1)) == int(ready.group(2)) == sessions, log
    assert sorted(ready.group(3).split(", ")) == sorted(pid for *_, pid in started), "started together, up front"
    assert log.index(ready.group(0)) < log.index("session 1/") < log.index(f"session 1/{sessions} · trial")


def test_a_wait_for_a_quiet_node_reads_the_real_load_and_ends_by_its_limit():
    load = busy_cores(0.2)
    assert load is None or 0 <= load <= (os.cpu_count() or 1)
    assert wait_until_quiet(0).describe() == "no wait for a quiet node"
    started = time.perf_counter()
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # one core busy besides this process
    try:
        time.sleep(0.3)
        settled = wait_until_quiet(1.0)
    finally:
        burner.kill()
    if settled.busy_cores is not None:  # Linux
        assert not settled.quiet and settled.busy_cores > 0.5, settled
        assert 1.0 <= settled.waited_s < 2.0 and "still busy" in settled.describe()
    assert time.perf_counter() - started < 3


def test_the_sessions_processes_share_a_trials_ray_resources_in_amounts_ray_takes():
    assert share_of(1, 4) == 0.25 and share_of(1, 3) == 0.3333 and share_of(0, 3) == 0.0
    assert share_of(4, 3) == 1.0 and share_of(8, 2) == 4.0, "above 1, whole numbers"
    assert 3 * share_of(1, 3) <= 1 and 3 * share_of(2, 3) <= 2, "all of them fit where one trial does"
