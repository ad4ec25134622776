"""Samplers the config names (conf/sampler/): Optuna's, with their bookkeeping made incremental.

Optuna's NSGA-II recomputes three things on every ask from the whole study: the intersection
search space (from the oldest trial still running: one long trial in flight makes every ask
re-read every trial since), the generation of the trial asked (a scan of every completed trial)
and the parent population (a scan of every trial). Over 1,000 trials of bench/load.py that grew
the driver's ask from 26 to 43 ms. Here each is kept as trials are told (``after_trial``), so an
ask costs the same at trial 2,000 as at trial 100, and every draw is the one Optuna's sampler
makes (tests/test_samplers.py compares them draw for draw).

One sampler instance serves one study and one driver (the run lock sees to it); a resumed run's
fresh instance rebuilds its bookkeeping from the study once, on its first ask.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from search.core.optuna_private import (FilteredStudy, generation_key, set_ga_keys, set_trial_system_attr, storage_of,
                                        study_id)


class IncrementalNSGAIISampler(optuna.samplers.NSGAIISampler):
    """``optuna.samplers.NSGAIISampler`` (same arguments, same draws) at a cost per ask that does not grow."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._space: dict[str, BaseDistribution] | None = None  # intersection over completed trials; None: none yet
        self._generations: Counter[int] = Counter()  # completed trials per generation
        self._parents: dict[int, list[FrozenTrial]] = {}
        self._synced = False

    def _sync(self, study: optuna.Study) -> None:
        """Once per instance: the bookkeeping of the trials completed before it (a resumed study)."""
        if self._synced:
            return
        self._synced = True
        for trial in study.get_trials(deepcopy=False, states=[TrialState.COMPLETE]):
            self._count(trial)

    def _count(self, trial: FrozenTrial) -> None:
        if self._space is None:
            self._space = dict(trial.distributions)
        else:
            self._space = {name: d for name, d in self._space.items() if trial.distributions.get(name) == d}
        self._generations[trial.system_attrs.get(generation_key(self), -1)] += 1

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        self._sync(study)
        # sorted by name as IntersectionSearchSpace returns it; single values are drawn independently
        return {name: d for name, d in sorted((self._space or {}).items()) if not d.single()}

    def get_trial_generation(self, study: optuna.Study, trial: FrozenTrial) -> int:
        generation = trial.system_attrs.get(generation_key(self), None)
        if generation is not None:
            return generation
        self._sync(study)
        counted = [g for g in self._generations if g >= 0]
        newest = max(counted, default=0)
        assert self.population_size is not None, "population size must be set"
        generation = newest + 1 if self._generations.get(newest, 0) >= self.population_size else newest
        set_trial_system_attr(study, trial, generation_key(self), generation)
        return generation

    def get_parent_population(self, study: optuna.Study, generation: int) -> list[FrozenTrial]:
        """A generation's parents never change once chosen (the base keeps their ids in the study):
        kept here in the order the base reads them back, by trial number. The base returns its
        first choice in selection order, so that call is passed through as it is."""
        if generation in self._parents:
            return self._parents[generation]
        parents = super().get_parent_population(study, generation)
        self._parents[generation] = sorted(parents, key=lambda t: t.number)
        return parents

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        super().after_trial(study, trial, state, values)
        if state == TrialState.COMPLETE and self._synced:  # before the first ask, _sync counts it from the study
            self._count(trial)


# Optuna names a subclass's study attributes after the subclass; these keep NSGA-II's names, so a run
# started with optuna.samplers.NSGAIISampler resumes with its generations and parents.
set_ga_keys(IncrementalNSGAIISampler)


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """Losses ``a`` at least as good as ``b`` everywhere and better somewhere."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))


def losses(study: optuna.Study, values: Sequence[float]) -> list[float]:
    """Objective values as losses (a maximized one negated)."""
    return [v if d == optuna.study.StudyDirection.MINIMIZE else -v
            for v, d in zip(values, study.directions, strict=True)]


class LossFront:
    """The non-dominated trials by their losses (``losses``), grown one finished trial at a time: what the
    sampler wrappers here keep instead of reading the study. Iterating gives the members' numbers."""

    def __init__(self) -> None:
        self.losses: dict[int, list[float]] = {}

    def add(self, number: int, mine: list[float]) -> bool:
        """Whether trial ``number`` joined (no member dominates or equals it); members it dominates leave."""
        if any(dominates(other, mine) or other == mine for other in self.losses.values()):
            return False
        self.losses = {n: other for n, other in self.losses.items() if not dominates(mine, other)}
        self.losses[number] = mine
        return True

    def __iter__(self) -> Iterator[int]:
        return iter(self.losses)

    def __len__(self) -> int:
        return len(self.losses)


def _window(study: optuna.Study, keep: set[int], running: set[int]) -> optuna.Study:
    """The study as a sampler sees it through ``WindowedSampler``: of its finished trials, only those ``keep``
    numbers, and every unfinished one. Its trials are looked up by number, so a read costs the window, not the
    study: filtering all 2,000 trials of a study on each of an ask's three calls cost 2 ms a call."""
    storage = storage_of(study)

    def shown() -> list[FrozenTrial]:  # ``running`` is the sampler's own set, read as it stands at each call
        numbers = sorted(keep | running)
        waiting = storage.get_all_trials(study_id(study), deepcopy=False, states=(TrialState.WAITING,))
        found = [storage.get_trial(storage.get_trial_id_from_study_id_trial_number(study_id(study), n))
                 for n in numbers]
        return sorted(found + waiting, key=lambda t: t.number)

    return FilteredStudy(study, shown)


class WindowedSampler(optuna.samplers.BaseSampler):
    """``base``, shown at most ``window`` finished trials: the newest front members (up to half of them) and
    the latest trials, so that a sampler whose ask grows with the study (TPE reads every trial: 19 ms at
    100 trials, 50 ms at 2,000 here) keeps a flat cost. Up to ``window`` finished trials it sees the whole
    study and draws exactly as ``base``; past it, it still sees the trade-offs found (the front) and what
    was tried lately, where it is searching."""

    def __init__(self, base: optuna.samplers.BaseSampler, window: int = 300) -> None:
        self.base, self.window = base, window
        self._recent: dict[int, None] = {}  # finished trial numbers, oldest first (a dict keeps order)
        self._running: set[int] = set()  # started, not finished
        self._front = LossFront()
        self._shown: tuple[int, optuna.Study] | None = None  # (id of the study, its view) until a trial finishes
        self._synced = False

    def _sync(self, study: optuna.Study) -> None:
        if self._synced:
            return
        self._synced = True
        for trial in study.get_trials(deepcopy=False):
            if trial.state == TrialState.RUNNING:
                self._running.add(trial.number)
            elif trial.state != TrialState.WAITING:
                self._finished(study, trial.number, trial.values if trial.state == TrialState.COMPLETE else None)

    def _finished(self, study: optuna.Study, number: int, values: Sequence[float] | None) -> None:
        self._running.discard(number)
        self._recent[number] = None
        self._shown = None
        if len(self._recent) > self.window:
            del self._recent[next(iter(self._recent))]
        if values is not None:
            self._front.add(number, losses(study, values))

    def _view(self, study: optuna.Study) -> optuna.Study:
        """The study as ``base`` sees it; made once until a trial finishes (an ask calls the base ~16 times)."""
        self._sync(study)
        if len(self._recent) < self.window:  # nothing left out yet: the study itself
            return study
        if self._shown is None or self._shown[0] != id(study):
            # at most `window` trials in all: the newest front members (up to half of it), then the latest
            front = sorted(self._front, reverse=True)[:self.window // 2]
            latest = list(self._recent)[len(self._recent) - (self.window - len(front)):]
            self._shown = (id(study), _window(study, set(front) | set(latest), self._running))
        return self._shown[1]

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._sync(study)  # first: a resumed study's running trials are learnt from the study, this one too
        self._running.add(trial.number)
        self.base.before_trial(self._view(study), trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.base.infer_relative_search_space(self._view(study), trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self.base.sample_relative(self._view(study), trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self.base.sample_independent(self._view(study), trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self.base.after_trial(study, trial, state, values)
        if self._synced:  # before the first ask, _sync learns it from the study
            self._finished(study, trial.number, values if state == TrialState.COMPLETE else None)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()
