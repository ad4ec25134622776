"""A quality floor (and any other limit) the search honours: ``constraints.*`` of conf/search.yaml.

``constraints.max_metric_drop=D`` (the workload's metric no worse than the baseline's by more than D, in the
metric's units, worse-ward for its direction, as ``search.pick --max-metric-drop`` reads it) and
``constraints.min_COLUMN=V`` / ``constraints.max_COLUMN=V`` for any numeric column of trials.csv. Each row's
``violation`` is the sum of how far it misses each limit, relative to the limit (so that a millisecond and a
point of accuracy add up alike); ``feasible`` is a violation of 0. The sampler is handed each miss as an
Optuna constraint (``trial.set_constraint``, in search/strategy/study.py ``record``), and the front is the
feasible trials' front, or, where no trial is feasible, the closest (least violation) alone, so that its
model is kept (search/results/tables.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from search.core.errors import ConfigError

DROP = "max_metric_drop"
FEASIBLE, VIOLATION = "feasible", "violation"  # the columns a constrained run's rows gain


@dataclass(frozen=True)
class Limit:
    """One limit: ``column`` at least (``>=``) or at most (``<=``) ``value``; a drop limit's value is the
    baseline's figure minus the drop (worse-ward), known once the baseline is measured."""

    key: str  # as the user wrote it: max_latency_ms, max_metric_drop
    column: str
    op: str
    value: float  # the bound; for a drop limit, the drop itself
    drop: bool = False

    def bound(self, baseline: Mapping[str, Any] | None) -> float | None:
        """The bound this limit puts on its column (None: a drop limit before the baseline is measured)."""
        if not self.drop:
            return self.value
        base = _number((baseline or {}).get(self.column))
        if base is None:
            return None
        return base - self.value if self.op == ">=" else base + self.value

    def miss(self, row: Mapping[str, Any], baseline: Mapping[str, Any] | None) -> float:
        """How far the row misses the limit, relative to the bound (0: met); a row without the figure misses by 1."""
        bound = self.bound(baseline)
        if bound is None:  # nothing to measure the drop from yet: not held against the row
            return 0.0
        value = _number(row.get(self.column))
        if value is None:
            return 1.0
        short = bound - value if self.op == ">=" else value - bound
        return max(0.0, short) / (abs(bound) or 1.0)

    def text(self) -> str:
        return f"{self.key}={self.value:g}"


@dataclass(frozen=True)
class Constraints:
    """The run's limits; empty: the search is unconstrained and rows gain no columns."""

    limits: tuple[Limit, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.limits)

    def misses(self, row: Mapping[str, Any], baseline: Mapping[str, Any] | None) -> list[float]:
        return [limit.miss(row, baseline) for limit in self.limits]

    def violation(self, row: Mapping[str, Any], baseline: Mapping[str, Any] | None) -> float:
        return sum(self.misses(row, baseline))

    def marked(self, row: dict[str, Any], baseline: Mapping[str, Any] | None) -> dict[str, Any]:
        """The row with its ``violation`` and ``feasible`` columns (a trial that did not complete: left blank)."""
        if row.get("state") != "COMPLETE":
            return {**row, VIOLATION: None, FEASIBLE: None}
        violation = self.violation(row, baseline)
        return {**row, VIOLATION: violation, FEASIBLE: violation == 0.0}

    def text(self) -> str:
        return ", ".join(limit.text() for limit in self.limits)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def parse_constraints(raw: Mapping[str, Any] | None) -> dict[str, float]:
    """``constraints.*`` as given, each a number (a drop not negative); one line on anything else."""
    found = {}
    for key, value in (raw or {}).items():
        key = str(key)
        if key != DROP and not key.startswith(("min_", "max_")) or key in ("min_", "max_"):
            raise ConfigError(f"constraints.{key}: expected constraints.max_metric_drop=D, constraints.min_COLUMN=V "
                              "or constraints.max_COLUMN=V")
        number = _number(value)
        if number is None or math.isinf(number):
            raise ConfigError(f"constraints.{key}={value!r}: expected a number")
        if key == DROP and number < 0:
            raise ConfigError(f"constraints.{key}={value}: a drop is not negative (0: no worse than the baseline)")
        found[key] = number
    return found


def constraints_for(raw: Mapping[str, Any] | None, numeric: list[str], metric: tuple[str, str] | None) -> Constraints:
    """The run's limits on its ``numeric`` columns; ``metric`` (column, direction) is the workload's, for the drop
    (None: not known yet, so that a drop is checked later)."""
    limits = []
    for key, value in parse_constraints(raw).items():
        if key == DROP:
            if metric is None:
                continue
            column, direction = metric
            limits.append(Limit(key, column, ">=" if direction == "maximize" else "<=", value, drop=True))
            continue
        op, column = (">=", key[4:]) if key.startswith("min_") else ("<=", key[4:])
        if column not in numeric:
            raise ConfigError(f"constraints.{key}: no numeric column {column!r} in this run's rows (numeric "
                              f"columns: {', '.join(numeric)})")
        limits.append(Limit(key, column, op, value))
    return Constraints(tuple(limits))
