"""Intervals that cover a second measurement: what a re-timed figure's interval columns mean.

One timing session's interval for its p50 comes from hundreds or thousands of calls and is a
fraction of a percent wide, yet the same model timed minutes later, or in a fresh process, moves
by several percent on a shared machine (bench/figures.py measures it). A run measures that
movement itself: the re-timing phase times every trial it re-times (the front and the baseline)
in two sessions, one pass over all of them between the two. A re-timed row's timed figures are
the geometric mean of its sessions' (half the variance of one session's, so ratios between rows,
the summary's headline among them, move less). The root mean square of log(session 2 / session 1)
over those trials is the run's between-session spread of the metric; a re-timed row's interval is
its figure times and divided by exp(t * spread), Student's t at ~95 % for that many pairs (wider
when few trials were re-timed), never narrower than the session's own interval or the evaluator's
noise floor. It is a prediction interval: where a new session's figure should fall. It is not
narrowed for being a mean of two: a fresh process moves further from the run's sessions than they
move from each other (Spread.factor). (A run re-timed before sessions were kept pairs the re-timed
figure with its search-time one instead.)

Rows timed once (not re-timed) keep their session's interval. The noise-aware front, the cards,
``search.pick`` and a bundle's verify.py all read these same columns.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from search.core.schema import Schema

SESSIONS = "retime_sessions"  # a table row's key (not a column): the figures of each of its re-timing sessions
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
    rms_log: float  # root mean square of log(second timing / first timing)
    sessions: int = 1  # the sessions a re-timed figure is the mean of (the fewest any re-timed row had)

    @property
    def factor(self) -> float:
        """A re-timed figure's interval runs from figure / factor to figure * factor. Against a mean of k sessions
        a new session in the run would move sqrt((1 + 1/k) / 2) times less than against one session, but the
        interval is not narrowed for it: a fresh process moved further from the run's sessions than they moved
        from each other (bench/figures.py: the text models' fresh p50s a median 3 % faster)."""
        return math.exp(t_95(self.pairs) * self.rms_log)

    def to_json(self) -> dict[str, Any]:
        return {"metric": self.metric, "pairs": self.pairs, "rms_log": self.rms_log, "sessions": self.sessions,
                "half_width": self.factor - 1, "t": t_95(self.pairs)}


def run_spreads(rows: Iterable[Mapping[str, Any]], schema: Schema) -> dict[str, Spread]:
    """Each timed metric with an interval: its spread over the re-timed rows (``final``), between their first
    and second re-timing sessions (``SESSIONS``); a run re-timed in one session only (before sessions were
    kept) falls back on the search-time figure (``search_<metric>``) as the other session."""
    rows = [r for r in rows if r.get("final")]
    later = any(len(r.get(SESSIONS) or []) > 1 for r in rows)
    averaged = min((max(1, len(r.get(SESSIONS) or [])) for r in rows), default=1)
    found = {}
    for metric in (m for m in schema.timed if m in schema.intervals):
        ratios = [_log_ratio(*_pair(r, metric, later)) for r in rows]
        ratios = [r for r in ratios if r is not None]
        if ratios:
            found[metric] = Spread(metric, len(ratios), math.sqrt(sum(r * r for r in ratios) / len(ratios)),
                                   averaged if later else 1)
    return found


def _pair(row: Mapping[str, Any], metric: str, later: bool) -> tuple[Any, Any]:
    """The row's two timings of ``metric``: its second and first re-timing sessions', or else its search-time
    and re-timed figures."""
    if later:
        sessions = row.get(SESSIONS) or []
        return (sessions[1].get(metric), sessions[0].get(metric)) if len(sessions) > 1 else (None, None)
    return row.get(f"search_{metric}"), row.get(metric)


def session_mean(sessions: list[Mapping[str, Any]], columns: Iterable[str]) -> dict[str, Any]:
    """The geometric mean over ``sessions`` of each of ``columns`` that every session measured above zero (a
    ratio of two such means is the mean of the sessions' ratios); a column some session lacks is left out."""
    found = {}
    for column in columns:
        values = [s.get(column) for s in sessions]
        if values and all(isinstance(v, (int, float)) and v > 0 for v in values):
            found[column] = math.exp(sum(math.log(v) for v in values) / len(values))
    return found


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
        f"trial(s); the figure is the geometric mean of {s.sessions} session(s) and the interval is it "
        f"times/divided by {s.factor:.3f} (t = {t_95(s.pairs):.2f})")}
        for s in spreads.values() if s.metric in set(metrics)}
