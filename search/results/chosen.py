"""What ``python -m search.pick`` says about the model it chose, in the words of the run's schema:
where the trial stands, its knob settings, its objectives with units and intervals, what else was
measured, and where the model is. Names no knob or metric: everything comes from the declarations."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import pandas as pd

from search.core.schema import Column, Field, Schema


def describe_choice(row: pd.Series, schema: Schema, groups: Sequence[Sequence[Column]], front: str | None,
                    model: str) -> str:
    """Lines on the chosen row.

    Args:
        row: the chosen row of trials.csv or pareto.csv.
        schema: the run's schema (names, units, intervals).
        groups: the knobs' columns, one group per knob: its first field, then its other fields and facts.
        front: the front the trial is on (``the front``, ``target cpu_1t's front``), None when it is not on one.
        model: where the model is.
    """
    standing = [f"on {front}" if front else "not on the front"]
    if _flag(row.get("baseline")):
        standing.insert(0, "the baseline (the original model)")
    standing.append("final figures (re-timed alone on its node after the search)" if _flag(row.get("final"))
                    else "figures from the search (not re-timed)")
    lines = [f"trial {int(row['trial'])}: {', '.join(standing)}",
             "settings: " + " · ".join(filter(None, (_group(row, g) for g in groups))),
             "objectives: " + " · ".join(_figure(row, schema, m) for m, _ in schema.objectives if _present(row.get(m)))]
    shown = {m for m, _ in schema.objectives}
    for low, high, _ in schema.intervals.values():
        shown |= {low, high}
    shown |= {c.label_from for c in schema.metrics if c.label_from}
    others = [_figure(row, schema, c.name) for c in schema.metrics if c.name not in shown and _present(row.get(c.name))]
    if others:
        lines.append("also measured: " + " · ".join(others))
    searched = [m for m in schema.timed if _present(row.get(f"search_{m}"))]
    if _flag(row.get("final")) and searched:
        lines.append("during the search: " + " · ".join(_figure(row, schema, m, f"search_{m}") for m in searched))
    lines.append(f"model: {model}")
    return "\n".join(lines)


def _group(row: pd.Series, columns: Sequence[Column]) -> str | None:
    """``prune_rate 0.5 (round_to 8, removed 0.47)``; a knob at its "not applied" value shows that value alone."""
    head = columns[0]
    if not _present(row.get(head.name)):
        return None
    text = f"{head.name} {_text(row[head.name], head)}"
    if isinstance(head, Field) and _same(row[head.name], head.unset):
        return text
    details = [f"{_short(head.name, c.name)} {_text(row[c.name], c)}" for c in columns[1:] if _present(row.get(c.name))]
    return f"{text} ({', '.join(details)})" if details else text


def _figure(row: pd.Series, schema: Schema, metric: str, column: str | None = None) -> str:
    """``latency_ms 1.23 ms / batch [1.20, 1.26]``: value, unit, source (energy's), interval where declared."""
    declared = schema.column(metric)
    value = row[column or metric]
    text = f"{metric} {_text(value, declared)}" + (f" {declared.unit}" if declared and declared.unit else "")
    if declared and declared.label_from and _present(row.get(declared.label_from)):
        text += f" ({row[declared.label_from]})"
    low, high = schema.intervals.get(metric, (None, None, 0.0))[:2]
    if column is None and low and _present(row.get(low)) and _present(row.get(high)):
        text += f" [{_text(row[low], declared)}, {_text(row[high], declared)}]"
    return text


def _text(value: Any, column: Column | None) -> str:
    kind = column.kind if column else "float"
    if kind == "str" or isinstance(value, str):
        return str(value)
    if kind == "bool":
        return str(_flag(value)).lower()
    number = float(value)
    if not math.isfinite(number):
        return str(number)
    if kind == "int":
        return str(int(number))
    return f"{number:.0f}" if abs(number) >= 1e4 else f"{number:.4g}"


def _short(head: str, name: str) -> str:
    """A knob's other column without the knob's prefix: ``prune_round_to`` beside ``prune_rate`` is ``round_to``."""
    cut = os.path.commonprefix([head, name]).rfind("_") + 1
    return name[cut:] if cut else name


def _same(value: Any, unset: Any) -> bool:
    if unset is None:
        return False
    try:
        return float(value) == float(unset)
    except (TypeError, ValueError):
        return str(value) == str(unset)


def _present(value: Any) -> bool:
    return value is not None and not (not isinstance(value, str) and pd.isna(value)) and str(value).strip() != ""


def _flag(value: Any) -> bool:
    """A boolean column as read back from CSV (True, "True", 1), blank as false."""
    return _present(value) and str(value).strip().lower() in ("true", "1", "1.0")
