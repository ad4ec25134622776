"""The knob interface: a knob declares itself (distributions, candidate fields, facts, what it changes in the
build or the runtime, which of its values a target runs), is narrowed to the study's targets once, then
suggests values per trial."""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from search.core.candidate import CORE_FIELDS, Candidate, UnknownField
from search.core.errors import ConfigError
from search.runtime.session_settings import merge_settings, runtime_settings
from search.runtime.target import Target
from search.core.schema import Column, Field

STAGES = ("torch", "onnx")  # where a knob's build step runs: on the torch module, or on the exported ONNX model


@dataclass
class BuildContext:
    """What a knob's build step may use: the workload (model, data, classifier), the target, the
    seed, the batch size, and where to leave what the build learned (``facts``) and its timings."""

    workload: Any
    target: Target
    seed: int
    batch_size: int
    facts: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    # A knob that trains calls this after every epoch (model, epoch, epochs, best validation score so far):
    # the run's recovery rungs (search/run/rungs.py) may stop a hopeless candidate there by raising.
    after_epoch: Callable[[Any, int, int, float], None] | None = None


class Knob(abc.ABC):
    """One dimension of the search space, declared in one file.

    A knob is built from config (``_target_``), narrowed once to what the study's targets run,
    and then asked for its values on every trial. Knobs run in config order, so a knob may
    depend on the values suggested before it (distillation only where pruning happened).

    Attributes:
        name: the knob's name in config.
        fields: the candidate fields it sets (each a column of trials.csv), with their types, the
            value meaning "not applied", and whether they change the ``build`` or the ``runtime``.
        facts: columns its build step fills with what it learned (the share really pruned).
        stage: where its build step runs: ``torch`` (on the module, before export), ``onnx`` (on
            the exported model), or None (nothing to build: a runtime setting).
        needs_torch: a bare ONNX workload has no torch module: such a knob is left out of its space.
    """

    name: str = ""
    fields: tuple[Field, ...] = ()
    facts: tuple[Column, ...] = ()
    stage: str | None = None
    needs_torch: bool = False

    def narrow(self, targets: Sequence[Target]) -> None:  # noqa: B027 - most knobs need no narrowing
        """Restrict the choices to what any of ``targets`` runs; raise ConfigError if none remain."""

    def for_workload(self, workload: Mapping[str, Any]) -> None:  # noqa: B027 - most knobs fit every model
        """Restrict the choices to what the run's model can take (``workload``: its description,
        ``search.workloads.describe``), after ``narrow``; a knob that fits no part of it fixes its unset value."""

    def for_model(self, workload: Any) -> None:  # noqa: B027 - most knobs need not look at the model
        """Learn from the run's torch model itself, once, before the search (a bare ONNX model: not
        called): which values build the same model, so ``refuses`` and ``project`` move a draw to the
        value that builds it, and no two trials build one model under two names."""

    def refuses(self, values: Mapping[str, Any], target: Target) -> str:
        """Why ``target`` cannot run these candidate values of this knob ("" when it can)."""
        return ""

    def project(self, params: dict[str, Any], target: Target) -> dict[str, Any]:
        """Trial params moved to the nearest ones ``target`` runs (a refused draw is re-asked so)."""
        return params

    def runtime(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """What these values add to the ONNX Runtime settings (plain data: threads, session options)."""
        return {}

    def build(self, model: Any, values: Mapping[str, Any], context: BuildContext) -> Any:
        """This knob's build step on a torch module (stage ``torch``) or ONNX bytes (stage ``onnx``)."""
        return model

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


def runtime_knobs(knobs: Sequence[Knob]) -> list[Knob]:
    """The knobs that only change how a built model runs: they build nothing. The target is not one of
    them, though it is a runtime field: each target's model is quantized for its provider."""
    return [knob for knob in knobs
            if knob.stage is None and all(f.applies_to == "runtime" and f.name != "target" for f in knob.fields)]


def declared_fields(knobs: Sequence[Knob]) -> list[str]:
    return [*CORE_FIELDS, *(f.name for k in knobs for f in k.fields)]


def compose_runtime(knobs: Sequence[Knob], values: Mapping[str, Any]) -> dict[str, Any]:
    """The ONNX Runtime settings the knobs make of ``values``: sequential, then each knob's part."""
    settings = runtime_settings()
    for knob in knobs:
        settings = merge_settings(settings, knob.runtime(values))
    return settings


def refusal(knobs: Sequence[Knob], values: Mapping[str, Any], target: Target) -> str:
    """Why ``target`` cannot run a candidate: the first knob that says so ("" when all run it)."""
    return next((reason for reason in (k.refuses(values, target) for k in knobs) if reason), "")


def projected(knobs: Sequence[Knob], params: dict[str, Any], target: Target) -> dict[str, Any]:
    """Params moved, knob by knob, to the nearest that ``target`` runs."""
    for knob in knobs:
        params = knob.project(dict(params), target)
    return params


def suggest_candidate(knobs: Sequence[Knob], trial: optuna.Trial, target: Target, batch_size: int) -> Candidate:
    """The trial's candidate: each knob's fields (a field no knob declares is an error) and the runtime they make."""
    chosen: dict[str, Any] = {"target": target.name, "batch_size": batch_size}
    for knob in knobs:
        found = knob.suggest(trial, chosen)
        unknown = sorted(set(found) - {f.name for f in knob.fields} - set(CORE_FIELDS))
        if unknown:
            raise UnknownField(f"knob {knob.name} set field(s) {', '.join(unknown)} it does not declare in `fields`")
        chosen.update(found)
    return Candidate(runtime=compose_runtime(knobs, chosen), **chosen)
