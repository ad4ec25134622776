"""Runtime parallelism: ``sequential`` (one thread) or ``intra_op`` (N threads inside operators)."""

from __future__ import annotations

from typing import Any
from collections.abc import Sequence

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution

from search.errors import ConfigError
from search.target import KNOWN_PARALLELISM, Target
from spaces._base import Knob, check_choices, with_baseline


class Parallelism(Knob):
    """Searches ``parallelism`` and, for ``intra_op``, ``threads`` in [2, the target's thread budget]."""

    name = "parallelism"

    def __init__(self, modes: Sequence[str] = KNOWN_PARALLELISM, max_threads: int | None = None) -> None:
        bad = [m for m in modes if m not in KNOWN_PARALLELISM]
        if bad or not modes:
            raise ConfigError(f"parallelism: {bad or 'empty'} not allowed; choose from {list(KNOWN_PARALLELISM)}")
        self.modes = list(modes)
        self.max_threads = max_threads

    def narrow(self, target: Target) -> None:
        self.modes = with_baseline(self.name, check_choices(self.name, self.modes, target.parallelism, target.name),
                                   "sequential")
        budget = min(self.max_threads or target.thread_budget, target.thread_budget)
        self.max_threads = budget
        if budget < 2 and "intra_op" in self.modes:
            self.modes.remove("intra_op")  # one thread is all there is: intra_op would be sequential under another name

    def distributions(self) -> dict[str, BaseDistribution]:
        found: dict[str, BaseDistribution] = {"parallelism": CategoricalDistribution(self.modes)}
        if "intra_op" in self.modes:
            found["threads"] = IntDistribution(2, self.max_threads)
        return found

    def suggest(self, trial: optuna.Trial, chosen: dict[str, Any]) -> dict[str, Any]:
        # threads is sampled on every trial (kept in NSGA-II's crossover) but applies to intra_op only.
        mode = self.draw(trial, "parallelism")
        threads = self.draw(trial, "threads") if "intra_op" in self.modes else 1
        return {"parallelism": mode, "threads": threads if mode == "intra_op" else 1}
