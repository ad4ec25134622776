"""The study's storage writes an ask's params in one commit, and stores exactly what Optuna's ask stores."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from search import study as studies

SPACE = {"bits": CategoricalDistribution([4, 8, 16, 32]), "rate": FloatDistribution(0.0, 0.8, step=0.1),
         "degree": IntDistribution(1, 8), "mode": CategoricalDistribution(["a", "b", "c"])}


def run(tmp_path, name: str, one_commit: bool) -> list[optuna.trial.FrozenTrial]:
    study = optuna.create_study(storage=studies.sqlite_storage(tmp_path / f"{name}.db"), study_name="s",
                                sampler=optuna.samplers.TPESampler(seed=1, n_startup_trials=5),
                                directions=["maximize", "minimize"])
    study.enqueue_trial({"bits": 32, "rate": 0.0})  # an enqueued trial keeps its fixed params
    for i in range(20):
        trial = studies.ask(study, SPACE) if one_commit else study.ask(fixed_distributions=SPACE)
        study.tell(trial, [trial.params["rate"], i % 3])
    return optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / f'{name}.db'}").trials


def test_one_commit_asks_store_what_optunas_ask_stores(tmp_path):
    mine, stock = run(tmp_path, "mine", True), run(tmp_path, "stock", False)
    assert [(t.params, t.distributions, t.values) for t in mine] == [(t.params, t.distributions, t.values)
                                                                    for t in stock]
    assert mine[0].params["bits"] == 32 and mine[0].params["rate"] == 0.0


def test_a_param_whose_distribution_changed_is_still_refused(tmp_path):
    study = optuna.create_study(storage=studies.sqlite_storage(tmp_path / "s.db"))
    studies.ask(study, {"x": FloatDistribution(0, 1)})
    with pytest.raises(ValueError):
        studies.ask(study, {"x": CategoricalDistribution(["a", "b"])})
