"""search/core/optuna_private.py: each private Optuna name the project uses still does what the project needs.
An Optuna upgrade that moves one fails here, in one place."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution

from search.core import optuna_private as private


@pytest.fixture()
def study() -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["minimize"])
    study.enqueue_trial({"x": 0.5})
    trial = study.ask({"x": FloatDistribution(0, 1)})
    study.tell(trial, 1.0)
    return study


def test_the_written_for_versions_include_the_installed_optuna():
    assert ".".join(optuna.__version__.split(".")[:2]) in private.WRITTEN_FOR


def test_attributes_of_a_trial_are_set_through_its_storage(study):
    running = study.ask({"x": FloatDistribution(0, 1)})  # the driver marks stale running trials so
    private.set_trial_user_attr(study, running, "k", 1)
    private.set_trial_system_attr(study, running, "s", 2)
    again = private.storage_of(study).get_trial(private.trial_id(running))
    assert again.user_attrs["k"] == 1 and again.system_attrs["s"] == 2
    assert private.storage_of(study).get_all_trials(private.study_id(study))[-1].number == running.number


def test_a_queued_trial_is_known_with_its_params(study):
    frozen = study.trials[0]
    assert private.enqueued(frozen) and private.fixed_params(frozen) == {"x": 0.5}
    drawn = study.ask({"x": FloatDistribution(0, 1)})
    assert not private.enqueued(study.trials[drawn.number])


def test_membership_is_optunas_own():
    choices = CategoricalDistribution([8, 16])
    assert private.contains(choices, 8) and not private.contains(choices, 4)
    assert private.contains(FloatDistribution(0, 1, step=0.1), 0.3) and not private.contains(FloatDistribution(0, 1), 2)


def test_ga_keys_keep_nsga2s_names():
    class Mine(optuna.samplers.NSGAIISampler):
        pass

    private.set_ga_keys(Mine)
    assert private.generation_key(Mine()) == private.generation_key(optuna.samplers.NSGAIISampler())


def test_the_hypervolume_of_a_point_is_its_box():
    assert private.compute_hypervolume(np.array([[0.5, 0.5]]), np.array([1.0, 1.0])) == pytest.approx(0.25)


def test_a_filtered_study_shows_samplers_only_its_trials(study):
    view = private.FilteredStudy(study, lambda: [])
    assert view.get_trials() == [] and view._get_trials(deepcopy=False, use_cache=True) == []  # noqa: SLF001
    assert len(study.get_trials()) == 1 and view.directions == study.directions


def test_the_storage_internals_the_mirror_writes_through_are_there():
    assert hasattr(private.rdb_models, "TrialModel") and callable(private.rdb_session)
    assert private.FrozenStudy.__name__ == "FrozenStudy"
