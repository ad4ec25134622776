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


def pareto_mask(table: pd.DataFrame, objectives: Sequence[tuple[str, str]], intervals: Intervals | None = None) -> np.ndarray:
    """True for rows no other row dominates beyond measurement noise.

    Rows with identical (or overlapping) objective values are all kept: neither dominates.
    """
    if not len(table) or not objectives:
        return np.ones(len(table), dtype=bool)
    bounds = [_bounds(table, m, d, intervals or {}) for m, d in objectives]
    lows = np.column_stack([low for low, _ in bounds])
    highs = np.column_stack([high for _, high in bounds])
    keep = np.ones(len(table), dtype=bool)
    for i in range(len(table)):
        no_worse = np.all(lows <= highs[i], axis=1)
        better = np.any(highs < lows[i], axis=1)
        keep[i] = not np.any(no_worse & better)
    return keep
