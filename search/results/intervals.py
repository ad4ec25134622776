"""Intervals that cover a second measurement: what a re-timed figure's interval columns mean.

One timing session's interval for its p50 comes from hundreds or thousands of calls and is a
fraction of a percent wide, yet the same model timed minutes later, or in a fresh process, moves
by several percent on a shared machine (bench/figures.py measures it). A run measures that
movement itself: the re-timing phase times every trial it re-times (the front and the baseline)
in two sessions, one pass over all of them between the two. The root mean square of
log(session 2 / session 1) over those trials is the run's between-session spread of the metric;
a re-timed row's interval is its first session's figure times and divided by exp(t * spread),
Student's t at ~95 % for that many pairs (wider when few trials were re-timed), never narrower
than the session's own interval or the evaluator's noise floor. It is a prediction interval:
where a new session's figure should fall. (A run re-timed before sessions were kept pairs the
re-timed figure with its search-time one instead.)

Rows timed once (not re-timed) keep their session's interval. The noise-aware front, the cards,
``search.pick`` and a bundle's verify.py all read these same columns.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from search.core.schema import Schema

SESSIONS = "retime_sessions"  # a table row's key (not a column): the timed figures of its later re-timing sessions
# Student's t, two-sided ~95 %, by degrees of freedom (the pairs; the mean of the log-ratios is taken as 0)
T_95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26, 10: 2.23,
        12: 2.18, 15: 2.13, 20: 2.09, 30: 2.04, 60: 2.00}


def t_95(pairs: int) -> float:
    """The quantile for ``pairs`` degrees of freedom (the next smaller tabled one: never too narrow)."""
    return T_95[max(k for k in T_95 if k <= pairs)] if pairs < 120 else 1.96


@dataclass(frozen=True)
class Spread:
    """How far one metric moved between two timings of the same models in this run."""

    metric: str
    pairs: int  # re-timed trials with a second timing (a second re-timing session, or their search-time figure)
    rms_log: float  # root mean square of log(second timing / re-timed figure)

    @property
    def factor(self) -> float:
        """A re-timed figure's interval runs from figure / factor to figure * factor."""
        return math.exp(t_95(self.pairs) * self.rms_log)

    def to_json(self) -> dict[str, Any]:
        return {"metric": self.metric, "pairs": self.pairs, "rms_log": self.rms_log,
                "half_width": self.factor - 1, "t": t_95(self.pairs)}


def run_spreads(rows: Iterable[Mapping[str, Any]], schema: Schema) -> dict[str, Spread]:
    """Each timed metric with an interval: its spread over the re-timed rows (``final``), between their first
    and second re-timing sessions (``SESSIONS``); a run re-timed in one session only (before sessions were
    kept) falls back on the search-time figure (``search_<metric>``) as the other session."""
    rows = [r for r in rows if r.get("final")]
    later = any(r.get(SESSIONS) for r in rows)
    found = {}
    for metric in (m for m in schema.timed if m in schema.intervals):
        ratios = [_log_ratio(_other(r, metric, later), r.get(metric)) for r in rows]
        ratios = [r for r in ratios if r is not None]
        if ratios:
            found[metric] = Spread(metric, len(ratios), math.sqrt(sum(r * r for r in ratios) / len(ratios)))
    return found


def _other(row: Mapping[str, Any], metric: str, later: bool) -> Any:
    """The row's other timing of ``metric``: its second re-timing session's, or else its search-time figure."""
    if later:
        sessions = row.get(SESSIONS) or []
        return sessions[0].get(metric) if sessions else None
    return row.get(f"search_{metric}")


def _log_ratio(other: Any, final: Any) -> float | None:
    try:
        other, final = float(other), float(final)
    except (TypeError, ValueError):
        return None
    return math.log(other / final) if other > 0 and final > 0 else None


def widened(row: dict[str, Any], spreads: Mapping[str, Spread], schema: Schema) -> dict[str, Any]:
    """A re-timed row with each spread metric's interval made to cover a new session (others as they are)."""
    if not row.get("final"):
        return row
    row = dict(row)
    for metric, spread in spreads.items():
        low_col, high_col, floor = schema.intervals[metric]
        value = row.get(metric)
        if value is None or not value > 0:
            continue
        factor = max(spread.factor, 1 + floor)
        row[low_col] = min(_number(row.get(low_col), value), value / factor)
        row[high_col] = max(_number(row.get(high_col), value), value * factor)
    return row


def widened_rows(rows: list[dict[str, Any]], schema: Schema) -> list[dict[str, Any]]:
    """The rows, the re-timed ones with their intervals widened by the spread the rows themselves give."""
    spreads = run_spreads(rows, schema)
    return [widened(row, spreads, schema) for row in rows]


def _number(value: Any, default: float) -> float:
    return default if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def spread_note(spreads: Mapping[str, Spread], metrics: Iterable[str]) -> dict[str, Any]:
    """The card's account of its interval columns."""
    return {s.metric: {**s.to_json(), "meaning": (
        f"~95 % interval for the figure a new timing session would measure: this run's re-timed trials moved "
        f"{math.exp(s.rms_log) - 1:.1%} (root mean square) between two re-timing sessions, over {s.pairs} "
        f"trial(s); the interval is the figure times/divided by {s.factor:.3f} (t = {t_95(s.pairs):.2f})")}
        for s in spreads.values() if s.metric in set(metrics)}
