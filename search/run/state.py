"""The state of one run, and bringing its folder up to date: shared by the driver and the quiet phase."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial

from evaluators import Evaluator
from evaluators._base import noise_intervals
from search.config import Settings
from search.results.tables import front_members, pareto_table, sync_models, target_fronts, trials_table, write_tables
from search.runtime.target import Target
from spaces import Knob


@dataclass
class Search:
    """Everything a run needs, built and checked from the config before any trial starts."""

    settings: Settings
    config: dict[str, Any]
    target: Target
    knobs: list[Knob]
    evaluators: list[Evaluator]
    objectives: list[tuple[str, str]]
    run_dir: Path
    finals: dict[int, dict[str, Any]] = field(default_factory=dict)  # the quiet phase's figures, by trial
    meter_note: str = ""  # which energy meter runs, said once at start
    targets: dict[str, Target] = field(default_factory=dict)  # every target of the study, by name; target is the first

    def target_config(self, name: str) -> dict[str, Any]:
        return self.config["target_configs"].get(name, self.config["target"])

    @property
    def intervals(self) -> dict[str, tuple[str, str, float]]:
        """What the front compares within noise: metric -> its interval columns and floor."""
        return noise_intervals(self.evaluators)


def update_run_folder(search: Search, trials: list[FrozenTrial], new_models: dict[int, bytes], tables: bool = True,
               refresh_cards: bool = False):
    """Bring the tables and models up to date (plots are drawn once, at the end, by the report).
    New front members' models are written at once (the bytes exist only in memory); the CSV
    views of study.db may be skipped between intervals. Returns the table and the members:
    the overall front, plus each target's front in a study across targets."""
    table = trials_table(trials, search.finals)
    front = pareto_table(table, search.objectives, search.intervals)
    per_target = target_fronts(table, search.objectives, search.intervals)
    if tables:
        write_tables(search.run_dir, table, front, per_target)
    members = front_members(front, per_target)
    sync_models(search.run_dir, members, new_models, search.config, refresh_cards)
    return table, members


def say(message: str) -> None:
    """One line to the user, on stderr (stdout carries the summary)."""
    print(message, file=sys.stderr, flush=True)
