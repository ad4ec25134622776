"""How the front grew: hypervolume against finished trials and against wall time."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from search.core.optuna_private import compute_hypervolume

from search.results.pareto import pareto_mask

REFERENCE = 1.1  # the reference point, per objective, in the normalized space below


def normalized_losses(done: pd.DataFrame, objectives: Sequence[tuple[str, str]]) -> np.ndarray:
    """Every objective as a loss scaled to [0, 1] over the completed trials (1 = the worst seen)."""
    columns = []
    for metric, direction in objectives:
        values = done[metric].to_numpy(dtype=float) * (-1 if direction == "maximize" else 1)
        spread = values.max() - values.min()
        columns.append((values - values.min()) / spread if spread > 0 else np.zeros_like(values))
    return np.column_stack(columns)


def hypervolume_history(table: pd.DataFrame, objectives: Sequence[tuple[str, str]]) -> pd.DataFrame:
    """One row per completed trial, in completion order: ``completed``, ``elapsed_s``, ``hypervolume``.

    The hypervolume is of the front of the trials completed so far (exact dominance, the
    search-time view), in the normalized space with the reference point at 1.1 per objective.
    """
    done = table[table["state"] == "COMPLETE"].dropna(subset=["completed_at"]).sort_values("completed_at")
    if done.empty:
        return pd.DataFrame(columns=["completed", "elapsed_s", "hypervolume"])
    losses = normalized_losses(done, objectives)
    start = pd.to_datetime(done["started_at"]).min()
    rows = []
    for count in range(1, len(done) + 1):
        seen = losses[:count]
        front = seen[pareto_mask(pd.DataFrame(seen), [(i, "minimize") for i in range(seen.shape[1])])]
        volume = compute_hypervolume(front, np.full(seen.shape[1], REFERENCE))
        elapsed = (pd.to_datetime(done["completed_at"].iloc[count - 1]) - start).total_seconds()
        rows.append({"completed": count, "elapsed_s": elapsed, "hypervolume": float(volume)})
    return pd.DataFrame(rows)
