"""Search-space knobs on real Optuna trials: declared choices, narrowing to a target, bad arguments."""

from __future__ import annotations

import re

import optuna
import pytest
from hydra.utils import instantiate

from search.core.candidate import Candidate
from search.config import compose_config
from search.core.errors import ConfigError
from search.run.dispatcher import runnable_cover
from search.runtime.session_settings import PARALLELISM
from search.runtime.target import Target
from spaces import (BatchSize, TransformerFusion, Distillation, Parallelism, PruneRate, QuantBits, TargetChoice,
                    baseline_params, cover_params, projected, refusal, suggest_candidate)

CPU = Target(name="cpu", precisions=(32, 16, 8, 4), max_threads=4)


def study(seed: int = 0) -> optuna.Study:
    return optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))


def asks(n: int, seed: int = 0) -> list[optuna.Trial]:
    s = study(seed)
    return [s.ask() for _ in range(n)]


# --- QuantBits ---------------------------------------------------------------------------------

def test_quant_bits_suggests_only_its_declared_choices():
    knob = QuantBits([32, 16, 8])
    seen = [knob.suggest(trial, {})["quant_bits"] for trial in asks(40)]
    assert set(seen) == {32, 16, 8}


def test_quant_bits_narrow_removes_precisions_the_target_does_not_run():
    knob = QuantBits([32, 16, 8, 4])
    knob.narrow([Target(name="cpu", precisions=(32, 16, 8))])
    assert knob.choices == [32, 16, 8]
    assert {knob.suggest(trial, {})["quant_bits"] for trial in asks(40)} <= {32, 16, 8}


def test_quant_bits_narrow_keeps_fp32_for_the_baseline_trial():
    knob = QuantBits([8])
    knob.narrow([Target(name="cpu")])
    assert knob.choices == [32, 8]


def test_a_target_that_declares_nothing_runs_every_precision_and_mode_but_only_fp16():
    quant, parallel = QuantBits([32, 16, 8, 4], half=["fp16", "bf16"]), Parallelism()
    for knob in (quant, parallel):
        knob.narrow([Target(name="plain", max_threads=4)])
    assert quant.choices == [32, 16, 8, 4] and quant.half == ["fp16"]
    assert parallel.modes == list(PARALLELISM)


def test_quant_bits_narrow_with_no_supported_choice_is_a_config_error():
    knob = QuantBits([4])
    with pytest.raises(ConfigError, match="quant_bits"):
        knob.narrow([Target(name="cpu", precisions=(32, 16, 8))])


def test_quant_mode_is_searched_and_recorded_only_for_8_bits():
    knob = QuantBits([32, 8], modes=["minmax", "entropy", "dynamic"])
    assert set(knob.distributions()) == {"quant_bits", "quant_mode"}
    picks = [knob.suggest(trial, {}) for trial in asks(60)]
    assert {p["quant_mode"] for p in picks if p["quant_bits"] == 8} == {"minmax", "entropy", "dynamic"}
    assert all(p["quant_mode"] is None for p in picks if p["quant_bits"] != 8)


def test_one_quant_mode_is_fixed_not_searched():
    knob = QuantBits([32, 8], modes=["percentile"])
    assert set(knob.distributions()) == {"quant_bits"}
    assert {knob.suggest(trial, {})["quant_mode"] for trial in asks(20)} <= {"percentile", None}


@pytest.mark.parametrize("modes", [["fuzzy"], [], ["minmax", "max"]])
def test_quant_bits_refuses_unknown_modes(modes):
    with pytest.raises(ConfigError, match="modes"):
        QuantBits([32, 8], modes=modes)


@pytest.mark.parametrize("choices", [[3], [], [1], [8, 64]])
def test_quant_bits_refuses_unknown_bits(choices):
    with pytest.raises(ConfigError, match="quant_bits"):
        QuantBits(choices)


# --- PruneRate ---------------------------------------------------------------------------------

def test_prune_rate_lies_on_the_step_grid_between_zero_and_high():
    knob = PruneRate(high=0.5, step=0.1, round_to=[8, 16])
    picks = [knob.suggest(trial, {}) for trial in asks(60, seed=1)]
    rates = [p["prune_rate"] for p in picks]
    assert all(0.0 <= r <= 0.5 for r in rates)
    assert all(abs(r * 10 - round(r * 10)) < 1e-9 for r in rates)
    assert 0.0 in rates, "the grid starts at 0, the unpruned baseline"
    assert {p["prune_round_to"] for p in picks if p["prune_rate"]} <= {8, 16}


def test_prune_round_to_is_none_when_nothing_is_pruned():
    knob = PruneRate(high=0.5, round_to=[8, 16])
    out = knob.suggest(optuna.trial.FixedTrial({"prune_rate": 0.0, "prune_round_to": 16}), {})
    assert out == {"prune_rate": 0.0, "prune_round_to": None}


def test_prune_round_to_with_one_choice_is_fixed_not_searched():
    knob = PruneRate(high=0.5, round_to=[16])
    trial = study().ask()
    knob.suggest(trial, {})
    assert "prune_round_to" not in trial.distributions


@pytest.mark.parametrize("kwargs", [
    {"high": 1.0}, {"high": -0.1}, {"high": 0.5, "step": 0}, {"high": 0.2, "step": 0.5},
    {"round_to": [0]}, {"round_to": []}, {"round_to": [2.5]},
])
def test_prune_rate_refuses_bad_arguments(kwargs):
    with pytest.raises(ConfigError, match="prune_rate"):
        PruneRate(**kwargs)


# --- Distillation ------------------------------------------------------------------------------

@pytest.mark.parametrize("chosen", [{"prune_rate": 0.0}, {}])
def test_distillation_is_none_without_pruning(chosen):
    knob = Distillation(temperatures=[2, 4], alphas=[0.5])
    assert knob.suggest(study().ask(), chosen) == {"distill_temperature": None, "distill_alpha": None}


def test_distillation_suggests_temperature_and_alpha_after_pruning():
    knob = Distillation(temperatures=[0, 2, 8], alphas=[0.5, 0.9])
    picks = [knob.suggest(trial, {"prune_rate": 0.3}) for trial in asks(40)]
    assert {p["distill_temperature"] for p in picks} == {0.0, 2.0, 8.0}
    for p in picks:
        if p["distill_temperature"] == 0:
            assert p["distill_alpha"] == 0.0, "T = 0 is plain fine-tuning: no teacher weight"
        else:
            assert p["distill_alpha"] in (0.5, 0.9)


def test_distillation_params_are_in_the_trial_even_without_pruning():
    trial = study().ask()
    Distillation().suggest(trial, {"prune_rate": 0.0})
    assert {"distill_temperature", "distill_alpha"} <= set(trial.distributions)


@pytest.mark.parametrize("kwargs", [
    {"temperatures": [-1]}, {"temperatures": []}, {"alphas": [1.5]}, {"alphas": [-0.1]}, {"alphas": []},
])
def test_distillation_refuses_bad_arguments(kwargs):
    with pytest.raises(ConfigError, match="distillation"):
        Distillation(**kwargs)


# --- Parallelism -------------------------------------------------------------------------------

def test_parallelism_on_a_one_thread_target_keeps_only_sequential():
    knob = Parallelism()
    knob.narrow([Target(name="one", max_threads=1)])
    assert knob.modes == ["sequential"] and "degree" not in knob.distributions()
    assert all(knob.suggest(trial, {}) == {"parallelism": "sequential", "degree": 1, "micro_batches": None}
               for trial in asks(10))


def test_parallelism_visits_every_mode_with_a_degree_within_the_budget():
    knob = Parallelism(micro_batches=6)
    knob.narrow([Target(name="four", max_threads=4, parallelism=PARALLELISM)])
    picks = [knob.suggest(trial, {}) for trial in asks(80)]
    assert {p["parallelism"] for p in picks} == set(PARALLELISM)
    assert all(2 <= p["degree"] <= 4 for p in picks if p["parallelism"] != "sequential")
    assert all(p["micro_batches"] == (6 if p["parallelism"] == "pipeline" else None) for p in picks)


def test_parallelism_refuses_a_bad_micro_batch_count():
    with pytest.raises(ConfigError, match="micro_batches"):
        Parallelism(micro_batches=0)


def test_parallelism_degree_stays_within_the_target_budget():
    knob = Parallelism(["sequential", "intra_op"])
    knob.narrow([Target(name="four", max_threads=4)])
    picks = [knob.suggest(trial, {}) for trial in asks(40)]
    assert {p["parallelism"] for p in picks} == {"sequential", "intra_op"}
    assert all(2 <= p["degree"] <= 4 for p in picks if p["parallelism"] == "intra_op")
    assert all(p["degree"] == 1 for p in picks if p["parallelism"] == "sequential")


def test_parallelism_knob_cap_below_the_target_budget_wins():
    knob = Parallelism(["intra_op"], max_threads=3)
    knob.narrow([Target(name="eight", max_threads=8)])
    assert knob.max_threads == 3
    assert all(knob.suggest(trial, {})["degree"] <= 3 for trial in asks(30))


def test_parallelism_narrow_with_no_supported_mode_is_a_config_error():
    knob = Parallelism(["intra_op"])
    with pytest.raises(ConfigError, match="parallelism"):
        knob.narrow([Target(name="seq", parallelism=("sequential",))])


@pytest.mark.parametrize("modes", [["warp_speed"], [], ["sequential", "model_parallel"]])
def test_parallelism_refuses_unknown_modes(modes):
    with pytest.raises(ConfigError, match="parallelism"):
        Parallelism(modes)


# --- suggest_candidate -------------------------------------------------------------------------

def narrowed(*knobs, targets: list[Target] = (CPU,)):
    for knob in knobs:
        knob.narrow(list(targets))
    return list(knobs)


def test_suggest_candidate_sets_target_and_batch_size():
    knobs = narrowed(QuantBits([32, 8]), PruneRate(high=0.5, round_to=[8]), Distillation(), Parallelism())
    cand = suggest_candidate(knobs, study().ask(), CPU, batch_size=16)
    assert isinstance(cand, Candidate)
    assert cand.target == "cpu" and cand.batch_size == 16
    assert cand.quant_bits in (32, 8)


def test_suggest_candidate_carries_every_knobs_value():
    knobs = narrowed(QuantBits([32, 8]), PruneRate(high=0.5, round_to=[8]),
                     Distillation(temperatures=[0, 4], alphas=[0.9]), Parallelism())
    trial = optuna.trial.FixedTrial({"quant_bits": 8, "prune_rate": 0.5, "distill_temperature": 4.0,
                                     "distill_alpha": 0.9, "parallelism": "intra_op", "degree": 3})
    assert suggest_candidate(knobs, trial, CPU, batch_size=4) == Candidate(
        target="cpu", quant_bits=8, quant_mode="minmax", quant_granularity="per_channel", prune_rate=0.5,
        prune_round_to=8, distill_temperature=4.0, distill_alpha=0.9, parallelism="intra_op", degree=3,
        micro_batches=None, batch_size=4)


# --- the shipped space -------------------------------------------------------------------------

def test_every_knob_in_the_default_space_instantiates_and_narrows_to_cpu():
    cfg = compose_config([])
    target = Target.from_config(dict(cfg.target))
    knobs = [instantiate(node) for node in cfg.space.knobs.values()]
    assert [type(k) for k in knobs] == [TransformerFusion, QuantBits, PruneRate, Distillation, Parallelism, BatchSize]
    for knob in knobs:
        knob.narrow([target])
    assert set(knobs[1].choices) <= set(target.precisions)
    cand = suggest_candidate(knobs, study().ask(), target, batch_size=32)
    assert cand.target == "cpu" and cand.batch_size == 32


def shipped_knobs(space_name: str) -> list:
    """The knobs of conf/space/<space_name>.yaml, narrowed to the cpu target."""
    cfg = compose_config([f"space={space_name}"])
    target = Target.from_config(dict(cfg.target))
    knobs = [instantiate(node) for node in cfg.space.knobs.values()]
    for knob in knobs:
        knob.narrow([target])
    return knobs


def test_the_full_space_searches_every_int8_mode_and_batch_size_and_keeps_fp16_on_cpu():
    knobs = shipped_knobs("full")
    params = {name: d.choices for knob in knobs for name, d in knob.distributions().items() if hasattr(d, "choices")}
    assert params["quant_mode"] == ("minmax", "entropy", "percentile", "dynamic")
    assert params["batch_size"] == (8, 32, 128)
    assert params["parallelism"] == ("sequential", "intra_op", "inter_op", "data_parallel", "pipeline")
    assert "half_format" not in params  # bf16 is dropped on cpu, so fp16 is fixed


# --- 16-bit formats, batch size, targets -------------------------------------------------------

def test_half_format_is_searched_and_recorded_only_for_16_bits():
    knob = QuantBits([32, 16, 8], modes=["minmax"], half=["fp16", "bf16"])
    knob.narrow([Target(name="gpu-like", precisions=(32, 16, 8), half_formats=("fp16", "bf16"))])
    picks = [knob.suggest(trial, {}) for trial in asks(60)]
    assert {p["quant_mode"] for p in picks if p["quant_bits"] == 16} == {"fp16", "bf16"}
    assert {p["quant_mode"] for p in picks if p["quant_bits"] == 8} == {"minmax"}
    assert all(p["quant_mode"] is None for p in picks if p["quant_bits"] == 32)


def test_bf16_alone_on_a_target_without_it_is_a_config_error():
    knob = QuantBits([32, 16], half=["bf16"])
    with pytest.raises(ConfigError, match="bf16"):
        knob.narrow([Target(name="cpu", precisions=(32, 16), half_formats=("fp16",))])


def test_batch_size_is_fixed_to_the_baseline_unless_several_are_declared():
    fixed = BatchSize(None, baseline=16)
    assert fixed.distributions() == {} and fixed.baseline() == {}
    assert fixed.suggest(study().ask(), {}) == {"batch_size": 16}
    searched = BatchSize([8, 128], baseline=32)
    assert searched.choices == [32, 8, 128]  # the baseline's size joins, so trial 0 belongs to the space
    assert {searched.suggest(trial, {})["batch_size"] for trial in asks(40)} == {8, 32, 128}
    assert searched.baseline() == {"batch_size": 32}


def test_baseline_params_are_fp32_unpruned_sequential_on_the_first_target():
    targets = [Target(name="a"), Target(name="b")]
    knobs = [TargetChoice(targets), QuantBits(), PruneRate(), Distillation(), Parallelism(), BatchSize([8, 32], 32)]
    assert baseline_params(knobs) == {"target": "a", "quant_bits": 32, "prune_rate": 0.0,
                                      "parallelism": "sequential", "batch_size": 32}


def test_target_choice_draws_every_target_and_the_candidate_carries_it():
    targets = [Target(name="cpu"), Target(name="cpu_1t", max_threads=1)]
    knobs = narrowed(TargetChoice(targets), QuantBits([32, 8]), Parallelism(), targets=targets)
    drawn = {suggest_candidate(knobs, trial, targets[0], 32).target for trial in asks(20)}
    assert drawn == {"cpu", "cpu_1t"}


def test_knobs_narrowed_to_several_targets_keep_what_any_target_runs():
    targets = [Target(name="a", precisions=(32, 8), parallelism=("sequential",), max_threads=1),
               Target(name="b", precisions=(32, 16), half_formats=("fp16", "bf16"), max_threads=3)]
    quant, parallel = QuantBits([32, 16, 8, 4], half=["fp16", "bf16"]), Parallelism()
    narrowed(quant, parallel, targets=targets)
    assert quant.choices == [32, 16, 8] and quant.half == ["fp16", "bf16"]
    assert parallel.modes == list(PARALLELISM) and parallel.max_threads == 3


@pytest.mark.parametrize(("knob", "target", "says"), [
    (QuantBits(), Target(name="odd", precisions=(32, 3)), "precisions [3] unknown"),
    (QuantBits([32, 16]), Target(name="odd", half_formats=("fp8",)), "half_formats ['fp8'] unknown"),
    (Parallelism(), Target(name="odd", parallelism=("sequential", "warp_speed")), "parallelism ['warp_speed'] unknown"),
])
def test_a_target_declaring_what_no_knob_knows_is_a_config_error_when_narrowing(knob, target, says):
    with pytest.raises(ConfigError, match=re.escape(says)):
        knob.narrow([Target(name="fine"), target])


REFUSING_KNOBS = [QuantBits(), Parallelism()]


@pytest.mark.parametrize(("candidate", "says"), [
    (Candidate(target="t", quant_bits=4), "does not run 4-bit"),
    (Candidate(target="t", quant_bits=16, quant_mode="bf16"), "does not run bf16"),
    (Candidate(target="t", parallelism="pipeline", degree=2), "does not run pipeline"),
    (Candidate(target="t", parallelism="intra_op", degree=3), "has 2 thread(s)"),
])
def test_the_knobs_say_why_a_target_refuses_a_candidate(candidate, says):
    target = Target(name="t", precisions=(32, 16, 8), parallelism=("sequential", "intra_op"), max_threads=2)
    assert says in refusal(REFUSING_KNOBS, candidate.values, target)
    assert refusal(REFUSING_KNOBS, Candidate(target="t", quant_bits=8, parallelism="intra_op", degree=2).values,
                   target) == ""


def test_the_knobs_project_params_onto_the_nearest_a_target_runs():
    gpu = Target(name="gpu", precisions=(32, 16, 8), parallelism=("sequential",), max_threads=1)
    assert projected(REFUSING_KNOBS, {"quant_bits": 4, "parallelism": "pipeline", "degree": 6, "half_format": "bf16"},
                     gpu) == {"quant_bits": 8, "parallelism": "sequential", "degree": 6, "half_format": "fp16"}
    two = Target(name="two", precisions=(32, 8), max_threads=2)
    assert projected(REFUSING_KNOBS, {"quant_bits": 16, "parallelism": "intra_op", "degree": 6}, two) == {
        "quant_bits": 32, "parallelism": "intra_op", "degree": 2}  # 16 sits between 8 and 32: the higher
    moved = projected(REFUSING_KNOBS, {"quant_bits": 16, "parallelism": "intra_op", "degree": 6}, two)
    assert refusal(REFUSING_KNOBS, Candidate(target="two", quant_bits=moved["quant_bits"], parallelism="intra_op",
                                             degree=moved["degree"]).values, two) == ""


def test_cover_trials_measure_every_declared_mode_once():
    knobs = shipped_knobs("full")
    cover = cover_params(knobs)
    assert len(cover) == 11  # 32, 16, 4 and 8 bits x 4 int8 modes x 2 granularities: the longest list
    assert {c["parallelism"] for c in cover} == set(PARALLELISM)
    assert {c["batch_size"] for c in cover} == {8, 32, 128}
    int8 = {(c.get("quant_mode"), c.get("quant_granularity")) for c in cover if c["quant_bits"] == 8}
    assert int8 == {(m, g) for m in ("minmax", "entropy", "percentile", "dynamic")
                    for g in ("per_tensor", "per_channel")}, "each int8 mode with each granularity, once"
    assert {c["quant_bits"] for c in cover} == {32, 16, 8, 4}
    space_ = {name: d for knob in knobs for name, d in knob.distributions().items()}
    assert all(value in space_[name].choices for c in cover for name, value in c.items())


def test_cover_across_targets_includes_each_target():
    targets = [Target(name="a"), Target(name="b")]
    knobs = narrowed(TargetChoice(targets), QuantBits([32, 8]), targets=targets)
    assert {c["target"] for c in cover_params(knobs)} == {"a", "b"}
    assert cover_params(narrowed(PruneRate(), Distillation())) == []


def test_cover_across_targets_puts_each_mode_on_a_target_that_runs_it():
    targets = {"cpu": Target(name="cpu", max_threads=2), "cpu_1t": Target(name="cpu_1t", max_threads=1,
                                                                         parallelism=("sequential",))}
    knobs = narrowed(TargetChoice(list(targets.values())), QuantBits([32, 8]), Parallelism(),
                     targets=list(targets.values()))
    placed = runnable_cover(cover_params(knobs), targets, knobs)
    assert {c["parallelism"] for c in placed if "parallelism" in c} == set(PARALLELISM)
    assert all(c["target"] == "cpu" for c in placed if c.get("parallelism", "sequential") != "sequential")
    assert {c["target"] for c in placed} == {"cpu", "cpu_1t"}


def test_granularity_and_int4_block_are_searched_and_recorded_where_the_bits_use_them():
    knob = QuantBits([32, 8, 4], granularity=["per_tensor", "per_channel"], blocks=[16, 64])
    assert set(knob.distributions()) == {"quant_bits", "quant_granularity", "int4_block"}
    draw = {"quant_granularity": "per_tensor", "int4_block": 64}
    assert knob.suggest(optuna.trial.FixedTrial({"quant_bits": 8, **draw}), {})["quant_granularity"] == "per_tensor"
    assert knob.suggest(optuna.trial.FixedTrial({"quant_bits": 4, **draw}), {})["quant_granularity"] == "block_64"
    assert knob.suggest(optuna.trial.FixedTrial({"quant_bits": 32, **draw}), {})["quant_granularity"] is None
    assert {c.get("int4_block") for c in knob.cover() if c["quant_bits"] == 4} == {16, 64}
    fixed = QuantBits([32, 8])
    assert "quant_granularity" not in fixed.distributions(), "one granularity is fixed, not searched"
    for bad in ({"granularity": ["per_row"]}, {"blocks": [24]}, {"granularity": []}):
        with pytest.raises(ConfigError, match="quant_bits"):
            QuantBits([32, 8], **bad)
