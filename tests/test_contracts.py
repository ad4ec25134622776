"""Contract suites, in the manner of optuna/testing: one suite each, parametrised over every shipped
knob (conf/space/full.yaml), evaluator (conf/evaluators/default.yaml) and target (conf/target/*.yaml).

A new plugin that joins the shipped configs is held to the same promises without a test of its own.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution
from ray import cloudpickle

from evaluators import Built, Evaluator
from search.candidate import Candidate, UnknownField
from search.plugins import load_evaluators, load_knobs, make_schema
from search.results.card import model_card
from search.results.html import pareto_figure
from search.results.plots import axis_label, plot_front
from search.results.tables import pareto_table, trials_table
from search.runtime.target import Target
from search.schema import KINDS
from search.study import OUTCOME
from search.transforms import export_onnx
from spaces._base import STAGES
from spaces import Knob, TargetChoice, compose_runtime, declared_fields, projected, refusal, suggest_candidate

REPO = Path(__file__).resolve().parent.parent
TARGET_FILES = sorted((REPO / "conf" / "target").glob("*.yaml"))
TYPES = {"int": (int, np.integer), "float": (float, int, np.floating), "str": (str,), "bool": (bool, np.bool_)}


def shipped_targets() -> list[Target]:
    from search.config import compose_config

    return [Target.from_config(OmegaConf.to_container(compose_config([f"+target={p.stem}"]).target)) for p in TARGET_FILES]


def shipped_knobs() -> list[Knob]:
    config = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "space" / "full.yaml"), resolve=False)
    default = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "space" / "default.yaml"), resolve=False)
    merged = OmegaConf.to_container(OmegaConf.merge(default, {"knobs": config["knobs"]}), resolve=False)
    merged["knobs"]["batch_size"]["baseline"] = 32  # ${batch_size} belongs to the primary config
    return load_knobs(merged["knobs"])


def shipped_evaluators() -> list[Evaluator]:
    return load_evaluators(OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "evaluators" / "default.yaml")))


KNOB_NAMES = [k.name for k in shipped_knobs()]
EVALUATOR_NAMES = [e.name for e in shipped_evaluators()]
TARGETS = {t.name: t for t in shipped_targets()}


def knob(name: str, targets: list[Target] | None = None) -> Knob:
    found = {k.name: k for k in shipped_knobs()}[name]
    found.narrow(targets or [TARGETS["cpu"]])
    return found


def draws(k: Knob, trials: int = 25) -> list[tuple[dict, dict]]:
    """(params, fields) of ``trials`` random draws of the knob's whole space, as the driver asks for it."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    found = []
    for _ in range(trials):
        trial = study.ask(fixed_distributions=k.distributions())
        found.append((trial.params, k.suggest(trial, {"target": "cpu", "batch_size": 32, "prune_rate": 0.5})))
        study.tell(trial, 0.0)
    return found


# --- knobs -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", KNOB_NAMES)
def test_knob_declares_its_fields_with_known_kinds_and_where_they_apply(name):
    k = knob(name)
    assert k.fields, f"{name} declares no candidate field"
    for f in k.fields:
        assert f.kind in KINDS and f.applies_to in ("build", "runtime") and f.doc
    assert k.stage in (None, *STAGES)
    if k.stage is not None:
        assert any(f.applies_to == "build" for f in k.fields), "a knob that builds has a build field (its cache key)"


@pytest.mark.parametrize("name", KNOB_NAMES)
def test_draws_stay_within_declared_choices_and_set_only_declared_fields(name):
    k = knob(name)
    declared = {f.name: f for f in k.fields}
    for params, fields in draws(k):
        for param, value in params.items():
            dist = k.distributions()[param]
            assert dist._contains(dist.to_internal_repr(value)), (param, value)
        assert set(fields) <= set(declared), set(fields) - set(declared)
        for field_name, value in fields.items():
            assert value is None or value == declared[field_name].unset or \
                isinstance(value, TYPES[declared[field_name].kind]), (field_name, value)


@pytest.mark.parametrize("name", KNOB_NAMES)
def test_baseline_and_cover_params_belong_to_the_space(name):
    k = knob(name)
    space = k.distributions()
    for fixed in [k.baseline(), *k.cover()]:
        for param, value in fixed.items():
            assert param in space, f"{name}: {param} fixed but not searched"
            dist = space[param]
            assert dist._contains(dist.to_internal_repr(value)), (param, value)


@pytest.mark.parametrize("name", KNOB_NAMES)
def test_fields_survive_the_ray_boundary(name):
    k = knob(name)
    knobs = [k]
    for _, fields in draws(k, trials=5):
        cand = Candidate(target="cpu", runtime=compose_runtime(knobs, fields), **fields)
        across = cloudpickle.loads(cloudpickle.dumps(cand.to_dict()))  # what Ray does to a task's arguments
        assert Candidate.from_dict(across, declared_fields(knobs)) == cand


def test_an_undeclared_field_is_an_error_never_dropped():
    with pytest.raises(UnknownField, match="prune_ratio"):
        Candidate.from_dict({"target": "cpu", "prune_ratio": 0.5}, declared_fields([knob("prune_rate")]))

    class Sloppy(Knob):
        name = "sloppy"
        fields = ()

        def distributions(self):
            return {"x": CategoricalDistribution([1])}

        def suggest(self, trial, chosen):
            return {"x": self.draw(trial, "x")}

    trial = optuna.create_study().ask(fixed_distributions={"x": CategoricalDistribution([1])})
    with pytest.raises(UnknownField, match="sloppy set field"):
        suggest_candidate([Sloppy()], trial, TARGETS["cpu"], 32)


@pytest.mark.parametrize("target_name", sorted(TARGETS))
@pytest.mark.parametrize("name", KNOB_NAMES)
def test_every_target_narrows_every_knob_consistently(name, target_name):
    """After narrowing to a target, every choice left runs there, and projecting it moves nothing;
    narrowed to all targets, every draw a target refuses is projected onto one it runs."""
    target = TARGETS[target_name]
    k = knob(name, [target])
    for params, fields in draws(k, trials=15):
        assert k.refuses(fields, target) == "", (params, fields)
        assert k.project(dict(params), target) == params
    wide = knob(name, list(TARGETS.values()))
    for params, _ in draws(wide, trials=15):
        moved = wide.project(dict(params), target)
        trial = optuna.trial.FixedTrial(moved)
        fields = wide.suggest(trial, {"target": target_name, "batch_size": 32, "prune_rate": 0.5})
        assert wide.refuses(fields, target) == "", (params, moved, fields)


def test_cover_trials_across_targets_run_where_they_are_placed():
    from search.run.dispatcher import runnable_cover
    from spaces import cover_params

    targets = {n: TARGETS[n] for n in ("cpu", "cpu_1t")}
    knobs = [TargetChoice(list(targets.values())), *shipped_knobs()]
    for k in knobs:
        k.narrow(list(targets.values()))
    for fixed in runnable_cover(cover_params(knobs), targets, knobs):
        target = targets[fixed["target"]]
        assert projected(knobs, dict(fixed), target) == fixed, fixed
    assert refusal(knobs, {"parallelism": "pipeline", "degree": 2}, targets["cpu_1t"]) != ""


# --- evaluators --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> dict[str, dict]:
    """Every shipped evaluator's figures on a real model, measured through its runner."""
    from tests.conftest import TinyCNN

    torch.manual_seed(0)
    model = TinyCNN().eval()
    rng = np.random.default_rng(0)
    from search.workloads import Split

    test = Split(rng.random((64, 1, 8, 8), dtype=np.float32), rng.integers(0, 10, 64).astype(np.int64))
    model_bytes = export_onnx(model, torch.from_numpy(test.x[:8]))
    built = Built(model_bytes, Candidate(target="cpu", batch_size=8), TARGETS["cpu"], test)
    try:
        return {e.name: e.measure(built) for e in _quick(shipped_evaluators())}
    finally:
        built.close()


def _quick(evaluators: list[Evaluator]) -> list[Evaluator]:
    for e in evaluators:
        for attribute, value in (("budget_s", 0.05), ("min_time_s", 0.0), ("warmup", 1), ("min_repeats", 5),
                                 ("window_s", 0.05)):
            if hasattr(e, attribute):
                setattr(e, attribute, value)
    return evaluators


@pytest.mark.parametrize("name", EVALUATOR_NAMES)
def test_evaluator_fills_exactly_its_declared_columns(name, measured):
    e = {e.name: e for e in shipped_evaluators()}[name]
    declared = [c.name for c in e.declared_columns()]
    assert e.metric in declared and e.direction in ("maximize", "minimize")
    assert set(measured[name]) == set(declared)
    if e.interval:
        assert set(e.interval) <= set(declared)


@pytest.mark.parametrize("name", EVALUATOR_NAMES)
def test_evaluator_columns_reach_both_tables_the_plots_and_the_card(name, measured, tmp_path):
    evaluators = {e.name: e for e in shipped_evaluators()}
    e = evaluators[name]
    e.objective = True  # as an objective it must also reach the plots' axes
    knobs = shipped_knobs()
    schema = make_schema(knobs, [evaluators["size"], e] if name != "size" else [e, evaluators["metric"]])
    metrics = {k: v for figures in measured.values() for k, v in figures.items()}
    study = optuna.create_study(directions=[d for _, d in schema.objectives])
    for number in range(3):
        scaled = {k: (v * (1 + number) if isinstance(v, float) else v) for k, v in metrics.items()}
        study.add_trial(optuna.trial.create_trial(
            params={}, distributions={}, values=[scaled[m] for m, _ in schema.objectives],
            user_attrs={"candidate": Candidate(target="cpu", quant_bits=32, parallelism="sequential").to_dict(),
                        OUTCOME: {"metrics": scaled, "node": "n", "duration_s": 1.0, "error": ""}}))
    table = trials_table(study.trials, schema)
    front = pareto_table(table, schema)
    for column in e.declared_columns():
        assert column.name in table.columns and column.name in front.columns
        assert table[column.name].notna().all(), column.name
    plot_front(tmp_path / "pareto.png", table, front, schema)
    assert (tmp_path / "pareto.png").stat().st_size > 1000
    figure = pareto_figure(table, front, schema)
    titles = [axis.title.text for axis in figure.select_xaxes()] + [axis.title.text for axis in figure.select_yaxes()]
    assert axis_label(e.metric, table, schema) in titles
    assert any(e.metric in str(trace.hovertext) for trace in figure.data)
    run = {"target": {"name": "cpu", "provider": "CPUExecutionProvider", "watts_per_core": 10.0, "idle_watts": 0.0},
           "workload_info": {"name": "w", "input_name": "input", "input_shape": [1, 8, 8], "output_name": "logits",
                             "preprocessing": "", "output_meaning": ""}}
    card = model_card(front.iloc[0].to_dict(), run, schema)
    assert {c.name for c in e.declared_columns()} <= set(card["metrics"])
    assert card["measured"].get(name), f"{name} says nothing in the card about how it measured"


def test_energy_axis_says_estimate_when_it_is_one(measured):
    if measured["energy"]["energy_source"] != "estimate":
        pytest.skip("this machine has an energy meter")
    schema = make_schema(shipped_knobs(), shipped_evaluators())
    table = pd.DataFrame([measured["energy"]])
    assert axis_label("energy_mj", table, schema) == "energy (mJ / input, estimate)"


# --- targets -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", TARGET_FILES, ids=[p.name for p in TARGET_FILES])
def test_target_composes_through_hydra_with_a_provider_and_resources(path):
    target = TARGETS[path.stem]
    assert target.name == path.stem and target.provider.endswith("ExecutionProvider")
    assert target.num_cpus > 0 and target.thread_budget >= 1
    for k in shipped_knobs():
        k.narrow([target])  # every shipped knob has something every shipped target runs
        assert k.distributions()
