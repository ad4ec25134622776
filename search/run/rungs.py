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
from collections.abc import Callable, Mapping, Sequence
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


def recovery_history(fractions: Sequence[float], workload: Any, objectives: Sequence[tuple[str, str]],
                     outcomes: Sequence[Mapping[str, Any]]) -> RungHistory | None:
    """The run's rung history, seeded with a resumed run's completed trials' outcomes; None when no rung
    applies (none configured, a bare ONNX model, nothing to recover, the task metric not an objective)."""
    quality = workload.metric.name
    if not fractions or workload.is_onnx or workload.distill_epochs < 2 or quality not in dict(objectives):
        return None
    history = RungHistory(fractions, workload.distill_epochs, quality,
                          1 if workload.metric.direction == "maximize" else -1)
    for outcome in outcomes:
        history.add(outcome.get("recovery") or [], (outcome.get("metrics") or {}).get(quality))
    return history
