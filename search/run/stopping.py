"""When a search ends before ``trials``: a time budget, or a front that stopped growing.

``time_budget`` (seconds of this driver's search loop) stops asking for new trials once spent;
the trials in flight finish (``trial_timeout_s`` bounds them), so nothing built is thrown away.

``stall_trials=N`` stops once N trials in a row have finished without growing the front's
hypervolume. A completed trial grows the hypervolume (with the reference point worse than every
trial, as the run's history plot puts it) exactly when no completed trial so far is at least as
good in every objective: so the rule keeps the exact non-dominated set and asks that one
question of each finished trial, at a cost that does not grow with the study.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class ExactFront:
    """The completed trials no other is at least as good as in every objective, as losses (lower is better)."""

    losses: list[np.ndarray] = field(default_factory=list)

    def add(self, loss: np.ndarray) -> bool:
        """Takes a completed trial's losses; True when it grew the hypervolume (it entered the front)."""
        if any(np.all(member <= loss) for member in self.losses):
            return False
        self.losses = [m for m in self.losses if not np.all(loss <= m)] + [loss]
        return True


def as_loss(values: Sequence[float], directions: Sequence[str]) -> np.ndarray:
    return np.array([-v if d == "maximize" else v for v, d in zip(values, directions, strict=True)], dtype=float)


@dataclass
class StopRules:
    """The optional early ends of a search: ``time_budget_s`` and ``stall_trials`` (None: off)."""

    time_budget_s: float | None
    stall_trials: int | None
    directions: Sequence[str]
    started: float = field(default_factory=time.monotonic)
    front: ExactFront = field(default_factory=ExactFront)
    since_growth: int = 0

    def seed(self, completed_values: Sequence[Sequence[float]]) -> None:
        """The front of the trials completed before this driver (a resume): the stall counts from here."""
        for values in completed_values:
            self.front.add(as_loss(values, self.directions))

    def finished(self, values: Sequence[float] | None) -> None:
        """A trial finished: its objective values, or None when it failed."""
        grew = values is not None and self.front.add(as_loss(values, self.directions))
        self.since_growth = 0 if grew else self.since_growth + 1

    def reason(self) -> str:
        """Why to stop asking for trials now ("" to go on)."""
        if self.time_budget_s is not None and time.monotonic() - self.started >= self.time_budget_s:
            return f"time_budget={self.time_budget_s:g} s spent"
        if self.stall_trials is not None and self.since_growth >= self.stall_trials:
            return f"the front's hypervolume did not grow in the last {self.since_growth} trials (stall_trials)"
        return ""
