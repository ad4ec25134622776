"""The knob interface: narrow to a target once, then suggest values per trial."""

from __future__ import annotations

import abc
import logging
from typing import Any
from collections.abc import Sequence

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from search.candidate import Candidate
from search.errors import ConfigError
from search.runtime.target import Target


class Knob(abc.ABC):
    """One dimension of the search space.

    A knob is built from config (``_target_``), narrowed once to what the target supports,
    and then asked for its values on every trial. Knobs run in config order, so a knob may
    depend on the values suggested before it (distillation only where pruning happened).
    """

    name: str = ""

    def narrow(self, target: Target) -> None:  # noqa: B027 - most knobs need no narrowing
        """Restrict the knob's choices to what ``target`` runs; raise ConfigError if none remain."""

    def baseline(self) -> dict[str, Any]:
        """This knob's params in the unoptimized baseline trial (trial 0); {} leaves them to the sampler."""
        return {}

    def cover(self) -> list[dict[str, Any]]:
        """Params that, tried once each, measure every mode this knob declares ([]: nothing to cover)."""
        return []

    @abc.abstractmethod
    def distributions(self) -> dict[str, BaseDistribution]:
        """The Optuna params this knob searches, after narrowing; the same on every trial."""

    @abc.abstractmethod
    def suggest(self, trial: optuna.Trial, chosen: dict[str, Any]) -> dict[str, Any]:
        """Return this knob's Candidate fields for ``trial``; ``chosen`` holds earlier knobs' fields."""

    def draw(self, trial: optuna.Trial, name: str) -> Any:
        """The trial's value of ``name``, from its one declaration in ``distributions()``.

        Optuna refuses a param whose distribution changes within a study, so suggest() must
        not restate it: it draws from the same declaration the whole-space ask uses.
        """
        distribution = self.distributions()[name]
        if isinstance(distribution, CategoricalDistribution):
            return trial.suggest_categorical(name, distribution.choices)
        if isinstance(distribution, IntDistribution):
            return trial.suggest_int(name, distribution.low, distribution.high, step=distribution.step)
        if isinstance(distribution, FloatDistribution):
            return trial.suggest_float(name, distribution.low, distribution.high, step=distribution.step)
        raise TypeError(f"{name}: unsupported distribution {type(distribution).__name__}")


def with_baseline(knob: str, choices: list[Any], value: Any) -> list[Any]:
    """Choices that include the unoptimized value, which the fp32 baseline trial (trial 0) takes.

    Optuna fixes a param's distribution for the whole study, and a trial without a param
    empties NSGA-II's intersection search space; so the baseline must be a trial of this very
    space, and the unoptimized value must be one of its choices.
    """
    if value in choices:
        return choices
    logging.getLogger("search").warning("%s: added %r to the choices %s so the baseline trial belongs to the space",
                                        knob, value, choices)
    return [value, *choices]


def check_choices(knob: str, choices: Sequence[Any], allowed: Sequence[Any], target: str) -> list[Any]:
    """The declared choices the target allows, in declared order; a config error if none."""
    kept = [c for c in choices if c in allowed]
    if not kept:
        raise ConfigError(f"{knob}: none of {list(choices)} runs on target {target} (it supports {list(allowed)})")
    return kept


def space(knobs: Sequence[Knob]) -> dict[str, BaseDistribution]:
    """Every knob's params: ``study.ask(fixed_distributions=...)`` samples a whole candidate at once.

    Sampling param by param makes the sampler re-read all trials from storage for each one
    (measured: ~5 ms each on SQLite, ~30 ms a trial); asking for the whole space does it once.
    """
    merged: dict[str, BaseDistribution] = {}
    for knob in knobs:
        merged.update(knob.distributions())
    return merged


def baseline_params(knobs: Sequence[Knob]) -> dict[str, Any]:
    """The baseline trial's fixed params: fp32, unpruned, sequential, on the first target."""
    fixed: dict[str, Any] = {}
    for knob in knobs:
        fixed.update(knob.baseline())
    return fixed


def cover_params(knobs: Sequence[Knob]) -> list[dict[str, Any]]:
    """The fewest trials' fixed params in which every knob's every declared mode occurs once.

    Trial i takes entry i (round robin) of each knob's cover list; params no list fixes are
    left to the sampler. Without this a 40-trial search could leave a declared mode (a
    calibration method, a pipeline) unmeasured by chance.
    """
    lists = [c for c in (knob.cover() for knob in knobs) if c]
    if not lists:
        return []
    trials = []
    for i in range(max(len(c) for c in lists)):
        fixed: dict[str, Any] = {}
        for entries in lists:
            fixed.update(entries[i % len(entries)])
        trials.append(fixed)
    return trials


def suggest_candidate(knobs: Sequence[Knob], trial: optuna.Trial, target: Target, batch_size: int) -> Candidate:
    chosen: dict[str, Any] = {"target": target.name, "batch_size": batch_size}
    for knob in knobs:
        chosen.update(knob.suggest(trial, chosen))
    return Candidate.from_dict(chosen)
