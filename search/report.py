"""``python -m search.report RUN``: re-render a run's tables and plots from study.db and its config alone.

Writes trials.csv, trials.parquet, pareto.csv, pareto.png, pareto.html, history.png and
importance.png. Models are the driver's (they need the bytes a worker built); this only reads.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import optuna
from omegaconf import OmegaConf

from search.core.errors import ConfigError
from search.config import plugins_from_config
from search.results.render import render
from search.core.schema import Schema
from search.strategy.study import load_run_study


class ReportError(Exception):
    """The folder is not a run folder: one line, exit 2."""


def load(run_dir: Path) -> tuple[optuna.Study, Schema]:
    """The run's study and, from its stored config, the schema its plugins declare."""
    config_path, db = run_dir / "config.yaml", run_dir / "study.db"
    if not config_path.exists() or not db.exists():
        raise ReportError(f"{run_dir} has no config.yaml and study.db: is it a run folder (results/<run>)?")
    config = OmegaConf.to_container(OmegaConf.load(config_path), resolve=True)
    try:
        schema = plugins_from_config(config).schema
    except ConfigError as exc:
        raise ReportError(f"{run_dir}/config.yaml: {exc}") from None
    return load_run_study(run_dir), schema


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
    print("wrote trials.csv, trials.parquet, pareto.csv, pareto.png, pareto.html, history.png, importance.png "
          f"in {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
