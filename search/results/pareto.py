"""Non-dominated rows of a table, for any mix of maximized and minimized columns, noise-aware.

A measured figure with a confidence interval (latency, energy) is compared by its interval:
two rows whose intervals overlap tie on that objective, so a row is dropped from the front
only by a row that is no worse on every objective (exact figures: <=; intervals: they
overlap or lie lower) and clearly better on at least one (exact: <; intervals: disjoint).
A faster-looking time inside the other's noise therefore never knocks a model off the front.

An interval from one measurement understates how much a second measurement of the same
model moves (bench/timing_isolation.py: the p50's run-to-run CV is about twice its CI half-width), so
each interval is widened to at least +-``floor`` of the value (the evaluator's noise_floor).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

Intervals = Mapping[str, tuple[str, str, float]]  # metric -> (low column, high column, relative floor)


def _bounds(table: pd.DataFrame, metric: str, direction: str, intervals: Intervals) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of a metric as a minimized quantity; an exact figure is its own interval."""
    value = table[metric].to_numpy(dtype=float)
    low, high = value, value
    if metric in intervals:
        low_col, high_col, floor = intervals[metric]
        if low_col in table.columns and high_col in table.columns:
            # a row measured without an interval keeps its value (and the floor)
            low = np.where(table[low_col].isna(), value, table[low_col].to_numpy(dtype=float))
            high = np.where(table[high_col].isna(), value, table[high_col].to_numpy(dtype=float))
        low, high = np.minimum(low, value * (1 - floor)), np.maximum(high, value * (1 + floor))
    return (-high, -low) if direction == "maximize" else (low, high)


BLOCK = 256  # rows compared at once: a (BLOCK, n, objectives) comparison stays a few MB


def dominated(lows: np.ndarray, highs: np.ndarray, cand_lows: np.ndarray, cand_highs: np.ndarray) -> np.ndarray:
    """For each candidate (its lows and highs): whether some row of ``lows``/``highs`` dominates it."""
    found = np.zeros(len(cand_lows), dtype=bool)
    for start in range(0, len(cand_lows), BLOCK):
        end = start + BLOCK
        no_worse = np.all(lows[None, :, :] <= cand_highs[start:end, None, :], axis=2)  # (block, rows)
        better = np.any(highs[None, :, :] < cand_lows[start:end, None, :], axis=2)
        found[start:end] = np.any(no_worse & better, axis=1)
    return found


def bounds(table: pd.DataFrame, objectives: Sequence[tuple[str, str]],
           intervals: Intervals | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(lows, highs): one row per table row, one column per objective, as minimized quantities."""
    found = [_bounds(table, m, d, intervals or {}) for m, d in objectives]
    return np.column_stack([low for low, _ in found]), np.column_stack([high for _, high in found])


def row_bounds(row: Mapping[str, object], objectives: Sequence[tuple[str, str]],
               intervals: Intervals | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``bounds`` of one row given as a dict, without making a one-row table of it (a millisecond a trial)."""
    found = [_row_bound(row, m, d, intervals or {}) for m, d in objectives]
    return np.array([[low for low, _ in found]]), np.array([[high for _, high in found]])


def _row_bound(row: Mapping[str, object], metric: str, direction: str, intervals: Intervals) -> tuple[float, float]:
    value = float(row[metric])
    low = high = value
    if metric in intervals:
        low_col, high_col, floor = intervals[metric]
        if low_col in row and high_col in row:
            low = value if pd.isna(row[low_col]) else float(row[low_col])
            high = value if pd.isna(row[high_col]) else float(row[high_col])
        low, high = min(low, value * (1 - floor)), max(high, value * (1 + floor))
    return (-high, -low) if direction == "maximize" else (low, high)


def pareto_mask(table: pd.DataFrame, objectives: Sequence[tuple[str, str]],
                intervals: Intervals | None = None) -> np.ndarray:
    """True for rows no other row dominates beyond measurement noise.

    Rows with identical (or overlapping) objective values are all kept: neither dominates.
    """
    if not len(table) or not objectives:
        return np.ones(len(table), dtype=bool)
    lows, highs = bounds(table, objectives, intervals)
    return ~dominated(lows, highs, lows, highs)


def extend_front(table: pd.DataFrame, objectives: Sequence[tuple[str, str]], intervals: Intervals | None,
                 front: np.ndarray, new: np.ndarray) -> np.ndarray:
    """The front of ``table`` given ``front``, the front of its rows that are not ``new``: exact, in O(n).

    A row off the earlier front stays off it (what dominates it is still there); a member leaves
    only if a new row dominates it; a new row joins if no row at all dominates it. Dominance with
    intervals is not transitive, so new rows are checked against every row, not the front alone.
    """
    lows, highs = bounds(table, objectives, intervals)
    found = front & ~new
    members, newcomers = np.flatnonzero(found), np.flatnonzero(new)
    if len(members) and len(newcomers):  # a member leaves only for a new row that dominates it
        found[members[dominated(lows[newcomers], highs[newcomers], lows[members], highs[members])]] = False
    found[newcomers] = ~dominated(lows, highs, lows[newcomers], highs[newcomers])
    return found
