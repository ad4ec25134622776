"""Intervals that cover a second measurement: what a re-timed figure's interval columns mean.

One timing session's interval for its p50 comes from hundreds or thousands of calls and is a
fraction of a percent wide, yet the same model timed minutes later, or in a fresh process, moves
by several percent on a shared machine (bench/figures.py measures it). A run measures that
movement itself: the re-timing phase times every trial it re-times (the front and the baseline)
in two or more sessions, one pass over all of them between two (more when few trials are re-timed),
each session in a fresh process started before it times anything (search/run/retime.py), as a
bundle's verify.py is a fresh process. A re-timed row's timed figures are the geometric mean of its
sessions' (ratios between rows, the summary's headline among them, move less). The run's
between-session spread of a metric is the root mean square of log(one session / another) that the
sessions' scatter around each row's mean gives (pooled over the rows: sum of squared deviations over
sum of sessions - 1, times 2; with two sessions each, exactly the rms of log(session 2 / session 1)).
A re-timed row's interval is its figure times and divided by exp(t * spread * sqrt((1 + 1/k) / 2)),
Student's t at ~95 % for the spread's degrees of freedom, k the sessions averaged, never narrower
than the session's own interval or the evaluator's noise floor. It is a prediction interval: where a
new session's figure, in another fresh process, should fall (Spread.factor). How far the figures
moved from the search's own timings is reported beside it, not in it: those ran beside other trials'
builds. (A run re-timed before sessions were kept pairs the re-timed figure with its search-time one
instead.)

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
    pairs: int  # re-timed trials with a second timing (later re-timing sessions, or their search-time figure)
    rms_log: float  # root mean square of log(one timing / another) of the same model
    sessions: int = 1  # the sessions a re-timed figure is the mean of (the fewest any re-timed row had)
    dof: int = 0  # the degrees of freedom rms_log rests on: the sessions beyond each row's first (0: pairs)
    # root mean square of log(search-time figure / re-timed figure) over the same rows: how far a figure moves
    # between two moments of the run minutes apart, not seconds (0: not known)
    moment_rms_log: float = 0.0

    @property
    def degrees(self) -> int:
        return self.dof or self.pairs

    @property
    def factor(self) -> float:
        """A re-timed figure's interval runs from figure / factor to figure * factor: where a new session's figure
        falls, at ~95 %. rms_log estimates sqrt(2) sigma, and a new session moves sigma * sqrt(1 + 1/k) from a mean
        of k. Each session is a fresh process (search/run/retime.py), so sigma is the scatter between processes,
        which is what a bundle's verify.py sees. What the figures moved since the search timed them is not in
        it: the search timed them beside other trials' builds (it is in the card, as moment_rms_log)."""
        mean_of = math.sqrt((1 + 1 / max(1, self.sessions)) / 2)
        return math.exp(t_95(self.degrees) * self.rms_log * mean_of)

    def to_json(self) -> dict[str, Any]:
        return {"metric": self.metric, "pairs": self.pairs, "rms_log": self.rms_log, "sessions": self.sessions,
                "degrees_of_freedom": self.degrees, "moment_rms_log": self.moment_rms_log,
                "half_width": self.factor - 1, "t": t_95(self.degrees)}


def run_spreads(rows: Iterable[Mapping[str, Any]], schema: Schema) -> dict[str, Spread]:
    """Each timed metric with an interval: its spread over the re-timed rows (``final``), from the scatter of
    their re-timing sessions (``SESSIONS``) around each row's mean; a run re-timed in one session only (before
    sessions were kept) falls back on the search-time figure (``search_<metric>``) as the other session."""
    rows = [r for r in rows if r.get("final")]
    later = any(len(r.get(SESSIONS) or []) > 1 for r in rows)
    averaged = min((max(1, len(r.get(SESSIONS) or [])) for r in rows), default=1)
    found = {}
    for metric in (m for m in schema.timed if m in schema.intervals):
        scatters = [_scatter(_timings(r, metric, later)) for r in rows]
        scatters = [s for s in scatters if s is not None]
        dof = sum(d for _, d in scatters)
        if dof:
            squares = sum(s for s, _ in scatters)
            moment = _moment_rms(rows, metric) if later else 0.0
            found[metric] = Spread(metric, len(scatters), math.sqrt(2 * squares / dof), averaged if later else 1,
                                   dof, moment)
    return found


def _moment_rms(rows: list[Mapping[str, Any]], metric: str) -> float:
    """The root mean square of log(search-time figure / re-timed figure) over the rows that have both."""
    scatters = [_scatter([r.get(f"search_{metric}"), r.get(metric)]) for r in rows]
    squares = [2 * s for s, _ in (x for x in scatters if x is not None)]
    return math.sqrt(sum(squares) / len(squares)) if squares else 0.0


def _timings(row: Mapping[str, Any], metric: str, later: bool) -> list[Any]:
    """The row's timings of ``metric``: each re-timing session's, or else its search-time and re-timed
    figures."""
    if later:
        return [s.get(metric) for s in row.get(SESSIONS) or []]
    return [row.get(f"search_{metric}"), row.get(metric)]


def _scatter(timings: list[Any]) -> tuple[float, int] | None:
    """The sum of squared deviations of log(timing) from their mean, and its degrees of freedom (timings - 1),
    over the timings that are positive numbers; None with fewer than two."""
    logs = []
    for value in timings:
        try:
            value = float(value)
        except (TypeError, ValueError):
            continue
        if value > 0:
            logs.append(math.log(value))
    if len(logs) < 2:
        return None
    mean = sum(logs) / len(logs)
    return sum((x - mean) ** 2 for x in logs), len(logs) - 1


def session_mean(sessions: list[Mapping[str, Any]], columns: Iterable[str]) -> dict[str, Any]:
    """The geometric mean over ``sessions`` of each of ``columns`` that every session measured above zero (a
    ratio of two such means is the mean of the sessions' ratios); a column some session lacks is left out."""
    found = {}
    for column in columns:
        values = [s.get(column) for s in sessions]
        if values and all(isinstance(v, (int, float)) and v > 0 for v in values):
            found[column] = math.exp(sum(math.log(v) for v in values) / len(values))
    return found


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
        f"trial(s) ({s.degrees} degrees of freedom), each session a fresh process; the figure is the geometric "
        f"mean of {s.sessions} session(s) and the interval is it times/divided by {s.factor:.3f} "
        f"(t = {t_95(s.degrees):.2f}). The figures moved {math.exp(s.moment_rms_log) - 1:.1%} (root mean square) "
        "from the search's timings, which ran beside other trials' builds: not in the interval")}
        for s in spreads.values() if s.metric in set(metrics)}
