"""The state of one run, and bringing its folder up to date: shared by the driver and the re-timing phase."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Callable

import pandas as pd

from optuna.trial import FrozenTrial

from evaluators import Evaluator
from search.core import attributes
from search.core.attributes import Final
from search.core.messages import TrialResult
from search.config import Settings
from search.core.files import write_text
from search.results.intervals import run_spreads
from search.results.card import MACHINES_FILE, read_machines, sync_models
from search.results.tables import (FrontTracker, GrowingFront, front_members, target_fronts, trial_row, trials_table,
                                   write_tables)
from search.run.rungs import RungHistory
from search.trial.recovery import RungPlan
from search.runtime.target import Target
from search.core.schema import Schema
from spaces import Knob


@dataclass
class Search:
    """Everything a run needs, built and checked from the config before any trial starts."""

    settings: Settings
    config: dict[str, Any]
    target: Target
    knobs: list[Knob]
    evaluators: list[Evaluator]
    schema: Schema
    run_dir: Path
    finals: dict[int, Final] = field(default_factory=dict)  # the re-timing phase's figures, by trial
    notes: list[str] = field(default_factory=list)  # said once at start (which energy meter runs)
    targets: dict[str, Target] = field(default_factory=dict)  # every target of the study, by name; target is the first
    rows: dict[int, tuple[tuple, dict[str, Any]]] = field(default_factory=dict)  # finished trials' rows, kept
    front_tracker: FrontTracker = field(default_factory=FrontTracker)
    growing: dict[str, GrowingFront] = field(default_factory=dict)  # "" the overall front; a target's by name
    machines: dict[str, dict[str, Any]] = field(default_factory=dict)  # each node's machine, as machines.json keeps
    rungs: RungHistory | None = None  # what recovery rungs learned so far (None: no rung applies)

    def rung_plan(self) -> RungPlan | None:
        """The next trial's recovery rungs, against the front as it stands."""
        if self.rungs is None or "" not in self.growing:
            return None
        floors = {metric: interval[2] for metric, interval in self.schema.intervals.items()}
        return self.rungs.plan(self.growing[""].members(), self.objectives, floors)

    def target_config(self, name: str) -> dict[str, Any]:
        return self.config["target_configs"].get(name, self.config["target"])

    @property
    def objectives(self) -> list[tuple[str, str]]:
        return list(self.schema.objectives)


def update_run_folder(search: Search, trials: list[FrozenTrial], new_models: dict[int, bytes], tables: bool = True,
                      refresh_cards: bool = False):
    """Bring the tables and models up to date (plots are drawn once, at the end, by the report).
    New front members' models are written at once (the bytes exist only in memory); the CSV
    views of study.db may be skipped between intervals. Returns the table and the members:
    the overall front, plus each target's front in a study across targets."""
    table = trials_table(trials, search.schema, search.finals, search.rows)
    front = search.front_tracker.front(table, search.schema, version=frozenset(search.finals))
    per_target = target_fronts(table, search.schema)
    if tables:
        write_tables(search.run_dir, table, front, per_target)
    members = front_members(front, per_target)
    sync_models(search.run_dir, members, new_models, search.config, search.schema, refresh_cards,
                search.machines, _baseline_row(search), _spreads(search))
    return table, members


def _baseline_row(search: Search) -> dict | None:
    """The completed fp32 baseline's row, as the tables hold it (re-timed figures once re-timed), if any."""
    return next((row for _, row in search.rows.values() if row["baseline"] and row["state"] == "COMPLETE"), None)


def _spreads(search: Search) -> dict:
    """The run's spreads between re-timing sessions, from the rows as made (the tables drop what they rest on)."""
    return run_spreads([row for _, row in search.rows.values()], search.schema)


def start_growing_fronts(search: Search, trials: list[FrozenTrial]) -> None:
    """Seed the fronts the search loop grows one trial at a time (a resumed run's completed trials)."""
    table = trials_table(trials, search.schema, search.finals, search.rows)
    search.growing = {"": GrowingFront.of(table, search.schema)}
    if len(search.targets) > 1:
        search.growing.update({name: GrowingFront.of(table[table["target"] == name], search.schema)
                               for name in search.targets})


def take_finished(search: Search, trial: FrozenTrial, model_bytes: bytes | None, tables_due: bool,
                  all_trials: Callable[[], list[FrozenTrial]]) -> pd.DataFrame:
    """Bring the run folder up to date with one finished trial, at a cost that does not grow with
    the study: its row is made once, the fronts grow by it, new members' models are written at once;
    the table of every trial is made only when the CSV views are due. Returns the overall front."""
    row = trial_row(trial, search.schema, search.finals.get(trial.number))
    if search.schema.constraints:
        row = search.schema.constraints.marked(row, _baseline_row(search) or (row if row["baseline"] else None))
    search.rows[trial.number] = ((trial.state, trial.number in search.finals), row)
    changed = False
    if row["state"] == "COMPLETE" and row["baseline"] and search.schema.constraints:
        # a drop limit is measured from the baseline: rows that completed before it are marked again
        start_growing_fronts(search, all_trials())
        changed = True
    elif row["state"] == "COMPLETE":
        changed = search.growing[""].add(row, search.schema)
        if row["target"] in search.growing and len(search.growing) > 1:
            changed = search.growing[row["target"]].add(row, search.schema) or changed
    front = search.growing[""].table(search.schema)
    per_target = {name: f.table(search.schema) for name, f in search.growing.items() if name}
    if tables_due:
        write_tables(search.run_dir, trials_table(all_trials(), search.schema, search.finals, search.rows), front,
                     per_target)
    if changed:  # models/ holds the fronts' members: only a change of members changes it
        new_models = {trial.number: model_bytes} if model_bytes else {}
        sync_models(search.run_dir, front_members(front, per_target), new_models, search.config, search.schema,
                    machines=search.machines, baseline=_baseline_row(search),
                    spreads=_spreads(search))
    return front


def trial_constraints(search: Search, trial: FrozenTrial, result: TrialResult) -> dict[str, float]:
    """A measured trial's miss of each of the run's limits (search/core/constraints.py), as Optuna's samplers read
    them (0: met); {} unconstrained or unmeasured. A drop limit reads the baseline's search-time figures (before
    the baseline completes, it is not held against a trial)."""
    constraints = search.schema.constraints
    if not constraints or result.error or not result.metrics:
        return {}
    row = {**attributes.candidate_of(trial), **result.metrics}
    baseline = row if attributes.is_baseline(trial) else _baseline_search_row(search)
    return {limit.key: miss for limit, miss in zip(constraints.limits, constraints.misses(row, baseline), strict=True)}


def _baseline_search_row(search: Search) -> dict | None:
    """The baseline's row with its search-time figures (what every other trial's search-time figures are against)."""
    row = _baseline_row(search)
    if row is None:
        return None
    return {**row, **{m: row.get(f"search_{m}", row.get(m)) for m in search.schema.timed}}


def load_machines(search: Search) -> None:
    """The nodes' machines a resumed run saw before (JSON: nothing from a run folder is unpickled)."""
    search.machines = read_machines(search.run_dir)  # an unreadable one is rewritten whole as nodes report again


def note_machine(search: Search, result: TrialResult) -> None:
    """Keep the machine of a node seen for the first time: a card names the machine that measured its model."""
    node, machine = result.node, result.machine
    if node and machine and search.machines.get(node) != machine:
        if node not in search.machines and (machine.get("niceness") or 0) > 0:
            say(f"node {node}: trials run at nice {machine['niceness']}, so any other process there takes their core "
                f"first and timings read slower than a deployed model's; start its Ray with RAY_worker_niceness=0")
        search.machines[node] = machine
        write_text(search.run_dir / MACHINES_FILE, json.dumps(search.machines, indent=2))


def say(message: str) -> None:
    """One line to the user, on stderr (stdout carries the summary)."""
    print(message, file=sys.stderr, flush=True)
