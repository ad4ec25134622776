"""The worker's side of the recovery rungs: a training knob calls the watch after every epoch, and at a rung
the watch asks the driver's plan whether the candidate can still reach the front (search/run/rungs.py
keeps what finished trials showed, and makes the plan a trial carries).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

MARGIN = 0.1  # the observed largest gain is stretched by this share: a bound, not an average


class StopRecovery(Exception):
    """Raised after a rung by a candidate that cannot reach the front; the trial is PRUNED with this reason."""



@dataclass
class RungPlan:
    """What a worker needs to decide at a rung (plain data: it crosses the Ray boundary with the trial).

    Attributes:
        rungs: recovery epochs after which the candidate may stop.
        quality: the metric recovery improves (the workload's), and ``sign`` +1 to maximize it, -1 to minimize.
        gains: rung epoch -> the largest improvement (in ``sign`` units) seen from that epoch to the end.
        offset: the largest (test - final validation) score gap seen, in ``sign`` units.
        front: the current front's objective values, one dict per member.
        senses: each other objective -> +1 (maximize) or -1 (minimize).
        floors: each other objective -> the relative difference within which two figures tie.
    """

    rungs: list[int]
    quality: str
    sign: int
    gains: dict[int, float]
    offset: float
    front: list[dict[str, float]]
    senses: dict[str, int]
    floors: dict[str, float] = field(default_factory=dict)

    def best_plausible(self, epoch: int, best_val: float) -> float:
        return best_val + self.sign * (self.gains.get(epoch, 0.0) * (1 + MARGIN) + self.offset)

    def verdict(self, epoch: int, epochs: int, best_val: float, figures: Mapping[str, float]) -> str:
        """Why the candidate stops after ``epoch`` ("" when it goes on)."""
        plausible = self.best_plausible(epoch, best_val)
        for member in self.front:
            if self._beats(member, plausible, figures):
                shown = ", ".join(f"{m} {figures[m]:.4g} vs {member[m]:.4g}" for m in self.senses)
                return (f"stopped after recovery epoch {epoch} of {epochs}: at best {self.quality} {plausible:.4f}, "
                        f"and a front member is at least as good with {self.quality} {member[self.quality]:.4f} "
                        f"and better on every other objective ({shown})")
        return ""

    def _beats(self, member: Mapping[str, float], plausible: float, figures: Mapping[str, float]) -> bool:
        if self.sign * member[self.quality] < self.sign * plausible:
            return False
        for metric, sense in self.senses.items():
            mine, theirs = figures.get(metric), member.get(metric)
            if mine is None or theirs is None or not math.isfinite(mine):
                return False
            if sense * theirs < sense * mine + self.floors.get(metric, 0.0) * abs(mine):
                return False
        return True



@dataclass
class RecoveryWatch:
    """The worker's side: records the validation trace of a recovery, and at each rung asks the plan."""

    plan: RungPlan | None
    preview: Callable[[Any], dict[str, float]]  # the other objectives measured on a quick build of a student
    trace: list[float] = field(default_factory=list)
    figures: dict[str, float] | None = None

    def __call__(self, model: Any, epoch: int, epochs: int, best_val: float) -> None:
        if epoch == 0:
            self.trace = []
        self.trace.append(best_val)
        if self.plan is None or epoch not in self.plan.rungs:
            return
        if self.figures is None:  # measured once: the architecture, not the weights, sets them
            self.figures = self.preview(model)
        reason = self.plan.verdict(epoch, epochs, best_val, self.figures)
        if reason:
            raise StopRecovery(reason)
