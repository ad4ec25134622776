"""The incremental NSGA-II draws exactly what Optuna's NSGA-II draws, on a fresh and on a resumed study."""

from __future__ import annotations

import random

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from search.core import optuna_private as private
from search.strategy.samplers import IncrementalNSGAIISampler, WindowedSampler, dominates, losses

SPACE = {"bits": CategoricalDistribution([4, 8, 16, 32]), "rate": FloatDistribution(0.0, 0.8),
         "degree": IntDistribution(2, 8), "mode": CategoricalDistribution(["a", "b", "c"])}


def drive(study: optuna.Study, trials: int, seed: int) -> list[dict]:
    """Four trials in flight, finishing in a shuffled order; some fail, some are pruned, one stays long."""
    rng, drawn, in_flight = random.Random(seed), [], []
    while len(drawn) < trials or in_flight:
        while len(in_flight) < 4 and len(drawn) < trials:
            trial = study.ask(fixed_distributions=SPACE)
            drawn.append(dict(trial.params))
            in_flight.append(trial)
        # the first trial of each 30 stays in flight for a while, as a long trial would
        pick = rng.randrange(1, len(in_flight)) if len(in_flight) > 1 and in_flight[0].number % 30 == 0 \
            and len(drawn) < trials else rng.randrange(len(in_flight))
        trial = in_flight.pop(pick)
        roll = rng.random()
        if roll < 0.1:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        elif roll < 0.15:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, [rng.random(), rng.random(), rng.random()])
    return drawn


def study_with(sampler: optuna.samplers.BaseSampler, storage: str | None = None) -> optuna.Study:
    return optuna.create_study(directions=["maximize", "minimize", "minimize"], sampler=sampler, storage=storage,
                               study_name="s", load_if_exists=True)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_incremental_sampler_draws_what_optunas_nsga2_draws(seed):
    stock = drive(study_with(optuna.samplers.NSGAIISampler(population_size=6, seed=seed)), 120, seed)
    mine = drive(study_with(IncrementalNSGAIISampler(population_size=6, seed=seed)), 120, seed)
    assert mine == stock


def test_a_resumed_study_draws_the_same_as_with_optunas_sampler(tmp_path):
    runs = {}
    for name, kind in (("stock", optuna.samplers.NSGAIISampler), ("mine", IncrementalNSGAIISampler)):
        storage = f"sqlite:///{tmp_path / name}.db"
        first = drive(study_with(kind(population_size=6, seed=3), storage), 50, 3)
        # a new driver on the same study: a fresh sampler instance, bookkeeping rebuilt from the study
        second = drive(study_with(kind(population_size=6, seed=4), storage), 50, 4)
        runs[name] = first + second
    assert runs["mine"] == runs["stock"]


class Spy(optuna.samplers.RandomSampler):
    """Random draws; records how many finished trials each relative sampling saw."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed=seed)
        self.seen: list[tuple[int, int, int]] = []  # (finished trials seen, front members among them, front size)
        self.owner: WindowedSampler | None = None
        self.every_unfinished_shown: list[bool] = []

    def infer_relative_search_space(self, study, trial):
        seen = [t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
        shown = {t.number for t in study.get_trials(deepcopy=False) if not t.state.is_finished()}
        everything = private.storage_of(study).get_all_trials(private.study_id(study), deepcopy=False)  # not the view
        self.every_unfinished_shown.append(shown == {t.number for t in everything if not t.state.is_finished()})
        self.seen.append((len(seen), len(set(seen) & set(self.owner._front)), len(self.owner._front)))
        return {}


def test_the_windowed_sampler_draws_as_its_base_until_the_window_fills():
    plain = drive(study_with(optuna.samplers.TPESampler(seed=2, n_startup_trials=5)), 40, 2)
    windowed = drive(study_with(WindowedSampler(optuna.samplers.TPESampler(seed=2, n_startup_trials=5), window=50)),
                     40, 2)
    assert windowed == plain


def test_past_the_window_the_base_sees_the_front_and_the_latest_trials_only(tmp_path):
    spy = Spy(seed=0)
    sampler = spy.owner = WindowedSampler(spy, window=20)
    study = study_with(sampler)
    drive(study, 150, 5)
    assert max(seen for seen, _, _ in spy.seen) == 20  # bounded by the window, and filled
    assert all(spy.every_unfinished_shown)  # a trial in flight long before the window is still shown
    assert all(members >= min(front, 10) for _, members, front in spy.seen)  # the front, up to half the window
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    front = {t.number for t in completed
             if not any(dominates(losses(study, o.values), losses(study, t.values)) for o in completed)}
    assert set(sampler._front) == front

    resumed = WindowedSampler(Spy(seed=1), window=20)  # a fresh instance learns the front from the study
    resumed._sync(study)
    assert set(resumed._front) == front and len(resumed._recent) == 20
