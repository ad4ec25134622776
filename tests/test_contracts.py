"""The contract suites of search/testing, inherited by every shipped plugin: each knob (conf/space/full.yaml),
evaluator (conf/evaluators/default.yaml), target (conf/target/*.yaml), task metric (search.metrics) and
workload (the bundled digits, the examples'). Each test class gets every test of its contract.

A plugin added to the shipped configs is held to the same promises without a test of its own; each contract
is shown below to catch a deliberately broken plugin, so none of its tests is one that cannot fail.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution

import search.metrics
from evaluators import Size
from search.config import compose_config
from search.core.candidate import Candidate, UnknownField
from search.metrics import (Accuracy, CosineFidelity, FromFunction, MacroF1, MeanAbsoluteError, MeanSquaredError,
                            Metric, TopKAccuracy)
from search.config import make_schema
from search.results.plots import axis_label
from search.schema import Column, Field
from search.testing import (EvaluatorContract, KnobContract, MetricContract, TargetContract, WorkloadContract,
                            shipped_evaluators, shipped_knobs, shipped_target_names, shipped_targets, shrunk,
                            small_built)
from search.workloads import Split, Workload
from spaces import Knob, TargetChoice, declared_fields, projected, refusal, suggest_candidate
from tests.conftest import TinyCNN

REPO = Path(__file__).resolve().parent.parent
TARGETS = shipped_targets()
KNOB_NAMES = [k.name for k in shipped_knobs()]
EVALUATOR_NAMES = [e.name for e in shipped_evaluators()]


def knob(name: str, targets=None) -> Knob:
    found = {k.name: k for k in shipped_knobs()}[name]
    found.narrow(targets or [TARGETS["cpu"]])
    return found


# --- knobs -------------------------------------------------------------------------------------------------

class TestShippedKnobs(KnobContract):
    """Every shipped knob, narrowed to the cpu target and to every shipped target at once."""

    @pytest.fixture(params=KNOB_NAMES)
    def knob(self, request) -> Knob:
        return {k.name: k for k in shipped_knobs()}[request.param]

    @pytest.fixture(params=["cpu", "every-target"])
    def targets(self, request):
        return [TARGETS["cpu"]] if request.param == "cpu" else list(TARGETS.values())


class Levels(Knob):
    """A sound knob of three runtime levels; each subclass below breaks one promise of it."""

    name = "levels"
    fields = (Field("level", kind="int", unset=1, applies_to="runtime", doc="a level"),)

    def distributions(self):
        return {"level": CategoricalDistribution([1, 2, 3])}

    def suggest(self, trial, chosen):
        return {"level": self.draw(trial, "level")}

    def baseline(self):
        return {"level": 1}


class DrawsAString(Levels):
    def suggest(self, trial, chosen):
        return {"level": str(self.draw(trial, "level"))}


class BaselineOutsideItsSpace(Levels):
    def baseline(self):
        return {"level": 4}


class BuildsWithoutABuildField(Levels):
    stage = "onnx"


class RefusesWhatItKept(Levels):
    """Narrowed to a one-thread target it keeps level 3, then refuses it there."""

    def refuses(self, values, target):
        return "level 3 needs two threads" if values.get("level") == 3 and target.thread_budget < 2 else ""


class Opaque:
    """A value that compares by identity: it does not come back equal from the other side of Ray."""

    def __init__(self, level: int) -> None:
        self.level = level


class SetsAnOpaqueValue(Levels):
    def suggest(self, trial, chosen):
        return {"level": Opaque(self.draw(trial, "level"))}


@pytest.mark.parametrize("broken, promise", [
    (DrawsAString, "test_draws_stay_within_declared_choices_and_set_only_declared_fields"),
    (BaselineOutsideItsSpace, "test_baseline_and_cover_params_belong_to_the_space"),
    (BuildsWithoutABuildField, "test_declares_its_fields_with_known_kinds_and_where_they_apply"),
    (RefusesWhatItKept, "test_narrowed_to_a_target_its_draws_run_there_and_projection_moves_nothing"),
    (SetsAnOpaqueValue, "test_fields_survive_the_ray_boundary"),
], ids=lambda p: p.__name__ if isinstance(p, type) else "")
def test_the_knob_contract_catches_a_knob_that_breaks_a_promise(broken, promise):
    targets = [TARGETS["cpu"], TARGETS["cpu_1t"]]
    getattr(KnobContract(), promise)(Levels(), targets)  # the sound knob keeps it
    with pytest.raises(AssertionError):
        getattr(KnobContract(), promise)(broken(), targets)


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

class TestShippedEvaluators(EvaluatorContract):
    @pytest.fixture(params=EVALUATOR_NAMES)
    def evaluator(self, request):
        return {e.name: e for e in shipped_evaluators()}[request.param]


class ForgetsAColumn(Size):
    columns = (*Size.columns, Column("size_kib", kind="float", unit="KiB", doc="size of the ONNX file in KiB"))


class SaysNothingInTheCard(Size):
    def card_note(self, row, target):
        return ""


def test_the_evaluator_contract_catches_a_column_it_declares_but_does_not_fill():
    built = small_built(TARGETS["cpu"])
    try:
        EvaluatorContract().test_fills_exactly_its_declared_columns(Size(), built)
        with pytest.raises(AssertionError):
            EvaluatorContract().test_fills_exactly_its_declared_columns(ForgetsAColumn(), built)
    finally:
        built.close()


def test_the_evaluator_contract_catches_an_evaluator_silent_in_the_card(tmp_path):
    built = small_built(TARGETS["cpu"])
    try:
        with pytest.raises(AssertionError, match="says nothing in the card"):
            EvaluatorContract().test_columns_reach_both_tables_the_plots_and_the_card(SaysNothingInTheCard(), built,
                                                                                      tmp_path)
    finally:
        built.close()


def test_energy_axis_says_estimate_when_it_is_one():
    energy = shrunk({e.name: e for e in shipped_evaluators()}["energy"])
    built = small_built(TARGETS["cpu"])
    try:
        figures = energy.measure(built)
    finally:
        built.close()
    if figures["energy_source"] != "estimate":
        pytest.skip("this machine has an energy meter")
    schema = make_schema(shipped_knobs(), shipped_evaluators())
    assert axis_label("energy_mj", pd.DataFrame([figures]), schema) == "energy (mJ / input, estimate)"


# --- targets -----------------------------------------------------------------------------------------------

class TestShippedTargets(TargetContract):
    # ids name the file: a bare "gpu" would be the gpu marker's keyword, and skipped where no GPU is
    @pytest.fixture(params=shipped_target_names(), ids=lambda name: f"{name}.yaml")
    def target_config(self, request):
        return request.param


def test_the_target_contract_catches_a_target_without_a_provider_name():
    sound = {"name": "plain", "provider": "CPUExecutionProvider", "num_cpus": 1}
    TargetContract().test_composes_to_a_target_with_a_provider_and_resources(sound, [])
    with pytest.raises(AssertionError, match="no ONNX Runtime provider name"):
        TargetContract().test_composes_to_a_target_with_a_provider_and_resources({**sound, "provider": "CPU"}, [])


# --- task metrics ------------------------------------------------------------------------------------------

def class_scores() -> tuple[dict, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"logits": rng.normal(size=(64, 10)).astype(np.float32)}, rng.integers(0, 10, 64)


def values() -> tuple[dict, np.ndarray]:
    rng = np.random.default_rng(1)
    return {"prediction": rng.normal(size=(64, 1)).astype(np.float32)}, rng.normal(size=64)


def embeddings() -> tuple[dict, None]:
    return {"embedding": np.random.default_rng(2).normal(size=(64, 16)).astype(np.float32)}, None


def agreement(output: np.ndarray, labels: np.ndarray) -> float:
    return float((output.argmax(axis=1) == labels).mean())


SHIPPED_METRICS = {  # every metric search.metrics ships, with data of its task
    "accuracy": (Accuracy, class_scores), "top3_accuracy": (lambda: TopKAccuracy(k=3), class_scores),
    "macro_f1": (MacroF1, class_scores), "mse": (MeanSquaredError, values), "mae": (MeanAbsoluteError, values),
    "fidelity": (CosineFidelity, embeddings),
    "from_function": (lambda: FromFunction(fn=agreement, name="agreement", direction="maximize"), class_scores),
}


class TestShippedMetrics(MetricContract):
    @pytest.fixture(params=sorted(SHIPPED_METRICS))
    def case(self, request):
        return SHIPPED_METRICS[request.param]

    @pytest.fixture
    def metric(self, case):
        return case[0]()

    @pytest.fixture
    def outputs_and_targets(self, case):
        return case[1]()


def test_every_metric_search_metrics_ships_is_held_to_the_contract():
    public = [getattr(search.metrics, name) for name in search.metrics.__all__]
    shipped = {obj for obj in public
               if inspect.isclass(obj) and issubclass(obj, Metric) and not inspect.isabstract(obj)}
    assert shipped == {type(make()) for make, _ in SHIPPED_METRICS.values()}


class ErrorToMaximize(MeanSquaredError):
    name, direction = "error_to_maximize", "maximize"


class NamedAsARowColumn(Accuracy):
    name = "duration_s"


def test_the_metric_contract_catches_a_direction_that_is_backwards():
    contract = MetricContract()
    contract.test_a_perfect_prediction_scores_at_least_as_well_as_a_perturbed_one(MeanSquaredError(), values())
    with pytest.raises(AssertionError, match="scores a perfect prediction"):
        contract.test_a_perfect_prediction_scores_at_least_as_well_as_a_perturbed_one(ErrorToMaximize(), values())


def test_the_metric_contract_catches_a_name_every_row_already_has():
    MetricContract().test_name_is_a_column_and_direction_and_loss_are_known(Accuracy())
    with pytest.raises(AssertionError, match="a column every row already has"):
        MetricContract().test_name_is_a_column_and_direction_and_loss_are_known(NamedAsARowColumn())


# --- workloads ---------------------------------------------------------------------------------------------

class TestDigitsWorkload(WorkloadContract):
    @pytest.fixture
    def workload(self, digits_workload):
        return digits_workload


EXAMPLE_WORKLOADS = sorted(REPO.glob("examples/*/conf/workload/*.yaml"))


@pytest.fixture(scope="module", params=EXAMPLE_WORKLOADS, ids=[p.stem for p in EXAMPLE_WORKLOADS])
def example_workload(request, tmp_path_factory) -> Workload:
    """An example's workload as its config makes it (metric and all), trained for two epochs: the
    contract is about its form, not its quality."""
    conf = request.param.parent.parent
    node = OmegaConf.to_container(compose_config([f"hydra.searchpath=[file://{conf}]",
                                                  f"workload={request.param.stem}"]).workload, resolve=True)
    node.update({k: v for k, v in {"epochs": 2, "cache_dir": str(tmp_path_factory.mktemp("cache"))}.items()
                 if k in node})
    return instantiate(node)


class TestExampleWorkloads(WorkloadContract):
    @pytest.fixture
    def workload(self, example_workload):
        return example_workload


class ExportsAnotherModel(TinyCNN):
    """Doubles its scores only while ONNX traces it: an export that is not the model."""

    def forward(self, x):
        logits = super().forward(x)
        return logits * 2 if torch.onnx.is_in_onnx_export() else logits


def tiny(model: torch.nn.Module, train_dtype=np.float32) -> Workload:
    rng = np.random.default_rng(0)

    def split(n: int, dtype=np.float32) -> Split:
        return Split({"input": rng.random((n, 1, 8, 8)).astype(dtype)}, rng.integers(0, 10, n))

    torch.manual_seed(0)
    return Workload(name="tiny", model=model.eval(), train=split(32, train_dtype), val=split(16), test=split(16))


@pytest.mark.parametrize("broken, promise", [
    (lambda: tiny(ExportsAnotherModel()), "test_the_exported_model_computes_what_the_model_does"),
    (lambda: tiny(TinyCNN(), train_dtype=np.float64), "test_splits_have_the_same_input_names_and_dtypes"),
], ids=["export-is-another-model", "train-split-is-float64"])
def test_the_workload_contract_catches_a_workload_that_breaks_a_promise(broken, promise):
    getattr(WorkloadContract(), promise)(tiny(TinyCNN()))  # the sound workload keeps it
    with pytest.raises(AssertionError):
        getattr(WorkloadContract(), promise)(broken())


# --- the contracts are for tests only ----------------------------------------------------------------------

def test_nothing_of_the_product_imports_pytest_or_the_contracts():
    """search.testing imports pytest, which is a test dependency only: the product never imports either."""
    product = [*REPO.joinpath("search").rglob("*.py"), *REPO.joinpath("spaces").glob("*.py"),
               *REPO.joinpath("evaluators").glob("*.py")]
    for path in product:
        if path.is_relative_to(REPO / "search" / "testing"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                assert name.split(".")[0] != "pytest" and not name.startswith("search.testing"), \
                    f"{path.relative_to(REPO)} imports {name}"
