"""The tables of a run folder: trials.csv, pareto.csv and per-target fronts, with the columns the plugins declare."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Sequence

import numpy as np
import optuna
import pandas as pd

from search.core import attributes
from search.core.attributes import Final
from search.core.constraints import FEASIBLE, VIOLATION
from search.core.files import write_atomically
from search.core.schema import Schema
from search.results.intervals import SESSIONS, Spread, run_spreads, session_mean, widened_rows
from search.results.pareto import bounds, dominated, extend_front, pareto_mask, row_bounds


def trial_row(trial: optuna.trial.FrozenTrial, schema: Schema, final: Final | None = None) -> dict[str, Any]:
    """A trial's row, with the columns ``schema`` declares; ``final`` (the re-timing phase's figures,
    if any) overrides what the search measured."""
    outcome = attributes.outcome_of(trial)
    metrics = outcome.metrics
    candidate = attributes.candidate_of(trial)
    remeasured = bool(final and final.metrics)
    row: dict[str, Any] = {"trial": trial.number, "state": trial.state.name}
    for f in schema.fields:
        # a knob left out of this run (pruning for a bare ONNX model) reads as its "not applied" value
        row[f.name] = candidate.get(f.name, candidate.get(f.alias, f.unset) if f.alias else f.unset)
        if f.alias:
            row[f.alias] = row[f.name]
    row.update({k: metrics.get(k) for k in schema.result_columns})
    sessions = [final.metrics, *final.sessions] if remeasured else []
    if remeasured:
        row.update({k: v for k, v in final.metrics.items() if k in schema.result_columns})
        row.update(session_mean(sessions, schema.averaged))  # timed figures: the mean of the sessions
    row["final"] = remeasured
    row[SESSIONS] = sessions  # not a column: what the intervals rest on
    row.update({f"search_{m}": metrics.get(m) for m in schema.timed})
    reuse = outcome.reuse  # what the run's artifact store served this trial instead of a build
    row.update(duration_s=outcome.duration_s, store_hits=reuse.get("store_hits"),
               build_s_saved=reuse.get("build_s_saved"), node=final.node if remeasured else outcome.node,
               baseline=attributes.is_baseline(trial), started_at=_iso(trial.datetime_start),
               completed_at=_iso(trial.datetime_complete), error=attributes.error_of(trial))
    return row


def study_spreads(study: optuna.Study, schema: Schema) -> dict[str, Spread]:
    """The run's spreads between re-timing sessions (search/results/intervals.py), from its study.db."""
    finals = attributes.finals_of(study)
    return run_spreads([trial_row(t, schema, finals[t.number]) for t in study.get_trials(deepcopy=False)
                        if t.number in finals], schema)


def _float(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _iso(moment) -> str | None:
    return moment.isoformat(timespec="milliseconds") if moment else None


def trials_table(trials: Sequence[optuna.trial.FrozenTrial], schema: Schema,
                 finals: dict[int, Final] | None = None,
                 rows: dict[int, tuple[tuple, dict[str, Any]]] | None = None) -> pd.DataFrame:
    """One row per trial. ``rows`` keeps finished trials' rows between calls: a finished trial's row
    changes only with its state or its re-timed figures, so a long study does not rebuild them all."""
    finals = finals or {}
    found = []
    for t in trials:
        # queued params (a cover trial, a re-asked draw): not a trial yet
        if t.state == optuna.trial.TrialState.WAITING:
            continue
        key = (t.state, t.number in finals, len(finals[t.number].sessions) if t.number in finals else 0)
        if rows is not None and t.number in rows and rows[t.number][0] == key:
            found.append(rows[t.number][1])
            continue
        row = trial_row(t, schema, finals.get(t.number))
        if rows is not None and t.state.is_finished():
            rows[t.number] = (key, row)
        found.append(row)
    found = marked(widened_rows(found, schema), schema)  # re-timed rows' intervals cover a new session
    return pd.DataFrame(found, columns=schema.columns).astype({c: "Int64" for c in schema.integer_columns})


def pareto_table(table: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """Completed trials that no other completed trial dominates beyond measurement noise (in a constrained run,
    among the feasible ones: front_pool)."""
    done = table[table["state"] == "COMPLETE"]
    return done[_pool_front(done, schema)] if len(done) else done


def front_pool(feasible: np.ndarray | None, violation: np.ndarray | None) -> np.ndarray | None:
    """The rows a constrained run's front is chosen among: the feasible ones, or where none is, the closest
    (least violation), so that a run whose limits no trial met still keeps a model. None: unconstrained."""
    if feasible is None or violation is None:
        return None
    feasible = np.asarray(feasible, dtype=bool)
    if feasible.any() or not len(feasible):
        return feasible
    violation = np.asarray(violation, dtype=float)
    known = ~np.isnan(violation)
    return violation == violation[known].min() if known.any() else np.ones(len(violation), dtype=bool)


def met_limits(table: pd.DataFrame) -> pd.Series:
    """A constrained run's ``feasible`` column as booleans, a blank (a trial that did not complete) False."""
    return table[FEASIBLE].fillna(False).astype(bool)


def _limits_of(done: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Whether each completed row met the limits, and its violation."""
    return met_limits(done).to_numpy(), pd.to_numeric(done[VIOLATION], errors="coerce").to_numpy(dtype=float)


def _table_pool(done: pd.DataFrame, schema: Schema) -> np.ndarray | None:
    return front_pool(*_limits_of(done)) if schema.constraints else None


def _pool_front(done: pd.DataFrame, schema: Schema) -> np.ndarray:
    """The front's mask over completed rows ``done``: the Pareto front of the pool (every row, unconstrained)."""
    pool = _table_pool(done, schema)
    if pool is None:
        return pareto_mask(done, schema.objectives, schema.intervals)
    mask = np.zeros(len(done), dtype=bool)
    mask[pool] = pareto_mask(done[pool], schema.objectives, schema.intervals)
    return mask


def marked(rows: list[dict[str, Any]], schema: Schema) -> list[dict[str, Any]]:
    """A constrained run's rows with their violation and feasible columns, against the completed baseline's row
    among them (rows as they are when unconstrained)."""
    if not schema.constraints:
        return rows
    baseline = next((r for r in rows if r.get("baseline") and r.get("state") == "COMPLETE"), None)
    return [schema.constraints.marked(r, baseline) for r in rows]


@dataclass
class FrontTracker:
    """The front kept up to date as trials complete: each new row is compared with every row once
    (O(n) a trial, not O(n^2)); anything else that changes figures (re-timing) recomputes it whole."""

    trials: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    members: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    version: object = None

    def front(self, table: pd.DataFrame, schema: Schema, version: object) -> pd.DataFrame:
        """``version`` names everything else the figures depend on (the re-timed trials): when it
        changes, or a known row is gone, the front is recomputed from scratch."""
        done = table[table["state"] == "COMPLETE"]
        numbers = done["trial"].to_numpy(dtype=int)
        known = np.isin(numbers, self.trials)
        if schema.constraints and len(done):  # the pool can change with any row: the front is made whole
            mask = _pool_front(done, schema)
        elif version == self.version and known.sum() == len(self.trials):
            mask = extend_front(done, schema.objectives, schema.intervals,
                                np.isin(numbers, self.trials[self.members]), ~known)
        else:
            mask = pareto_mask(done, schema.objectives, schema.intervals) if len(done) else np.zeros(0, dtype=bool)
        self.trials, self.members, self.version = numbers, mask, version
        return done[mask]


@dataclass
class GrowingFront:
    """The front of completed rows, grown one row at a time: O(n) numpy work a row and no table of
    all rows, so a study of thousands of trials keeps a flat cost per trial.

    As ``extend_front``: a member leaves only for a new row that dominates it, and a new row joins
    only if no row at all dominates it (dominance with intervals is not transitive).
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    lows: np.ndarray | None = None
    highs: np.ndarray | None = None
    member: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    # the members' table, made again only when they change: most trials join no front (measured: 10 ms a trial)
    cached: pd.DataFrame | None = field(default=None, repr=False)
    # a constrained run's rows: whether each met the limits, and its violation (None: unconstrained); the rows
    # the front is chosen among follow from them (front_pool)
    met: np.ndarray | None = None
    violations: np.ndarray | None = None

    @classmethod
    def of(cls, table: pd.DataFrame, schema: Schema) -> GrowingFront:
        """Seeded with the completed rows of ``table`` (a resumed run's)."""
        done = table[table["state"] == "COMPLETE"]
        front = cls(rows=done.to_dict("records"))
        if schema.constraints:
            front.met, front.violations = _limits_of(done)
        if len(done):
            front.lows, front.highs = bounds(done, schema.objectives, schema.intervals)
            front.member = _pool_front(done, schema)
        return front

    def add(self, row: dict[str, Any], schema: Schema) -> bool:
        """Grow by one completed row; True when the members changed (it joined, or members left)."""
        low, high = row_bounds(row, schema.objectives, schema.intervals)
        if self.met is not None:
            self.met = np.append(self.met, bool(row.get(FEASIBLE)))
            self.violations = np.append(self.violations, _float(row.get(VIOLATION)))
        if self.lows is None:  # the first row is the front, constrained or not (a pool of one holds it)
            self.lows, self.highs = low, high
            self.rows, self.member, self.cached = [row], np.ones(1, dtype=bool), None
            return True
        self.lows, self.highs = np.vstack([self.lows, low]), np.vstack([self.highs, high])
        self.rows.append(row)
        if self.met is not None:
            return self._add_constrained()
        members = np.flatnonzero(self.member)
        leaving = members[dominated(low, high, self.lows[members], self.highs[members])] if len(members) else members
        self.member[leaving] = False
        joins = not dominated(self.lows[:-1], self.highs[:-1], low, high)[0]
        self.member = np.append(self.member, joins)
        return self._changed(bool(joins or len(leaving)))

    def _add_constrained(self) -> bool:
        """The newest row of a constrained run: compared within the pool, or the front made whole when the pool
        itself changed (the first feasible row; a closer one while none is feasible)."""
        pool = front_pool(self.met, self.violations)
        before = self.member.copy()
        if not np.array_equal(pool[:-1], front_pool(self.met[:-1], self.violations[:-1])):
            self.member = np.zeros(len(self.rows), dtype=bool)
            inside = np.flatnonzero(pool)
            self.member[inside] = ~dominated(self.lows[inside], self.highs[inside], self.lows[inside],
                                             self.highs[inside])
        elif not pool[-1]:
            self.member = np.append(self.member, False)
        else:
            low, high = self.lows[-1:], self.highs[-1:]
            members = np.flatnonzero(self.member)
            if len(members):
                self.member[members[dominated(low, high, self.lows[members], self.highs[members])]] = False
            inside = np.flatnonzero(pool[:-1])
            joins = not len(inside) or not dominated(self.lows[inside], self.highs[inside], low, high)[0]
            self.member = np.append(self.member, joins)
        return self._changed(not np.array_equal(np.append(before, False), self.member))

    def _changed(self, changed: bool) -> bool:
        if changed:
            self.cached = None
        return changed

    def feasible(self) -> int | None:
        """How many of a constrained run's completed rows met its limits (None: unconstrained)."""
        return None if self.met is None else int(self.met.sum())

    def members(self) -> list[dict[str, Any]]:
        return [row for row, keep in zip(self.rows, self.member, strict=True) if keep]

    def table(self, schema: Schema) -> pd.DataFrame:
        if self.cached is None:
            self.cached = pd.DataFrame(self.members(), columns=schema.columns).astype(
                {c: "Int64" for c in schema.integer_columns})
        return self.cached


def target_fronts(table: pd.DataFrame, schema: Schema) -> dict[str, pd.DataFrame]:
    """Each target's own front, for a study across several targets ({} for one target)."""
    done = table[table["state"] == "COMPLETE"]
    names = sorted(done["target"].dropna().unique())
    if len(names) < 2:
        return {}
    return {name: pareto_table(table[table["target"] == name], schema) for name in names}


def front_members(front: pd.DataFrame, per_target: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Trials on the overall front or on their target's: the models a run keeps and re-times."""
    if not per_target:
        return front
    return pd.concat([front, *per_target.values()]).drop_duplicates("trial").sort_values("trial")


def write_tables(run_dir: Path, table: pd.DataFrame, front: pd.DataFrame,
                 per_target: dict[str, pd.DataFrame] | None = None) -> None:
    """trials.csv, pareto.csv and, across several targets, pareto-<target>.csv for each."""
    write_atomically(run_dir / "trials.csv", lambda p: table.to_csv(p, index=False))
    write_atomically(run_dir / "pareto.csv", lambda p: front.to_csv(p, index=False))
    for name, target_front in (per_target or {}).items():
        write_atomically(run_dir / f"pareto-{name}.csv", lambda p, f=target_front: f.to_csv(p, index=False))
