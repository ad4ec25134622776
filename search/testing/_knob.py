"""The promises every knob keeps: what it declares, what it draws, and what its targets run."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
import pytest
from ray import cloudpickle

from search.core import optuna_private
from search.core.candidate import Candidate
from search.core.schema import KINDS
from search.runtime.target import Target
from search.testing._shipped import DEFAULT_TARGET, composed_target
from spaces import STAGES, Knob, compose_runtime, declared_fields

# The Python types a field's declared kind may hold (numpy's too: a knob may draw from an array).
TYPES = {"int": (int, np.integer), "float": (float, int, np.floating), "str": (str,), "bool": (bool, np.bool_)}


def narrowed(knob: Knob, targets: Sequence[Target]) -> Knob:
    """A copy of ``knob`` narrowed to ``targets`` (narrowing changes a knob; the fixture's stays as given)."""
    found = copy.deepcopy(knob)
    found.narrow(list(targets))
    return found


def chosen_before(target: Target) -> dict[str, Any]:
    """What earlier knobs chose, as the driver passes it to ``suggest`` (distillation reads the prune rate)."""
    return {"target": target.name, "batch_size": 32, "prune_rate": 0.5}


def draws(knob: Knob, target: Target, trials: int = 25, seed: int = 0) -> list[tuple[dict, dict]]:
    """(params, fields) of ``trials`` random draws of the knob's whole space, as the driver asks for it."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    found = []
    for _ in range(trials):
        trial = study.ask(fixed_distributions=knob.distributions())
        found.append((trial.params, knob.suggest(trial, chosen_before(target))))
        study.tell(trial, 0.0)
    return found


def contains(distributions: dict, param: str, value: Any) -> bool:
    """Whether ``value`` is one of the param's distribution's (a choice it lacks is no error: False)."""
    return optuna_private.contains(distributions[param], value)


class KnobContract:
    """Inherit it and give the ``knob`` fixture (a ``spaces.Knob``); every test below runs on it.

    Override ``targets`` to narrow to targets of your own (default: the shipped cpu target); the
    draws run as on the first of them.
    """

    trials = 25  # random draws per test: enough to visit every choice of a small space

    @pytest.fixture
    def knob(self) -> Knob:
        raise NotImplementedError

    @pytest.fixture
    def targets(self) -> list[Target]:
        return [composed_target(DEFAULT_TARGET)]

    def test_declares_its_fields_with_known_kinds_and_where_they_apply(self, knob: Knob, targets: list[Target]):
        k = narrowed(knob, targets)
        assert k.fields, f"{k.name} declares no candidate field"
        for f in k.fields:
            assert f.kind in KINDS and f.applies_to in ("build", "runtime") and f.doc, f
        assert k.stage in (None, *STAGES), k.stage
        if k.stage is not None:
            assert any(f.applies_to == "build" for f in k.fields), \
                "a knob that builds has a build field (its cache key)"

    def test_draws_stay_within_declared_choices_and_set_only_declared_fields(self, knob: Knob,
                                                                            targets: list[Target]):
        k = narrowed(knob, targets)
        declared = {f.name: f for f in k.fields}
        for params, fields in draws(k, targets[0], self.trials):
            for param, value in params.items():
                assert contains(k.distributions(), param, value), (param, value)
            assert set(fields) <= set(declared), set(fields) - set(declared)
            for name, value in fields.items():
                assert value is None or value == declared[name].unset or \
                    isinstance(value, TYPES[declared[name].kind]), (name, value)

    def test_baseline_and_cover_params_belong_to_the_space(self, knob: Knob, targets: list[Target]):
        k = narrowed(knob, targets)
        space = k.distributions()
        for fixed in [k.baseline(), *k.cover()]:
            for param, value in fixed.items():
                assert param in space, f"{k.name}: {param} fixed but not searched"
                assert contains(space, param, value), (param, value)

    def test_fields_survive_the_ray_boundary(self, knob: Knob, targets: list[Target]):
        k = narrowed(knob, targets)
        for _, fields in draws(k, targets[0], trials=5):
            values = {"target": targets[0].name, **fields}
            cand = Candidate(runtime=compose_runtime([k], values), **values)
            across = cloudpickle.loads(cloudpickle.dumps(cand.to_dict()))  # what Ray does to a task's arguments
            assert Candidate.from_dict(across, declared_fields([k])) == cand

    def test_narrowed_to_a_target_its_draws_run_there_and_projection_moves_nothing(self, knob: Knob,
                                                                                  targets: list[Target]):
        """After narrowing to a target, every choice left runs there, and projecting it moves nothing;
        narrowed to all targets, every draw a target refuses is projected onto one it runs."""
        for target in targets:
            k = narrowed(knob, [target])
            for params, fields in draws(k, target, trials=15):
                assert k.refuses(fields, target) == "", (target.name, params, fields)
                assert k.project(dict(params), target) == params, target.name
        wide = narrowed(knob, targets)
        for target in targets:
            for params, _ in draws(wide, target, trials=15):
                moved = wide.project(dict(params), target)
                fields = wide.suggest(optuna.trial.FixedTrial(moved), chosen_before(target))
                assert wide.refuses(fields, target) == "", (target.name, params, moved, fields)
