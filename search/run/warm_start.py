"""``warm_start=results/<run>``: a new run begins with an earlier run's Pareto front, measured again here.

The earlier front's parameters are queued right after the baseline and the cover trials, each
moved to what this run's space and target hold (a precision the new target lacks becomes the
nearest it runs; a knob the new space lacks is left to the sampler). They are then built and
measured like any trial, so every row of the new run carries figures measured in it, on its
target, under its software: an earlier run's latency on another target says nothing about this
one. The sampler starts from the best known trade-offs instead of from random draws. Only the
earlier run's study.db and pareto.csv are read (SQLite and CSV: nothing is unpickled).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from search.core import attributes
from search.core.errors import ConfigError
from search.run.dispatcher import within_space
from search.run.state import Search
from search.strategy.study import load_run_study
from spaces import space
from spaces import projected


def earlier_front(run: Path) -> list[tuple[int, dict[str, Any]]]:
    """(trial number, params) of each completed member of ``run``'s front, in trial order, but its baseline:
    every run measures its own (re-queued, it would repeat this run's trial 0)."""
    if not (run / "study.db").exists() or not (run / "pareto.csv").exists():
        raise ConfigError(f"warm_start={run}: not a finished run folder (it needs study.db and pareto.csv)")
    front = pd.read_csv(run / "pareto.csv")
    numbers = sorted(int(n) for n in front.loc[front["state"] == "COMPLETE", "trial"])
    try:
        trials = {t.number: t for t in load_run_study(run).get_trials(deepcopy=False)}
    except Exception as exc:  # noqa: BLE001 - a foreign or corrupt database: one line, whatever Optuna raises
        raise ConfigError(f"warm_start={run}: cannot read its study.db ({type(exc).__name__})") from None
    return [(n, dict(trials[n].params)) for n in numbers if n in trials and not attributes.is_baseline(trials[n])]


def warm_params(search: Search, run: Path) -> list[tuple[int, dict[str, Any]]]:
    """The earlier front's params moved into this run's space and onto its targets, without repeats."""
    distributions = space(search.knobs)
    found, seen = [], set()
    for number, params in earlier_front(run):
        target = search.targets.get(params.get("target"), search.target)
        moved = within_space(projected(search.knobs, params, target), distributions)
        key = tuple(sorted(moved.items(), key=lambda item: item[0]))
        if moved and key not in seen:
            seen.add(key)
            found.append((number, moved))
    return found
