"""Non-dominated rows of a table, for any mix of maximized and minimized columns."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def _as_minimized(table: pd.DataFrame, objectives: Sequence[tuple[str, str]]) -> np.ndarray:
    cols = [table[m].to_numpy(dtype=float) * (-1 if d == "maximize" else 1) for m, d in objectives]
    return np.column_stack(cols) if cols else np.empty((len(table), 0))


def pareto_mask(table: pd.DataFrame, objectives: Sequence[tuple[str, str]]) -> np.ndarray:
    """True for rows no other row dominates (at least as good everywhere, better somewhere).

    Rows with identical objective values are all kept: neither dominates the other.
    """
    points = _as_minimized(table, objectives)
    keep = np.ones(len(points), dtype=bool)
    for i, point in enumerate(points):
        no_worse = np.all(points <= point, axis=1)
        better = np.any(points < point, axis=1)
        keep[i] = not np.any(no_worse & better)
    return keep
