"""Every table and plot of a run folder, rendered from its trials: trials.csv/.parquet, pareto.csv,
pareto.png, pareto.html, history.png and importance.png."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import optuna
from optuna.trial import TrialState

from search.files import write_atomically
from search.results.history import hypervolume_history
from search.results.html import write_pareto_html
from search.results.plots import plot_front, plot_history, plot_importance
from search.results.tables import pareto_table, target_fronts, trials_table, write_tables
from search.schema import Schema
from search.study import final_figures

MIN_TRIALS_FOR_IMPORTANCE = 4  # fANOVA fits a forest on the trials: fewer say nothing


def importances(study: optuna.Study, objectives: Sequence[tuple[str, str]]) -> dict[str, dict[str, float] | str]:
    """Each objective's fANOVA importance of every knob over the completed trials, or why there is none."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    found: dict[str, dict[str, float] | str] = {}
    for index, (metric, _) in enumerate(objectives):
        if len(done) < MIN_TRIALS_FOR_IMPORTANCE:
            found[metric] = f"needs {MIN_TRIALS_FOR_IMPORTANCE} completed trials"
            continue
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                found[metric] = optuna.importance.get_param_importances(
                    study, evaluator=evaluator, target=lambda t, i=index: t.values[i])
        except RuntimeError:  # fANOVA's "zero total variance": every trial scored the same
            found[metric] = "the same in every trial"
    return found


def render(run_dir: Path, study: optuna.Study, schema: Schema) -> None:
    table = trials_table(study.get_trials(deepcopy=False), schema, final_figures(study))
    front = pareto_table(table, schema)
    write_tables(run_dir, table, front, target_fronts(table, schema))
    write_atomically(run_dir / "trials.parquet", lambda p: table.to_parquet(p, index=False))
    if len(front):
        plot_front(run_dir / "pareto.png", table, front, schema)
        write_pareto_html(run_dir / "pareto.html", table, front, schema)
    plot_history(run_dir / "history.png", hypervolume_history(table, schema.objectives))
    plot_importance(run_dir / "importance.png", importances(study, schema.objectives))
