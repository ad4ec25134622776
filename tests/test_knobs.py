"""Knobs: choices, narrowing to a target, the baseline always in the space, bad arguments refused."""

from __future__ import annotations

import optuna
import pytest
from hydra.utils import instantiate

from search.config import compose_config
from search.errors import ConfigError
from search.target import Target
from spaces import Distillation, Parallelism, PruneRate, QuantBits, suggest_candidate

CPU = Target(name="cpu", precisions=(32, 16, 8, 4))


def ask(study: optuna.Study | None = None) -> optuna.Trial:
    return (study or optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))).ask()


def test_quant_bits_suggests_only_declared_choices():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    knob = QuantBits([32, 8])
    knob.narrow(CPU)
    seen = {knob.suggest(study.ask(), {})["quant_bits"] for _ in range(20)}
    assert seen == {32, 8}


def test_quant_bits_narrows_to_the_target_and_keeps_fp32_for_the_baseline():
    knob = QuantBits([16, 8, 4])
    knob.narrow(Target(name="small", precisions=(32, 8)))
    assert knob.choices == [32, 8]


@pytest.mark.parametrize("choices", [[3], [], [8, 64]])
def test_quant_bits_refuses_undeclared_bits(choices):
    with pytest.raises(ConfigError, match="quant_bits"):
        QuantBits(choices)


def test_quant_bits_with_nothing_the_target_runs_is_a_config_error():
    knob = QuantBits([16])
    with pytest.raises(ConfigError, match="runs on target"):
        knob.narrow(Target(name="int-only", precisions=(32, 8)))


def test_prune_rate_grid_starts_at_zero_and_stays_below_high():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    knob = PruneRate(high=0.5, step=0.1, round_to=[8])
    rates = [knob.suggest(study.ask(), {})["prune_rate"] for _ in range(40)]
    assert min(rates) == 0.0 and max(rates) <= 0.5
    assert all(abs(r * 10 - round(r * 10)) < 1e-9 for r in rates)


def test_prune_round_to_is_fixed_with_one_choice_and_empty_without_pruning():
    knob = PruneRate(high=0.5, round_to=[16])
    trial = optuna.trial.FixedTrial({"prune_rate": 0.3})
    assert knob.suggest(trial, {}) == {"prune_rate": 0.3, "prune_round_to": 16}
    assert knob.suggest(optuna.trial.FixedTrial({"prune_rate": 0.0}), {})["prune_round_to"] is None


@pytest.mark.parametrize("kwargs", [{"high": 1.0}, {"high": 0.5, "step": 0}, {"round_to": [0]}, {"round_to": []}])
def test_prune_rate_refuses_bad_arguments(kwargs):
    with pytest.raises(ConfigError, match="prune_rate"):
        PruneRate(**kwargs)


def test_distillation_is_only_applied_where_pruning_happened():
    knob = Distillation(temperatures=[0, 4], alphas=[0.7])
    fixed = {"distill_temperature": 4.0, "distill_alpha": 0.7}
    assert knob.suggest(optuna.trial.FixedTrial(fixed), {"prune_rate": 0.0}) == {
        "distill_temperature": None, "distill_alpha": None}
    assert knob.suggest(optuna.trial.FixedTrial(fixed), {"prune_rate": 0.5}) == fixed


def test_distillation_at_zero_temperature_has_no_teacher_weight():
    knob = Distillation(temperatures=[0], alphas=[0.9])
    out = knob.suggest(optuna.trial.FixedTrial({"distill_temperature": 0.0, "distill_alpha": 0.9}), {"prune_rate": 0.4})
    assert out == {"distill_temperature": 0.0, "distill_alpha": 0.0}


@pytest.mark.parametrize("kwargs", [{"temperatures": [-1]}, {"alphas": [1.5]}, {"temperatures": []}])
def test_distillation_refuses_bad_arguments(kwargs):
    with pytest.raises(ConfigError, match="distillation"):
        Distillation(**kwargs)


def test_parallelism_threads_are_bounded_by_the_target():
    knob = Parallelism(["intra_op"])
    knob.narrow(Target(name="four", max_threads=4))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    picks = [knob.suggest(study.ask(), {}) for _ in range(30)]
    assert {p["parallelism"] for p in picks} <= {"sequential", "intra_op"}
    assert all(2 <= p["threads"] <= 4 for p in picks if p["parallelism"] == "intra_op")
    assert all(p["threads"] == 1 for p in picks if p["parallelism"] == "sequential")


def test_parallelism_on_a_one_thread_target_is_sequential_only():
    knob = Parallelism(["sequential", "intra_op"])
    knob.narrow(Target(name="one", max_threads=1))
    assert knob.modes == ["sequential"]


def test_parallelism_refuses_unknown_modes():
    with pytest.raises(ConfigError, match="parallelism"):
        Parallelism(["warp_speed"])


def test_suggest_candidate_fills_target_and_batch_size():
    knobs = [QuantBits([8]), PruneRate(high=0.5, round_to=[8]), Distillation(), Parallelism(["sequential"])]
    for knob in knobs:
        knob.narrow(CPU)
    cand = suggest_candidate(knobs, ask(), CPU, batch_size=16)
    assert cand.target == "cpu" and cand.batch_size == 16
    assert cand.quant_bits in (32, 8) and cand.parallelism == "sequential"


def test_every_configured_knob_instantiates_and_narrows_to_cpu():
    cfg = compose_config([])
    knobs = [instantiate(node) for node in cfg.space.knobs.values()]
    for knob in knobs:
        knob.narrow(Target.from_config(dict(cfg.target)))
    names = {k.name for k in knobs}
    assert names == {"quant_bits", "prune_rate", "distillation", "parallelism"}
