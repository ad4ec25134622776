"""Multi-fidelity recovery: recovery training runs in rungs, and a candidate that cannot reach the front stops.

Asynchronous successive halving (ASHA's rungs, decided per trial as it reaches a rung, no waiting for
a cohort), with a multi-objective rule in place of ASHA's top-1/eta rank, since there is no single
score to rank by: after a rung (a quarter, a half of the epochs: ``recovery_rungs``), the candidate's
other objectives (latency, size, energy: they do not depend on the weights) are measured once on a
quick build of the student as it is, and its best plausible quality is its validation score so far
plus the largest gain any earlier trial made from that rung to its end, plus the largest gap between
an earlier trial's test and validation scores. If a member of the current front is at least that good
and better beyond measurement noise on every other objective, the candidate stops and is recorded as
PRUNED with that reason. Until ``RungHistory.MIN_TRIALS`` trials have recovered in full there is no
evidence of what a rung predicts, and nothing stops.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from search.core.attributes import Outcome
from search.trial.recovery import RungPlan


@dataclass
class RungHistory:
    """What finished trials showed of recovery: per rung the largest gain to the end, and the test-validation gap."""

    fractions: Sequence[float]
    epochs: int
    quality: str
    sign: int
    gains: dict[int, list[float]] = field(default_factory=dict)
    offsets: list[float] = field(default_factory=list)

    MIN_TRIALS = 3

    @property
    def rungs(self) -> list[int]:
        """The rung epochs: each fraction of the recovery epochs, at least 1, before the last."""
        return sorted({max(1, round(f * self.epochs)) for f in self.fractions} - {self.epochs, 0})

    def add(self, trace: Sequence[float], test_score: float | None) -> None:
        """One trial that recovered in full: its best validation score after each epoch (0: before training)."""
        if len(trace) != self.epochs + 1 or test_score is None:
            return
        final = trace[-1]
        for epoch in self.rungs:
            self.gains.setdefault(epoch, []).append(self.sign * (final - trace[epoch]))
        self.offsets.append(self.sign * (test_score - final))

    def plan(self, front: Sequence[Mapping[str, Any]], objectives: Sequence[tuple[str, str]],
             floors: Mapping[str, float]) -> RungPlan | None:
        """The plan for the next trial; None when no rung is configured or there is no evidence yet."""
        if not self.rungs or len(self.offsets) < self.MIN_TRIALS or not front:
            return None
        senses = {m: 1 if d == "maximize" else -1 for m, d in objectives if m != self.quality}
        members = [{m: float(row[m]) for m, _ in objectives} for row in front
                   if all(_finite(row.get(m)) for m, _ in objectives)]
        return RungPlan(self.rungs, self.quality, self.sign, {e: max(g) for e, g in self.gains.items()},
                        max(self.offsets), members, senses, {m: floors.get(m, 0.0) for m in senses})



def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False



def recovery_history(fractions: Sequence[float], workload: Any, objectives: Sequence[tuple[str, str]],
                     outcomes: Sequence[Outcome]) -> RungHistory | None:
    """The run's rung history, seeded with a resumed run's completed trials' outcomes; None when no rung
    applies (none configured, a bare ONNX model, nothing to recover, the task metric not an objective)."""
    quality = workload.metric.name
    if not fractions or workload.is_onnx or workload.distill_epochs < 2 or quality not in dict(objectives):
        return None
    history = RungHistory(fractions, workload.distill_epochs, quality,
                          1 if workload.metric.direction == "maximize" else -1)
    for outcome in outcomes:
        history.add(outcome.recovery, outcome.metrics.get(quality))
    return history
