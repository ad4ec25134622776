"""pareto.html: the trials in an interactive, self-contained page (plotly.js is inlined, so it opens offline).

One panel per pair of objectives, like pareto.png; colour per parallelism mode, symbol per
front membership, and hovering a point shows the trial's knobs and metrics. Markers are SVG
(not WebGL), so the page renders on machines without a GPU and each point is in the DOM.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from search.files import write_atomically
from search.results.plots import axis_label, panel_grid, plotted_values
from search.schema import Schema

SYMBOLS = {"Pareto member": "diamond", "dominated": "circle", "fp32 baseline": "star"}


def _hover(done: pd.DataFrame, schema: Schema) -> pd.Series:
    """Every declared knob field and evaluator column of the trial, by name."""
    declared = [*schema.field_names, *schema.result_columns, "final"]
    columns = ["trial", "member", *[c for c in declared if c in done.columns]]
    return done.apply(lambda row: "<br>".join(f"{c}: {row[c]}" for c in columns if pd.notna(row[c])), axis=1)


def pareto_figure(table: pd.DataFrame, front: pd.DataFrame, schema: Schema) -> go.Figure:
    done = table[table["state"] == "COMPLETE"].copy()
    done["member"] = done["trial"].isin(front["trial"]).map({True: "Pareto member", False: "dominated"})
    done.loc[done["baseline"].astype(bool), "member"] = "fp32 baseline"
    pairs, rows, cols = panel_grid(schema.objectives)
    figure = make_subplots(rows=rows, cols=cols, horizontal_spacing=0.08, vertical_spacing=0.12)
    for index, (mode, group) in enumerate(done.groupby("parallelism", sort=True)):
        marker = {"color": qualitative.Plotly[index % len(qualitative.Plotly)], "size": group["member"].map(
            {"Pareto member": 11, "dominated": 7, "fp32 baseline": 16}).tolist(),
                  "symbol": group["member"].map(SYMBOLS).tolist(), "line": {"width": 0.6, "color": "black"}}
        for panel, (x, y) in enumerate(pairs):
            figure.add_trace(go.Scatter(
                x=plotted_values(group, x, schema), y=plotted_values(group, y, schema), mode="markers", name=str(mode),
                legendgroup=str(mode), showlegend=panel == 0, marker=marker, hovertext=_hover(group, schema),
                hoverinfo="text"), row=panel // cols + 1, col=panel % cols + 1)
    for panel, (x, y) in enumerate(pairs):
        figure.update_xaxes(title_text=axis_label(x, done, schema), row=panel // cols + 1, col=panel % cols + 1)
        figure.update_yaxes(title_text=axis_label(y, done, schema), row=panel // cols + 1, col=panel % cols + 1)
    figure.update_layout(
        height=380 * rows, width=460 * cols, legend_title_text="parallelism (diamond: Pareto member, star: baseline)",
        title=f"{len(done)} completed trials, {len(front)} on the Pareto front; hover a point for its knobs and metrics")
    return figure


def write_pareto_html(path: Path, table: pd.DataFrame, front: pd.DataFrame, schema: Schema) -> None:
    figure = pareto_figure(table, front, schema)
    write_atomically(path, lambda p: figure.write_html(p, include_plotlyjs=True, full_html=True))
