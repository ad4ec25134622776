"""The hardware target, searched when a study spans several (``targets=[cpu,cpu_1t]``)."""

from __future__ import annotations

from typing import Any
from collections.abc import Sequence

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution

from search.runtime.target import Target
from search.core.schema import Field
from spaces._base import Knob


class TargetChoice(Knob):
    """Searches ``target`` over the study's targets; the baseline runs on the first.

    The driver adds it (first, before the other knobs) when several targets are given; the
    other knobs are narrowed to what any of the targets runs, and a drawn combination one
    target cannot run (4 bits on a target without int4, 4 threads on a 2-core target) is kept
    as a PRUNED row with that reason, never built, and re-asked at once with the nearest
    settings its target runs (each knob's ``project``).
    """

    name = "target"
    fields = (Field("target", kind="str", applies_to="runtime", doc="hardware target name"),)

    def __init__(self, targets: Sequence[Target]) -> None:
        self.names = [t.name for t in targets]

    def baseline(self) -> dict[str, Any]:
        return {"target": self.names[0]}

    def cover(self) -> list[dict[str, Any]]:
        return [{"target": name} for name in self.names]

    def distributions(self) -> dict[str, BaseDistribution]:
        return {"target": CategoricalDistribution(self.names)}

    def suggest(self, trial: optuna.Trial, chosen: dict[str, Any]) -> dict[str, Any]:
        return {"target": self.draw(trial, "target")}
