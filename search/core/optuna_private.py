"""Every private Optuna name the project uses, gathered here so that an Optuna upgrade is checked in one file.

Written for Optuna 5.0 (pyproject pins ``optuna>=5.0,<6``) and checked against 5.0.0 and 5.1.0 by
tests/test_optuna_private.py, which exercises each name below. Nothing outside this module may
reach into Optuna's private API (tests/test_layout.py holds every module to it). Why each is needed:

* ``storage_of``, ``trial_id``, ``study_id``: a finished trial's attributes can only be set through the
  storage (``Study`` has no public setter for a trial it no longer holds), and the mirrored storage
  (search/strategy/mirrored_storage.py) maps memory's ids to the file's.
* ``rdb_models``, ``rdb_session``, ``FrozenStudy``: the mirrored storage writes study.db through Optuna's own table
  definitions and session helper, so the file keeps Optuna's schema exactly.
* ``enqueued``, ``fixed_params``: the system attribute in which ``enqueue_trial`` keeps a queued trial's params.
* ``contains``: a distribution's membership test (``Distribution._contains``), Optuna's own rule.
* ``generation_key``, ``set_ga_keys``: NSGA-II's study attribute names, which a subclass must keep so
  that a run started with Optuna's sampler resumes with its generations and parents.
* ``compute_hypervolume``: Optuna's exact hypervolume (no public export in 5.0).
* ``FilteredStudy``: a study whose trial list a sampler reads is a subset of the real one; samplers
  read it through ``Study._get_trials``, which is what it overrides.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Container
from typing import Any

import optuna
from optuna._hypervolume import compute_hypervolume
from optuna.distributions import BaseDistribution
from optuna.storages._rdb import models as rdb_models
from optuna.storages._rdb.storage import _create_scoped_session as rdb_session
from optuna.study._frozen import FrozenStudy
from optuna.trial import FrozenTrial, TrialState

WRITTEN_FOR = ("5.0", "5.1")  # Optuna minor versions this module was checked against


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    return study._storage  # noqa: SLF001


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    return trial._trial_id  # noqa: SLF001


def study_id(study: Any) -> int:
    """The storage's id of a ``Study`` or a ``FrozenStudy``."""
    return study._study_id  # noqa: SLF001


def set_trial_system_attr(study: optuna.Study, trial: optuna.Trial | FrozenTrial, key: str, value: Any) -> None:
    storage_of(study).set_trial_system_attr(trial_id(trial), key, value)


def set_trial_user_attr(study: optuna.Study, trial: optuna.Trial | FrozenTrial, key: str, value: Any) -> None:
    storage_of(study).set_trial_user_attr(trial_id(trial), key, value)


def enqueued(trial: FrozenTrial) -> bool:
    """Whether the trial was queued with fixed params (``enqueue_trial``), not drawn by the sampler."""
    return "fixed_params" in trial.system_attrs


def fixed_params(trial: FrozenTrial) -> dict[str, Any]:
    """The params a queued trial was given (Optuna keeps them in a system attribute until they are drawn)."""
    return dict(trial.system_attrs.get("fixed_params") or {})


def contains(distribution: BaseDistribution, value: Any) -> bool:
    """Whether ``value`` (external representation) lies in ``distribution``, by Optuna's own test."""
    try:
        internal = distribution.to_internal_repr(value)
    except (ValueError, TypeError):
        return False
    return bool(distribution._contains(internal))  # noqa: SLF001


def generation_key(sampler: optuna.samplers.NSGAIISampler) -> str:
    return sampler._get_generation_key()  # noqa: SLF001


def set_ga_keys(subclass: type, like: type = optuna.samplers.NSGAIISampler) -> None:
    """Give ``subclass`` the study attribute names of ``like``: Optuna names them after the class."""
    subclass._GENERATION_KEY = like._GENERATION_KEY  # noqa: SLF001
    subclass._PARENT_CACHE_KEY_PREFIX = like._PARENT_CACHE_KEY_PREFIX  # noqa: SLF001


class FilteredStudy(optuna.study.Study):
    """The study as a sampler sees it through a filter: ``trials()`` gives the trials shown.

    It shares the study's state (no storage round trip to make it); Optuna's Hyperband pruner shows its
    samplers a bracket of the study the same way. Samplers read trials through ``_get_trials``.
    """

    def __init__(self, study: optuna.Study, trials: Callable[[], list[FrozenTrial]]) -> None:  # a view: no new study
        self.__dict__.update(study.__dict__)
        self._shown = trials

    def _get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None,
                    use_cache: bool = False) -> list[FrozenTrial]:
        trials = [t for t in self._shown() if states is None or t.state in states]
        return copy.deepcopy(trials) if deepcopy else trials


__all__ = ["FilteredStudy", "FrozenStudy", "WRITTEN_FOR", "compute_hypervolume", "contains", "enqueued", "fixed_params",
           "generation_key", "rdb_models",
           "rdb_session", "set_ga_keys", "set_trial_system_attr", "set_trial_user_attr", "storage_of", "study_id",
           "trial_id"]
