"""Runtime parallelism: the mode and its degree (see search/runtime/session_settings.py for each mode)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution

from search.core.errors import ConfigError
from search.runtime.session_settings import DEFAULT_MICRO_BATCHES, PARALLELISM, runtime_settings
from search.runtime.target import Target
from search.core.schema import Field
from spaces._base import Knob, check_choices, with_baseline


def modes_of(target: Target) -> tuple[str, ...]:
    return target.parallelism if target.parallelism is not None else PARALLELISM


class Parallelism(Knob):
    """Searches ``parallelism`` and its ``degree`` in [2, the target's thread budget].

    Every mode but ``sequential`` has a degree: threads inside operators (intra_op), threads
    running graph branches (inter_op), replicas (data_parallel), stages (pipeline); each keeps
    that many cores busy, so the target's thread budget bounds it. ``micro_batches`` is how
    many parts a pipeline splits a batch into (fixed, not searched). The column ``threads``
    repeats ``degree`` for one release (its old name).
    """

    name = "parallelism"
    fields = (
        Field("parallelism", kind="str", unset="sequential", applies_to="runtime",
              doc="sequential, intra_op, inter_op, data_parallel or pipeline"),
        Field("degree", kind="int", unset=1, applies_to="runtime", alias="threads",
              doc="the mode's degree: threads inside operators, branch threads, replicas or stages; 1 for sequential"),
        Field("micro_batches", kind="int", applies_to="runtime",
              doc="parts a batch is split into in a pipeline; empty for other modes"),
    )

    def __init__(self, modes: Sequence[str] = PARALLELISM, max_threads: int | None = None,
                 micro_batches: int = DEFAULT_MICRO_BATCHES) -> None:
        bad = [m for m in modes if m not in PARALLELISM]
        if bad or not modes:
            raise ConfigError(f"parallelism: {bad or 'empty'} not allowed; choose from {list(PARALLELISM)}")
        if int(micro_batches) != micro_batches or micro_batches < 1:
            raise ConfigError(f"parallelism: micro_batches must be an integer >= 1, got {micro_batches}")
        self.modes = list(modes)
        self.max_threads = max_threads
        self.micro_batches = int(micro_batches)

    def narrow(self, targets: Sequence[Target]) -> None:
        for target in targets:
            bad = [m for m in modes_of(target) if m not in PARALLELISM]
            if bad:
                raise ConfigError(f"target {target.name}: parallelism {bad} unknown; choose from {list(PARALLELISM)}")
        runs = [m for m in PARALLELISM if any(m in modes_of(t) for t in targets)]
        names = "+".join(t.name for t in targets)
        self.modes = with_baseline(self.name, check_choices(self.name, self.modes, runs, names), "sequential")
        widest = max(t.thread_budget for t in targets)
        self.max_threads = min(self.max_threads or widest, widest)
        if self.max_threads < 2:  # one core is all there is: every other mode would be sequential under another name
            self.modes = ["sequential"]

    def refuses(self, values: Mapping[str, Any], target: Target) -> str:
        mode, degree = values.get("parallelism", "sequential"), values.get("degree", 1)
        if mode not in modes_of(target):
            return f"target {target.name} does not run {mode} (it runs {list(modes_of(target))})"
        if degree > target.thread_budget:
            return f"target {target.name} has {target.thread_budget} thread(s); {mode} x{degree} needs more"
        return ""

    def project(self, params: dict[str, Any], target: Target) -> dict[str, Any]:
        """Sequential for a mode the target lacks (or on one core), a degree within its thread budget."""
        mode = params.get("parallelism")
        if mode is not None and (mode not in modes_of(target) or target.thread_budget < 2):
            params["parallelism"] = "sequential"
        if params.get("degree") is not None and params.get("parallelism") != "sequential":
            params["degree"] = min(params["degree"], target.thread_budget)
        return params

    def baseline(self) -> dict[str, Any]:
        return {"parallelism": "sequential"}

    def cover(self) -> list[dict[str, Any]]:
        return [{"parallelism": mode} for mode in self.modes]

    def distributions(self) -> dict[str, BaseDistribution]:
        found: dict[str, BaseDistribution] = {"parallelism": CategoricalDistribution(self.modes)}
        if self.modes != ["sequential"]:
            found["degree"] = IntDistribution(2, self.max_threads)
        return found

    def suggest(self, trial: optuna.Trial, chosen: dict[str, Any]) -> dict[str, Any]:
        # the degree is sampled on every trial (kept in NSGA-II's crossover) but applies to parallel modes only
        mode = self.draw(trial, "parallelism")
        degree = self.draw(trial, "degree") if "degree" in self.distributions() else 1
        return {"parallelism": mode, "degree": 1 if mode == "sequential" else degree,
                "micro_batches": self.micro_batches if mode == "pipeline" else None}

    def runtime(self, values: Mapping[str, Any]) -> dict[str, Any]:
        return runtime_settings(values.get("parallelism", "sequential"), values.get("degree", 1),
                                values.get("micro_batches"))
