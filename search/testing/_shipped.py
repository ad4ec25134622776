"""The shipped plugins, as the configs under conf/ compose them: what the contracts measure a plugin against.

Configs are composed once per process (Hydra, a few hundred ms); plugins are made fresh on every call, since
narrowing a knob changes it.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import OmegaConf

from evaluators import Evaluator
from search.config import compose_config, known_choices
from search.config import load_evaluators, load_knobs
from search.runtime.target import Target
from spaces import Knob

DEFAULT_TARGET = "cpu"


@functools.cache
def _composed(overrides: tuple[str, ...], key: str) -> dict[str, Any]:
    return OmegaConf.to_container(compose_config(list(overrides))[key], resolve=True)


def shipped_target_names() -> list[str]:
    """conf/target/*.yaml, the default (cpu) first."""
    names = known_choices("target")
    return [DEFAULT_TARGET, *(n for n in names if n != DEFAULT_TARGET)]


def composed_target(config: str | Mapping[str, Any], overrides: Sequence[str] = ()) -> Target:
    """A target from its name (composed as ``+target=NAME`` does, with ``overrides`` such as a
    ``hydra.searchpath`` of your own) or from its config as Hydra composed it."""
    if isinstance(config, str):
        return Target.from_config(_composed((*overrides, f"+target={config}"), "target"))
    return Target.from_config(dict(config))


def shipped_targets() -> dict[str, Target]:
    """Every shipped target by name, the default first."""
    return {name: composed_target(name) for name in shipped_target_names()}


def shipped_knobs() -> list[Knob]:
    """Every knob of ``space=full`` (the default space with every mode), freshly made, in config order."""
    return load_knobs(copy.deepcopy(_composed(("space=full",), "space")["knobs"]))


def shipped_evaluators() -> list[Evaluator]:
    """Every evaluator of conf/evaluators/default.yaml, freshly made, in config order."""
    return load_evaluators(copy.deepcopy(_composed((), "evaluators")))
