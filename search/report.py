"""``python -m search.report RUN``: re-render a run's tables and plots from study.db and its config alone.

Writes trials.csv, trials.parquet, pareto.csv, pareto.png, pareto.html, history.png and
importance.png. Models are the driver's (they need the bytes a worker built); this only reads.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import optuna
from hydra.utils import instantiate
from omegaconf import OmegaConf
from optuna.trial import TrialState

from evaluators import objectives as objectives_of
from evaluators._base import noise_intervals
from search.files import write_atomically
from search.history import hypervolume_history
from search.html import write_pareto_html
from search.plots import plot_front, plot_history, plot_importance
from search.results import pareto_table, target_fronts, trials_table, write_tables
from search.study import final_figures, load_run_study

MIN_TRIALS_FOR_IMPORTANCE = 4  # fANOVA fits a forest on the trials: fewer say nothing


class ReportError(Exception):
    """The folder is not a run folder: one line, exit 2."""


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


def render(run_dir: Path, study: optuna.Study, objectives: Sequence[tuple[str, str]],
           intervals: dict[str, tuple[str, str, float]]) -> None:
    table = trials_table(study.get_trials(deepcopy=False), final_figures(study))
    front = pareto_table(table, objectives, intervals)
    write_tables(run_dir, table, front, target_fronts(table, objectives, intervals))
    write_atomically(run_dir / "trials.parquet", lambda p: table.to_parquet(p, index=False))
    if len(front):
        plot_front(run_dir / "pareto.png", table, front, objectives, intervals)
        write_pareto_html(run_dir / "pareto.html", table, front, objectives)
    plot_history(run_dir / "history.png", hypervolume_history(table, objectives))
    plot_importance(run_dir / "importance.png", importances(study, objectives))


def load(run_dir: Path) -> tuple[optuna.Study, list[tuple[str, str]], dict[str, tuple[str, str, float]]]:
    """The run's study and, from its stored config, its objectives and noise intervals."""
    config_path, db = run_dir / "config.yaml", run_dir / "study.db"
    if not config_path.exists() or not db.exists():
        raise ReportError(f"{run_dir} has no config.yaml and study.db: is it a run folder (results/<run>)?")
    config = OmegaConf.load(config_path)
    evaluators = [instantiate(node) for node in config.evaluators.values()]
    return load_run_study(run_dir), objectives_of(evaluators), noise_intervals(evaluators)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m search.report results/<run>", file=sys.stderr)
        return 2
    run_dir = Path(args[0])
    try:
        render(run_dir, *load(run_dir))
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote trials.csv, trials.parquet, pareto.csv, pareto.png, pareto.html, history.png, importance.png in {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
