"""A sampler that spends some trials re-running the front's built models under the runtime settings
that put other models on the front.

A trial's cost is its build (prune, recover, quantize); measuring a model already built under another
parallelism mode, degree or batch size costs one measurement, because the run's artifact store serves
the model (search/run/store.py). Runtime settings also matter much alike across models of one family:
the mode that makes one pruned model fast tends to make the next fast too. A sampler that draws every
param jointly (random, TPE, NSGA-II) only finds a good build under a good runtime setting by chance.

So ``RuntimeRefiningSampler`` wraps any Optuna sampler. Whenever a build is on the front, and a runtime
setting that another front member runs has not been tried with it, up to ``share`` of the trials the
wrapped sampler would draw are spent on such a pair instead: the build's params with that runtime
setting's. Each is its own trial, row and measurement, told to the wrapped sampler like any other.
Which params are runtime the driver says (``set_runtime_params``): those of knobs that build nothing.

The bookkeeping is kept as trials are told, and rebuilt from the study by a fresh instance (a resumed
run), so an ask costs the same at trial 2,000 as at trial 100 (bar the front's size).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from search.core import attributes
from search.core.optuna_private import contains, enqueued, fixed_params
from search.strategy.samplers import LossFront, losses

Key = tuple[tuple[str, Any], ...]


def _key(params: dict[str, Any], names: Iterable[str]) -> Key:
    return tuple(sorted((name, params[name]) for name in names if name in params))


class RuntimeRefiningSampler(optuna.samplers.BaseSampler):
    """Draws as ``base`` does, except that up to ``share`` of the trials re-run a front member's build
    under a runtime setting another front member runs (one the build has not been tried with)."""

    def __init__(self, base: optuna.samplers.BaseSampler, share: float = 0.25) -> None:
        if not 0.0 <= share < 1.0:
            raise ValueError(f"share must be in [0, 1), got {share}")
        self.base, self.share = base, share
        self.runtime: frozenset[str] = frozenset()
        self.runtime_fields: frozenset[str] = frozenset()
        self._front = LossFront()
        # front member -> (build key, runtime key, its params): what it built and ran, and the params to ask
        self._runs: dict[int, tuple[Key, Key, dict[str, Any]]] = {}
        self._tried: set[tuple[Key, Key]] = set()  # (build, runtime) pairs asked so far, finished or not
        self._planned: dict[int, dict[str, Any]] = {}  # trial number -> the params it re-runs with
        self._drawn = self._refined = 0  # trials the sampler chose (not enqueued), and how many refined
        self._synced = False

    def set_runtime_params(self, names: Iterable[str], fields: Iterable[str] = ()) -> None:
        """The params that only change how a built model runs, and the candidate fields they set (the
        driver knows both from the knobs). With the fields, pairs are told apart by what was built and
        run (the ``candidate`` user attribute): a degree drawn for a sequential run changes neither."""
        self.runtime, self.runtime_fields = frozenset(names), frozenset(fields)

    # --- bookkeeping --------------------------------------------------------------------------

    def _sync(self, study: optuna.Study, current: int) -> None:
        """Once per instance: learn the trials asked before it (a resumed study)."""
        if self._synced:
            return
        self._synced = True
        for trial in study.get_trials(deepcopy=False):
            if trial.state == TrialState.WAITING or trial.number == current:
                continue
            self._tried.add(self._keys(trial))
            if not enqueued(trial):
                self._drawn += 1
                self._refined += attributes.refines(trial) is not None
            if trial.state == TrialState.COMPLETE and trial.values:
                self._add_to_front(study, trial, trial.values)

    def _keys(self, trial: FrozenTrial) -> tuple[Key, Key]:
        """(build, runtime) of what the trial built and ran: from its candidate where the driver set one."""
        candidate = attributes.candidate_of(trial)
        if candidate and self.runtime_fields:
            return (_key(candidate, set(candidate) - self.runtime_fields - {"runtime"}),
                    _key(candidate, self.runtime_fields))
        params = trial.params or fixed_params(trial)
        return _key(params, set(params) - self.runtime), _key(params, self.runtime)

    def _add_to_front(self, study: optuna.Study, trial: FrozenTrial, values: Sequence[float]) -> None:
        if self._front.add(trial.number, losses(study, values)):
            self._runs = {n: self._runs[n] for n in self._front if n in self._runs}
            self._runs[trial.number] = (*self._keys(trial), dict(trial.params))

    def _refinement(self) -> tuple[int, dict[str, Any]] | None:
        """The next (front member, params) to re-run: the newest front builds first, each under the
        runtime setting most front members run that it has not been tried with."""
        counts: dict[Key, int] = {}
        runs_with: dict[Key, dict[str, Any]] = {}  # runtime key -> the runtime params of a member that ran it
        for _, runtime, params in self._runs.values():
            counts[runtime] = counts.get(runtime, 0) + 1
            runs_with.setdefault(runtime, {n: v for n, v in params.items() if n in self.runtime})
        settings = sorted(counts, key=lambda r: -counts[r])
        for number in sorted(self._runs, reverse=True):
            build, _, params = self._runs[number]
            for runtime in settings:
                if (build, runtime) not in self._tried:
                    self._tried.add((build, runtime))
                    return number, {**params, **runs_with[runtime]}
        return None

    # --- the sampler interface ----------------------------------------------------------------

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.base.before_trial(study, trial)
        self._sync(study, trial.number)
        if enqueued(trial):  # enqueued (baseline, cover, re-asked): not the sampler's to choose
            return
        self._drawn += 1
        if not self.runtime or self._refined + 1 > self.share * self._drawn:
            return
        found = self._refinement()
        if found is None:
            return
        number, params = found
        self._planned[trial.number] = params
        self._refined += 1
        attributes.write_refines(study, trial, number)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        if trial.number in self._planned:
            return {}
        return self.base.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if trial.number in self._planned:
            return {}
        return self.base.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        planned = self._planned.get(trial.number, {})
        if param_name in planned and contains(param_distribution, planned[param_name]):
            return planned[param_name]
        return self.base.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self.base.after_trial(study, trial, state, values)
        self._planned.pop(trial.number, None)
        if not self._synced:  # before the first ask, _sync learns it from the study
            return
        self._tried.add(self._keys(trial))
        if state == TrialState.COMPLETE and values:
            self._add_to_front(study, trial, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()
