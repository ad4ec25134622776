"""pareto.html: the trials in an interactive, self-contained page (plotly.js is inlined, so it opens offline)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import plotly.express as px

from search.files import write_atomically
from search.plots import axis_label
from search.results import CANDIDATE_COLUMNS

HOVER_METRICS = ["accuracy", "latency_ms", "latency_ci_low_ms", "latency_ci_high_ms", "throughput_ips", "energy_mj",
                 "energy_source", "size_bytes", "peak_memory_bytes", "final"]


def pareto_figure(table: pd.DataFrame, front: pd.DataFrame, objectives: Sequence[tuple[str, str]]):
    """A scatter matrix of the objectives: colour per parallelism mode, symbol per front membership."""
    done = table[table["state"] == "COMPLETE"].copy()
    done["member"] = done["trial"].isin(front["trial"]).map({True: "Pareto member", False: "dominated"})
    done.loc[done["baseline"].astype(bool), "member"] = "fp32 baseline"
    metrics = [m for m, _ in objectives]
    hover = ["trial", *[c for c in CANDIDATE_COLUMNS + HOVER_METRICS if c in done.columns and c not in metrics]]
    figure = px.scatter_matrix(
        done, dimensions=metrics, color="parallelism", symbol="member", hover_data=hover,
        labels={m: axis_label(m, done) for m in metrics},
        symbol_map={"Pareto member": "diamond", "dominated": "circle", "fp32 baseline": "star"},
        title=f"{len(done)} completed trials, {len(front)} on the Pareto front (hover a point for its knobs and metrics)",
    )
    figure.update_traces(diagonal_visible=False, marker={"size": 8, "line": {"width": 0.5, "color": "black"}})
    figure.update_layout(height=260 * len(metrics), width=260 * len(metrics) + 200)
    return figure


def write_pareto_html(path: Path, table: pd.DataFrame, front: pd.DataFrame, objectives: Sequence[tuple[str, str]]) -> None:
    figure = pareto_figure(table, front, objectives)
    write_atomically(path, lambda p: figure.write_html(p, include_plotlyjs=True, full_html=True))
