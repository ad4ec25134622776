"""Which knobs drive each objective (importance.png), said no more firmly than the trials allow.

fANOVA fits a random forest whose leaves hold one trial each, so it fits noise as readily as an
effect, and optuna's normalized shares always sum to 1: on a pure-noise objective with the run's
seven knobs, one knob took 23-59 % of the "importance" at 8 to 32 trials (measured here). So each
objective is refitted on bootstrap resamples of the completed trials, with a decoy knob of random
values beside the real ones: a knob counts only when its 10 % whisker clears the decoy's 90 % and
a floor of 2 %.
Shares are fANOVA's unnormalized main effects: the fraction of the variance a knob explains alone.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import optuna
from optuna.distributions import FloatDistribution
from optuna.search_space import intersection_search_space
from optuna.trial import FrozenTrial, TrialState

# Measured with the run's seven knobs on random-sampler studies (8 a size; model size set by quant_bits and
# prune_rate, a pure-noise objective, a latency one mode shifts by one noise s.d.), with the test of _summary: under 20
# trials the picture is mostly chance (10 trials: quant_bits found in 2 of 8 studies, a no-effect knob called
# important in 2; 14 trials: 4 of 8, and 1); at 21, 32 and 40 trials quant_bits was found in 7, 7 and 8 of 8 and
# no-effect knobs were called important 0, 2 and 3 times in 144 chances. The test is strict: the one-s.d. mode
# shift was found in only 1-3 of 8, so grey means "not shown to matter", not "shown not to matter". 3 trials a knob
# beyond 20: a categorical knob of 4-5 choices is otherwise seen once or twice per choice.
MIN_TRIALS = 20
TRIALS_PER_KNOB = 3
RESAMPLES = 10  # fixed seeds 0..9: the same study draws the same picture
TREES = 8  # per refit, 80 an objective in all: 1.3x the CPU time of the single 64-tree fit it replaced
DECOY = "(random decoy)"
# A knob that explains under 2 % alone drives nothing a reader acts on; and beside a knob that explains ~90 %, the
# decoy's share shrank below what no-effect categorical knobs picked up by chance (seen: 0.4 % against 0.5-1.1 %).
MIN_SHARE = 0.02


@dataclass(frozen=True)
class KnobImportance:
    """One knob's share of one objective's variance, over the bootstrap refits.

    Attributes:
        knob: the parameter's name in the study.
        low: 10th percentile of its share over the refits.
        median: 50th percentile.
        high: 90th percentile.
        distinguishable: ``low`` clears the objective's threshold: the decoy's 90th percentile, at least 2 %.
    """

    knob: str
    low: float
    median: float
    high: float
    distinguishable: bool


@dataclass(frozen=True)
class ObjectiveImportance:
    """One objective's knobs (largest median first) and the share below which a knob is not told from no effect.

    Attributes:
        knobs: the knobs that vary among the completed trials.
        threshold: the random decoy knob's 90th percentile, or ``MIN_SHARE`` where that is higher.
        trials: completed trials resampled.
        resamples: bootstrap refits.
    """

    knobs: tuple[KnobImportance, ...]
    threshold: float
    trials: int
    resamples: int


def min_trials(knobs: int) -> int:
    return max(MIN_TRIALS, TRIALS_PER_KNOB * knobs)


def varying_knobs(done: Sequence[FrozenTrial]) -> list[str]:
    """The parameters every completed trial has, with one distribution, that take more than one value."""
    space = intersection_search_space(list(done))
    return [name for name in space if len({repr(trial.params[name]) for trial in done}) > 1]


def importances(study: optuna.Study, objectives: Sequence[tuple[str, str]]) -> dict[str, ObjectiveImportance | str]:
    """Each objective's knob importances over the completed trials, or the one line that says why there are none."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    knobs = varying_knobs(done)
    needed = min_trials(max(len(knobs), 1))
    if len(done) < needed:
        trials = f"{len(done)} completed trial{'' if len(done) == 1 else 's'}"
        reason = f"{trials}: too few for importance to mean anything; needs {needed}"
        return {metric: reason for metric, _ in objectives}
    if not knobs:
        return {metric: "no knob varied among the completed trials" for metric, _ in objectives}
    varied = [i for i in range(len(objectives)) if len({trial.values[i] for trial in done}) > 1]
    shares = _refit_shares(done, knobs, varied)
    return {metric: _summary(shares[index], knobs, len(done)) if index in shares else "the same in every trial"
            for index, (metric, _) in enumerate(objectives)}


def _summary(shares: np.ndarray, knobs: list[str], trials: int) -> ObjectiveImportance:
    low, median, high = np.quantile(shares, [0.1, 0.5, 0.9], axis=0)
    threshold = max(float(high[-1]), MIN_SHARE)  # the decoy is the last column
    rows = [KnobImportance(knob, float(low[i]), float(median[i]), float(high[i]), bool(low[i] > threshold))
            for i, knob in enumerate(knobs)]
    return ObjectiveImportance(tuple(sorted(rows, key=lambda r: -r.median)), threshold, trials, len(shares))


def _refit_shares(done: Sequence[FrozenTrial], knobs: list[str], objectives: list[int]) -> dict[int, np.ndarray]:
    """Per objective (by index), fANOVA's unnormalized shares: a row per bootstrap resample, a column per knob and
    the decoy last."""
    shares = {index: np.zeros((RESAMPLES, len(knobs) + 1)) for index in objectives}
    with _quiet():
        for seed in range(RESAMPLES):
            resample = _resample(done, knobs, np.random.default_rng(seed))
            for index in objectives:
                evaluator = optuna.importance.FanovaImportanceEvaluator(n_trees=TREES, seed=seed)
                try:
                    found = optuna.importance.get_param_importances(
                        resample, evaluator=evaluator, params=[*knobs, DECOY], normalize=False,
                        target=lambda t, i=index: t.values[i])
                except RuntimeError:  # "zero total variance": this resample drew trials that all scored the same
                    continue  # every knob explains none of it: the row stays 0
                shares[index][seed] = [found[name] for name in [*knobs, DECOY]]
    return shares


def _resample(done: Sequence[FrozenTrial], knobs: list[str], rng: np.random.Generator) -> optuna.Study:
    """An in-memory study of len(done) trials drawn with replacement, each with the knobs and a random decoy."""
    study = optuna.create_study(directions=["minimize"] * len(done[0].values))
    drawn = [done[i] for i in rng.integers(0, len(done), len(done))]
    study.add_trials([optuna.trial.create_trial(
        params={**{k: trial.params[k] for k in knobs}, DECOY: float(rng.random())},
        distributions={**{k: trial.distributions[k] for k in knobs}, DECOY: FloatDistribution(0.0, 1.0)},
        values=trial.values) for trial in drawn])
    return study


@contextmanager
def _quiet() -> Iterator[None]:
    """No "A new study created in memory" line per resample, and no experimental-feature warnings."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)
