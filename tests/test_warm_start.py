"""warm_start=results/<run>: a new run begins with the earlier front, moved onto its target and measured again;
and time_budget= ends it on time (one search checks both: each costs a run of its own otherwise)."""

from __future__ import annotations

import pandas as pd
import pytest

from search.core import attributes
from search.strategy.study import load_run_study
from tests.conftest import search, tried

pytestmark = pytest.mark.slow


def test_a_new_run_on_another_target_starts_from_the_earlier_front(finished_digits_run, tmp_path, teacher_cache):
    earlier = pd.read_csv(finished_digits_run / "pareto.csv")
    proc = search(tmp_path, teacher_cache, "trials=40", "workers=2", "run=warm", "cover=false", "+target=cpu_1t",
                  f"warm_start={finished_digits_run}", "time_budget=8", "remeasure=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"member(s) of {finished_digits_run}'s front queued" in proc.stderr
    study = load_run_study(tmp_path / "warm")
    warm = [t for t in study.trials if attributes.warm_origin(t) is not None]
    members = set(earlier.loc[earlier["state"] == "COMPLETE", "trial"].astype(int))
    assert 1 <= len(warm) <= len(members)
    old = {t.number: t for t in load_run_study(finished_digits_run).trials}
    ran = [t for t in warm if t.state.name != "WAITING"]  # the budget may end the run before a queued one is asked
    assert ran and ran == warm[:len(ran)], "queued in order, asked in order"
    for trial in ran:
        source = old[int(attributes.warm_origin(trial).rsplit(" ", 1)[1])]
        assert source.number in members and not attributes.is_baseline(source), "each run measures its own baseline"
        # measured again, on the new target, with what it runs: one core is sequential only
        assert trial.state.name == "COMPLETE" and trial.params["parallelism"] == "sequential"
        assert all(trial.params[k] == v for k, v in source.params.items() if k not in ("parallelism", "degree"))
    table = pd.read_csv(tmp_path / "warm" / "trials.csv")
    assert set(table["target"]) == {"cpu_1t"}
    # the budget ended it: no new trial asked after 8 s, those in flight finished, the reason said twice
    # (a draw that builds another prune value's model is re-asked: a PRUNED row of a trial that never ran)
    ran_rows = tried(table)
    assert 1 + len(ran) <= len(ran_rows) < 40 and (ran_rows["state"] == "COMPLETE").all()
    assert "stopping: time_budget=8 s spent" in proc.stderr
    assert "stopped early: time_budget=8 s spent" in proc.stdout
