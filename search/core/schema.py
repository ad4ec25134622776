"""What the configured plugins put in a result row, declared by the plugins themselves.

Knobs declare the candidate fields they set (and facts their build learns); evaluators declare
the columns they measure, with units, direction, interval and card note. The tables, the front,
the plots, the HTML page, the progress line, the summary and ``search.pick`` loop over a
:class:`Schema` built from those declarations and name no metric themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from search.core.constraints import FEASIBLE, VIOLATION, Constraints

KINDS = ("int", "float", "str", "bool")
# Columns every row has, whatever the plugins: who ran what, when, and why it failed.
HEAD = ("trial", "state")
TAIL = ("final", "duration_s", "store_hits", "build_s_saved", "node", "baseline", "started_at", "completed_at", "error")
TAIL_INTEGERS = ("store_hits",)


@dataclass(frozen=True)
class Column:
    """One column of trials.csv.

    Attributes:
        name: the column's name (and, for a knob's field, the candidate field's).
        kind: ``int``, ``float``, ``str`` or ``bool``: ints are written without ``.0`` and may be blank.
        unit: unit for axis labels and the README table (``ms``, ``bytes``).
        label: what a plot axis or the progress line calls it (default: the name).
        doc: one line on what it means.
        plot_scale: plotted value = value / plot_scale (bytes shown as KB).
        label_from: a column whose distinct values are added to the axis label (energy's source).
        per_batch: a figure of one call on ``batch_size`` inputs (latency): compare it at equal batch sizes.
    """

    name: str
    kind: str = "float"
    unit: str = ""
    label: str = ""
    doc: str = ""
    plot_scale: float = 1.0
    label_from: str | None = None
    per_batch: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"column {self.name}: kind {self.kind!r} not in {KINDS}")

    def axis_label(self, values_of: Callable[[str], Sequence[Any]] | None = None) -> str:
        """``label (unit)``, the unit of plotted values (KB for bytes / 1024); with ``label_from``, the
        distinct values of that column join it (energy's ``estimate`` is on its axis)."""
        unit = {1024: "KB", 1024 ** 2: "MB"}.get(self.plot_scale, self.unit) if self.plot_scale != 1 else self.unit
        parts = [unit] if unit else []
        if self.label_from:
            found = sorted({str(v) for v in values_of(self.label_from)}) if values_of else []
            parts.append("/".join(found) or "n/a")
        return f"{self.label or self.name}" + (f" ({', '.join(parts)})" if parts else "")


@dataclass(frozen=True)
class Field(Column):
    """A candidate field a knob sets.

    Attributes:
        unset: the value meaning "not applied" (distillation of an unpruned model: None).
        applies_to: ``build`` (changes the model: part of its cache key) or ``runtime`` (only how it runs).
        alias: an older name of the column, written beside it for one release.
    """

    unset: Any = None
    applies_to: str = "build"
    alias: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.applies_to not in ("build", "runtime"):
            raise ValueError(f"field {self.name}: applies_to must be build or runtime, got {self.applies_to!r}")


@dataclass(frozen=True)
class Schema:
    """The columns of a run's rows and what the front compares, from its knobs and evaluators.

    Attributes:
        fields: candidate fields, in knob order (``target`` and ``batch_size`` always among them).
        facts: what the build learned (a knob's, e.g. the share really pruned).
        metrics: every evaluator's columns, in evaluator order.
        objectives: (metric, direction) the study optimizes, in config order.
        intervals: metric -> (low column, high column, relative noise floor).
        timed: metrics whose figures depend on what else runs; the re-timing phase refreshes them
            and ``search_<metric>`` keeps the value measured during the search.
        timed_columns: the float columns of timed evaluators (p95, throughput, energy's too): a re-timed row
            holds the geometric mean of its sessions' figures of each.
        notes: evaluator name -> how its figures were measured, for the model card: (row, target config) -> text.
        runtime: the knobs' ONNX Runtime settings for a row's field values (for the card).
        constraints: the run's limits (``constraints.*``); when there are any, each row gains ``violation`` and
            ``feasible`` and the front is the feasible trials' (search/core/constraints.py).
    """

    fields: tuple[Field, ...]
    facts: tuple[Column, ...] = ()
    metrics: tuple[Column, ...] = ()
    objectives: tuple[tuple[str, str], ...] = ()
    intervals: Mapping[str, tuple[str, str, float]] = field(default_factory=dict)
    timed: tuple[str, ...] = ()
    timed_columns: tuple[str, ...] = ()
    notes: Mapping[str, Callable[[dict[str, Any], dict[str, Any]], str]] = field(default_factory=dict)
    runtime: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None
    constraints: Constraints = Constraints()

    @property
    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    @property
    def candidate_columns(self) -> list[str]:
        """Fields, each followed by its alias column where it has one (``degree``, then ``threads``)."""
        found: list[str] = []
        for f in self.fields:
            found += [f.name] + ([f.alias] if f.alias else [])
        return found

    @property
    def result_columns(self) -> list[str]:
        """Facts and metrics: what a trial's outcome fills."""
        return [c.name for c in (*self.facts, *self.metrics)]

    @property
    def averaged(self) -> tuple[str, ...]:
        """The columns a re-timed row averages over its re-timing sessions (search/results/intervals.py)."""
        return self.timed_columns or self.timed

    @property
    def search_columns(self) -> list[str]:
        return [f"search_{m}" for m in self.timed]

    @property
    def columns(self) -> list[str]:
        """Every column of trials.csv and pareto.csv, in order."""
        return [*HEAD, *self.candidate_columns, *self.result_columns, *self.constraint_columns, TAIL[0],
                *self.search_columns, *TAIL[1:]]

    @property
    def constraint_columns(self) -> list[str]:
        return [VIOLATION, FEASIBLE] if self.constraints else []

    @property
    def numeric_columns(self) -> list[str]:
        """The columns a limit can be put on: numeric fields, facts and metrics."""
        return [c.name for c in (*self.fields, *self.facts, *self.metrics) if c.kind in ("int", "float")]

    @property
    def integer_columns(self) -> list[str]:
        ints = [c.name for c in (*self.fields, *self.facts, *self.metrics) if c.kind == "int"]
        return ints + [f.alias for f in self.fields if f.alias and f.kind == "int"] + list(TAIL_INTEGERS)

    def column(self, name: str) -> Column | None:
        return next((c for c in (*self.fields, *self.facts, *self.metrics) if c.name == name), None)

    def direction(self, metric: str) -> str | None:
        """``maximize``/``minimize`` for an objective, else None."""
        return dict(self.objectives).get(metric)

    def axis_label(self, name: str, values_of: Callable[[str], Sequence[Any]] | None = None) -> str:
        column = self.column(name)
        return column.axis_label(values_of) if column else name

    def plot_scale(self, name: str) -> float:
        column = self.column(name)
        return column.plot_scale if column else 1.0

    def check_unique(self) -> None:
        """Two plugins declaring one column would overwrite each other's figures."""
        names = [*HEAD, *self.candidate_columns, *self.result_columns, *TAIL]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"columns declared twice by the configured plugins: {', '.join(twice)}")
