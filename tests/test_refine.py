"""The refining sampler re-runs front builds under front runtime settings, within its share, and resumes."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution

from search.core import attributes
from search.strategy.refine import RuntimeRefiningSampler

SPACE = {"bits": CategoricalDistribution([4, 8, 16, 32]), "rate": CategoricalDistribution([0.0, 0.2, 0.4, 0.6, 0.8]),
         "mode": CategoricalDistribution(["seq", "intra", "inter"])}
SPEED = {"seq": 3.0, "intra": 1.0, "inter": 2.0}  # how much slower a mode runs every model


def measure(params: dict) -> list[float]:
    """(accuracy max, latency min): smaller, more pruned models are faster and less accurate."""
    size = params["bits"] / 32 * (1 - params["rate"])
    return [1.0 - 0.1 * (1 - size), size * SPEED[params["mode"]]]


def run(study: optuna.Study, trials: int) -> list[optuna.trial.FrozenTrial]:
    for _ in range(trials):
        trial = study.ask(fixed_distributions=SPACE)
        study.tell(trial, measure(trial.params))
    return study.get_trials()


def make(share: float = 0.25, storage: str | None = None, seed: int = 0) -> optuna.Study:
    sampler = RuntimeRefiningSampler(optuna.samplers.RandomSampler(seed=seed), share=share)
    sampler.set_runtime_params(["mode"])
    return optuna.create_study(directions=["maximize", "minimize"], sampler=sampler, storage=storage,
                               study_name="s", load_if_exists=True)


def builds(trial) -> tuple:
    return trial.params["bits"], trial.params["rate"]


def test_refinements_rerun_a_front_build_under_a_front_runtime_within_the_share():
    trials = run(make(share=0.25), 60)
    refined = [t for t in trials if attributes.refines(t) is not None]
    assert 0 < len(refined) <= 0.25 * len(trials)
    by_number = {t.number: t for t in trials}
    for trial in refined:
        source = by_number[attributes.refines(trial)]
        assert builds(trial) == builds(source) and trial.params["mode"] != source.params["mode"]
        earlier = [(builds(t), t.params["mode"]) for t in trials if t.number < trial.number]
        assert (builds(trial), trial.params["mode"]) not in earlier  # never a pair already measured


def test_without_runtime_params_or_share_it_draws_as_its_base():
    plain = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=3))
    wrapped = optuna.create_study(directions=["maximize", "minimize"],
                                  sampler=RuntimeRefiningSampler(optuna.samplers.RandomSampler(seed=3), share=0.0))
    assert [t.params for t in run(plain, 30)] == [t.params for t in run(wrapped, 30)]


def test_enqueued_trials_keep_their_params():
    study = make(share=0.5)
    run(study, 10)
    study.enqueue_trial({"bits": 32, "rate": 0.0, "mode": "seq"})
    trial = study.ask(fixed_distributions=SPACE)
    assert trial.params == {"bits": 32, "rate": 0.0, "mode": "seq"}
    assert attributes.refines(study.trials[trial.number]) is None


def test_a_resumed_study_keeps_the_share_and_repeats_no_pair(tmp_path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    run(make(share=0.3, storage=storage), 30)
    trials = run(make(share=0.3, storage=storage, seed=1), 30)  # a fresh instance: bookkeeping from the study
    refined = [t for t in trials if attributes.refines(t) is not None]
    assert 0 < len(refined) <= 0.3 * len(trials)
    pairs = [(builds(t), t.params["mode"]) for t in refined]
    assert len(pairs) == len(set(pairs))


def test_share_must_be_below_one():
    with pytest.raises(ValueError):
        RuntimeRefiningSampler(optuna.samplers.RandomSampler(), share=1.0)


def test_the_driver_tells_it_the_runtime_knobs_of_the_space():
    from search.config import compose_config
    from search.run.driver import make_sampler, prepare

    cfg = compose_config(["sampler=tpe_refine", "space.knobs.batch_size.choices=[8,32]"])
    sampler = make_sampler(cfg, prepare(cfg))
    assert isinstance(sampler, RuntimeRefiningSampler) and isinstance(sampler.base.base, optuna.samplers.TPESampler)
    assert sampler.runtime == {"parallelism", "degree", "batch_size"}  # not the target: a model is built per target
    assert {"parallelism", "degree", "micro_batches", "batch_size"} <= sampler.runtime_fields
    assert not {"quant_bits", "prune_rate", "fusion", "target"} & sampler.runtime_fields
