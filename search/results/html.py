"""pareto.html: the trials in an interactive, self-contained page (plotly.js is inlined, so it opens offline).

One panel per pair of objectives, like pareto.png. Colour is the parallelism mode, the marker is
front membership (circle: dominated, diamond: Pareto member, star: the fp32 baseline), and the
legend says each apart: the modes as circles in their colour, the markers in a neutral grey.
Hovering a point shows the trial's knobs and metrics. Markers are SVG (not WebGL), so the page
renders on machines without a GPU and each point is in the DOM. The page takes the window's width.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from search.core.files import write_atomically
from search.results.plots import axis_label, panel_grid, plotted_values
from search.core.schema import Schema

# Okabe & Ito's colour-blind-safe palette (blue, orange, bluish green, reddish purple, sky blue, vermillion,
# yellow), in an order that keeps the first five (the shipped modes) far apart in hue and lightness.
MODE_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442")
NEUTRAL = "#9e9e9e"  # the membership legend's fill: a marker means the same in every mode's colour
MARKERS = {"dominated": ("circle", 7), "Pareto member": ("diamond", 12), "fp32 baseline": ("star", 16)}
SYMBOLS = {member: symbol for member, (symbol, _) in MARKERS.items()}
OUTLINE = {"width": 0.8, "color": "black"}


def _hover(done: pd.DataFrame, schema: Schema) -> pd.Series:
    """Every declared knob field and evaluator column of the trial, by name."""
    declared = [*schema.field_names, *schema.result_columns, "final"]
    columns = ["trial", "member", *[c for c in declared if c in done.columns]]
    return done.apply(lambda row: "<br>".join(f"{c}: {row[c]}" for c in columns if pd.notna(row[c])), axis=1)


def _legend_entry(name: str, group: str, symbol: str, size: int, colour: str, **title) -> go.Scatter:
    """A legend-only trace: one empty point, which plotly draws in the legend and nowhere in the panels (x=[] would
    draw no legend entry at all)."""
    return go.Scatter(x=[None], y=[None], mode="markers", name=name, legendgroup=group, showlegend=True, **title,
                      hoverinfo="skip", marker={"symbol": symbol, "size": size, "color": colour, "line": OUTLINE})


def _legend(figure: go.Figure, colours: dict[str, str], members: set[str]) -> None:
    """The modes as circles in their colour, then the markers of the memberships present, in grey."""
    for mode, colour in colours.items():
        figure.add_trace(_legend_entry(mode, mode, "circle", 10, colour))
    shown = [(member, marker) for member, marker in MARKERS.items() if member in members]
    for index, (member, (symbol, size)) in enumerate(shown):
        title = {"legendgrouptitle_text": "marker: front membership"} if index == 0 else {}
        figure.add_trace(_legend_entry(member, "membership", symbol, size, NEUTRAL, **title))


def _membership(table: pd.DataFrame, front: pd.DataFrame) -> pd.DataFrame:
    """The completed trials, each with its "member" column: Pareto member, dominated or fp32 baseline."""
    done = table[table["state"] == "COMPLETE"].copy()
    done["member"] = done["trial"].isin(front["trial"]).map({True: "Pareto member", False: "dominated"})
    done.loc[done["baseline"].astype(bool), "member"] = "fp32 baseline"
    done["parallelism"] = done["parallelism"].astype(str)
    return done


def pareto_figure(table: pd.DataFrame, front: pd.DataFrame, schema: Schema) -> go.Figure:
    done = _membership(table, front)
    pairs, rows, cols = panel_grid(schema.objectives)
    figure = make_subplots(rows=rows, cols=cols, horizontal_spacing=0.1, vertical_spacing=0.12)
    modes = sorted(set(done["parallelism"]))
    colours = {mode: MODE_COLOURS[index % len(MODE_COLOURS)] for index, mode in enumerate(modes)}
    for mode, group in done.groupby("parallelism", sort=True):
        marker = {"color": colours[mode], "symbol": group["member"].map(SYMBOLS).tolist(), "line": OUTLINE,
                  "size": group["member"].map({m: size for m, (_, size) in MARKERS.items()}).tolist()}
        for panel, (x, y) in enumerate(pairs):  # legendgroup: a click on the mode's entry hides it in every panel
            figure.add_trace(go.Scatter(
                x=plotted_values(group, x, schema), y=plotted_values(group, y, schema), mode="markers", name=mode,
                legendgroup=mode, showlegend=False, marker=marker, hovertext=_hover(group, schema),
                hoverinfo="text"), row=panel // cols + 1, col=panel % cols + 1)
    _legend(figure, colours, set(done["member"]))
    for panel, (x, y) in enumerate(pairs):
        figure.update_xaxes(title_text=axis_label(x, done, schema), row=panel // cols + 1, col=panel % cols + 1)
        figure.update_yaxes(title_text=axis_label(y, done, schema), row=panel // cols + 1, col=panel % cols + 1)
    # no width: the page takes the window's (a fixed 460 px a panel overflowed a 1400 px window); the height leaves
    # room for the legend's two groups when there is one row of panels
    title = f"{len(done)} completed trials, {len(front)} on the Pareto front; hover a point for its knobs and metrics"
    figure.update_layout(autosize=True, height=max(380 * rows, 460), title=title,
                         legend={"title_text": "colour: parallelism mode", "tracegroupgap": 0})
    return figure


def write_pareto_html(path: Path, table: pd.DataFrame, front: pd.DataFrame, schema: Schema) -> None:
    figure = pareto_figure(table, front, schema)
    write_atomically(path, lambda p: figure.write_html(p, include_plotlyjs=True, full_html=True, default_width="100%",
                                                       config={"responsive": True}))
