"""pareto.png: one panel per pair of objectives, Pareto members highlighted, the fp32 baseline marked."""

from __future__ import annotations

import itertools
import textwrap
from pathlib import Path
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from search.core.files import write_atomically  # noqa: E402
from search.core.schema import Schema  # noqa: E402
from search.results.importance import ObjectiveImportance  # noqa: E402


def axis_label(metric: str, table: pd.DataFrame, schema: Schema) -> str:
    """The column's declared label and unit; a column labelled from another (energy from its source) says its values."""
    return schema.axis_label(metric, lambda column: table[column].dropna() if column in table.columns else [])


def plotted_values(table: pd.DataFrame, metric: str, schema: Schema) -> pd.Series:
    return table[metric].astype(float) / schema.plot_scale(metric)


def panel_grid(objectives: Sequence[tuple[str, str]]) -> tuple[list[tuple[str, str]], int, int]:
    """(pairs of objectives, rows, columns): one panel per pair, at most 3 to a row."""
    metrics = [m for m, _ in objectives]
    pairs = list(itertools.combinations(metrics, 2)) or [(metrics[0], metrics[0])]
    cols = min(3, len(pairs))
    return pairs, -(-len(pairs) // cols), cols


def _error_bars(table: pd.DataFrame, metric: str, schema: Schema):
    """[below, above] the plotted value from the metric's interval columns, or None where it has none."""
    columns = schema.intervals.get(metric, ())[:2]
    if not columns or not all(c in table.columns for c in columns) or table[list(columns)].isna().any().any():
        return None
    scale = schema.plot_scale(metric)
    value = table[metric].astype(float)
    return [((value - table[columns[0]].astype(float)) / scale).clip(lower=0),
            ((table[columns[1]].astype(float) - value) / scale).clip(lower=0)]


def _save(fig, path: Path) -> None:
    write_atomically(path, lambda p: fig.savefig(p, format="png", dpi=90))
    plt.close(fig)


def plot_front(path: Path, table: pd.DataFrame, front: pd.DataFrame, schema: Schema) -> None:
    """One panel per pair of objectives; the evaluators' interval columns draw the front's error bars."""
    done = table[table["state"] == "COMPLETE"]
    pairs, rows, cols = panel_grid(schema.objectives)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 4.2 * rows), squeeze=False)
    baseline = done[done["baseline"].astype(bool)]
    for ax, (x, y) in zip(axes.flat, pairs, strict=False):  # a grid may have a spare panel
        ax.scatter(plotted_values(done, x, schema), plotted_values(done, y, schema), s=18, c="#b0b0b0",
                   label="completed trial")
        ax.scatter(plotted_values(front, x, schema), plotted_values(front, y, schema), s=36, c="#d62728",
                   label="Pareto member")
        if len(front):  # the front's ~95 % intervals: members whose bars overlap tie on that axis
            ax.errorbar(plotted_values(front, x, schema), plotted_values(front, y, schema),
                        xerr=_error_bars(front, x, schema), yerr=_error_bars(front, y, schema), fmt="none",
                        ecolor="#d62728", alpha=0.6, capsize=2)
        if len(baseline):
            ax.scatter(plotted_values(baseline, x, schema), plotted_values(baseline, y, schema), s=160, marker="*",
                       c="#1f77b4", edgecolors="black", label="fp32 baseline")
        ax.set_xlabel(axis_label(x, done, schema))
        ax.set_ylabel(axis_label(y, done, schema))
        _readable_ticks(ax)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(pairs):]:
        ax.axis("off")
    axes.flat[0].legend(loc="best", fontsize=8)
    fig.suptitle(f"{len(done)} completed trials, {len(front)} on the Pareto front")
    fig.tight_layout()
    _save(fig, path)


def _readable_ticks(ax) -> None:
    """At most 5 ticks a side, without an offset: accuracies 0.9725, 0.975, ... ran into each other."""
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(MaxNLocator(nbins=5))
        formatter = axis.get_major_formatter()
        if hasattr(formatter, "set_useOffset"):
            formatter.set_useOffset(False)


def plot_history(path: Path, history: pd.DataFrame) -> None:
    """history.png: the front's hypervolume against completed trials and against wall time."""
    fig, (by_trials, by_time) = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, column, label in ((by_trials, "completed", "completed trials"), (by_time, "elapsed_s", "wall time (s)")):
        ax.step(history[column], history["hypervolume"], where="post", color="#d62728")
        ax.set_xlabel(label)
        ax.set_ylabel("hypervolume (normalized objectives, ref 1.1)")
        ax.grid(alpha=0.3)
    fig.suptitle("How the Pareto front grew")
    fig.tight_layout()
    _save(fig, path)


IMPORTANT, UNTOLD = "#0072B2", "#c8c8c8"  # a knob that clears the decoy; one not told apart from no effect


def plot_importance(path: Path, importances: dict[str, ObjectiveImportance | str]) -> None:
    """importance.png: per objective, each knob's share of its variance (fANOVA) with its bootstrap spread."""
    panels = max(len(importances), 1)
    fig, axes = plt.subplots(1, panels, figsize=(4.6 * panels, 4.2), squeeze=False)
    fitted = [found for found in importances.values() if not isinstance(found, str)]
    for ax, (metric, found) in zip(axes.flat, importances.items(), strict=False):  # no objective: one blank panel
        if isinstance(found, str):  # why there is no importance for this objective
            ax.text(0.5, 0.5, f"{metric}:\n{textwrap.fill(found, 40)}", ha="center", va="center",
                    transform=ax.transAxes)
            ax.axis("off")
        else:
            _importance_bars(ax, metric, found, legend=found is fitted[0])
    title = "Which knobs drive each objective"
    if fitted:
        title += (f": fANOVA refitted on {fitted[0].resamples} bootstrap resamples of the {fitted[0].trials} completed "
                  "trials; bar: median, whisker: 10-90 %. Grey: not distinguishable from no effect, its 10 % whisker "
                  "under the dashed line (the 90 % of a decoy knob of random values, at least 2 %)")
    fig.suptitle(textwrap.fill(title, int(14 * 4.6 * panels)), fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def _importance_bars(ax, metric: str, found: ObjectiveImportance, legend: bool) -> None:
    rows = list(reversed(found.knobs))  # the largest at the top
    medians = [r.median for r in rows]
    ax.barh(range(len(rows)), medians, color=[IMPORTANT if r.distinguishable else UNTOLD for r in rows])
    ax.errorbar(medians, range(len(rows)), xerr=[[r.median - r.low for r in rows], [r.high - r.median for r in rows]],
                fmt="none", ecolor="black", capsize=3, lw=1)
    ax.axvline(found.threshold, color="black", ls="--", lw=1)
    ax.set_yticks(range(len(rows)), [r.knob for r in rows])
    ax.set_xlim(left=0)
    ax.set_title(metric)
    ax.set_xlabel("share of the variance it explains alone")
    if legend:
        ax.legend(handles=[Patch(color=IMPORTANT, label="clears the threshold"),
                           Patch(color=UNTOLD, label="not told apart from no effect"),
                           Line2D([], [], color="black", ls="--", lw=1, label="no-effect threshold")],
                  loc="lower right", fontsize=7)
