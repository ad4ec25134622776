"""Every table and plot of a run folder, rendered from its trials: trials.csv/.parquet, pareto.csv,
pareto.png, pareto.html, history.png and importance.png."""

from __future__ import annotations

from pathlib import Path

import optuna

from search.core.files import write_atomically
from search.results.history import hypervolume_history
from search.results.html import write_pareto_html
from search.results.importance import importances
from search.results.plots import plot_front, plot_history, plot_importance
from search.results.tables import pareto_table, target_fronts, trials_table, write_tables
from search.core.schema import Schema
from search.core.attributes import finals_of


def render(run_dir: Path, study: optuna.Study, schema: Schema) -> None:
    table = trials_table(study.get_trials(deepcopy=False), schema, finals_of(study))
    front = pareto_table(table, schema)
    write_tables(run_dir, table, front, target_fronts(table, schema))
    write_atomically(run_dir / "trials.parquet", lambda p: table.to_parquet(p, index=False))
    if len(front):
        plot_front(run_dir / "pareto.png", table, front, schema)
        write_pareto_html(run_dir / "pareto.html", table, front, schema)
    plot_history(run_dir / "history.png", hypervolume_history(table, schema.objectives))
    plot_importance(run_dir / "importance.png", importances(study, schema.objectives))
