"""Runtime parallelism: the mode and its degree (see search/session_settings.py for each mode)."""

from __future__ import annotations

from typing import Any
from collections.abc import Sequence

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution

from search.errors import ConfigError
from search.runtime.session_settings import DEFAULT_MICRO_BATCHES
from search.runtime.target import KNOWN_PARALLELISM, Target
from spaces._base import Knob, check_choices, with_baseline


class Parallelism(Knob):
    """Searches ``parallelism`` and its degree ``threads`` in [2, the target's thread budget].

    Every mode but ``sequential`` has a degree: threads inside operators (intra_op), threads
    running graph branches (inter_op), replicas (data_parallel), stages (pipeline); each keeps
    that many cores busy, so the target's thread budget bounds it. ``micro_batches`` is how
    many parts a pipeline splits a batch into (fixed, not searched).
    """

    name = "parallelism"

    def __init__(self, modes: Sequence[str] = KNOWN_PARALLELISM, max_threads: int | None = None,
                 micro_batches: int = DEFAULT_MICRO_BATCHES) -> None:
        bad = [m for m in modes if m not in KNOWN_PARALLELISM]
        if bad or not modes:
            raise ConfigError(f"parallelism: {bad or 'empty'} not allowed; choose from {list(KNOWN_PARALLELISM)}")
        if int(micro_batches) != micro_batches or micro_batches < 1:
            raise ConfigError(f"parallelism: micro_batches must be an integer >= 1, got {micro_batches}")
        self.modes = list(modes)
        self.max_threads = max_threads
        self.micro_batches = int(micro_batches)

    def narrow(self, target: Target) -> None:
        self.modes = with_baseline(self.name, check_choices(self.name, self.modes, target.parallelism, target.name),
                                   "sequential")
        budget = min(self.max_threads or target.thread_budget, target.thread_budget)
        self.max_threads = budget
        if budget < 2:  # one core is all there is: every other mode would be sequential under another name
            self.modes = ["sequential"]

    def baseline(self) -> dict[str, Any]:
        return {"parallelism": "sequential"}

    def cover(self) -> list[dict[str, Any]]:
        return [{"parallelism": mode} for mode in self.modes]

    def distributions(self) -> dict[str, BaseDistribution]:
        found: dict[str, BaseDistribution] = {"parallelism": CategoricalDistribution(self.modes)}
        if self.modes != ["sequential"]:
            found["threads"] = IntDistribution(2, self.max_threads)
        return found

    def suggest(self, trial: optuna.Trial, chosen: dict[str, Any]) -> dict[str, Any]:
        # threads is sampled on every trial (kept in NSGA-II's crossover) but applies to parallel modes only.
        mode = self.draw(trial, "parallelism")
        degree = self.draw(trial, "threads") if "threads" in self.distributions() else 1
        return {"parallelism": mode, "threads": 1 if mode == "sequential" else degree,
                "micro_batches": self.micro_batches if mode == "pipeline" else None}
