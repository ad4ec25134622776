"""The configured plugins: knobs (``space.knobs``) and evaluators (``evaluators``), instantiated from
config with ``_target_`` (the only registry), and the result schema their declarations make."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hydra.utils import instantiate

from evaluators import Evaluator, objectives
from evaluators._base import noise_intervals
from search.errors import ConfigError
from search.schema import Field, Schema
from spaces import Knob
from spaces._base import STAGES, compose_runtime

CORE = (Field("target", kind="str", applies_to="runtime", doc="hardware target name"),
        Field("batch_size", kind="int", unit="inputs", unset=32, applies_to="runtime", doc="inputs per inference call"))


def instantiate_plugin(node: Any, what: str) -> Any:
    """``hydra.utils.instantiate``, with anything that goes wrong as one line naming the plugin."""
    try:
        return instantiate(node)
    except ConfigError:
        raise
    except Exception as exc:  # a class that is not there, a bad argument, a broken factory
        cause = exc.__cause__ or exc
        if isinstance(cause, ConfigError):  # the plugin's own one-line refusal, wrapped by Hydra
            raise cause from None
        target = node.get("_target_", "?") if hasattr(node, "get") else "?"
        raise ConfigError(f"{what} ({target}): {type(cause).__name__}: {' '.join(str(cause).split())[:300]}") from None


def _typed(obj: Any, kind: type, what: str, node: Any) -> Any:
    if not isinstance(obj, kind):
        raise ConfigError(f"{what} ({node.get('_target_', '?')}) is a {type(obj).__name__}, "
                          f"not a {kind.__module__.split('.')[0]}.{kind.__name__}")
    return obj


def load_knobs(knobs: Mapping[str, Any]) -> list[Knob]:
    """``space.knobs``, in config order; each entry's key names it in messages."""
    found = [_typed(instantiate_plugin(node, f"knob {name}"), Knob, f"knob {name}", node) for name, node in knobs.items()]
    for knob in found:  # a misspelt stage would never build: say so instead
        if knob.stage not in (None, *STAGES):
            raise ConfigError(f"knob {knob.name}: stage {knob.stage!r} unknown; choose from {', '.join(STAGES)} or None")
    return found


def load_evaluators(evaluators: Mapping[str, Any]) -> list[Evaluator]:
    return [_typed(instantiate_plugin(node, f"evaluator {name}"), Evaluator, f"evaluator {name}", node)
            for name, node in evaluators.items()]


def make_schema(knobs: Sequence[Knob], evaluators: Sequence[Evaluator]) -> Schema:
    """The columns and objectives the plugins declare; a column declared twice is a config error."""
    fields = {CORE[0].name: CORE[0]}
    for knob in knobs:
        for f in knob.fields:
            fields.setdefault(f.name, f)
    fields.setdefault(CORE[1].name, CORE[1])
    schema = Schema(
        fields=tuple(fields.values()),
        facts=tuple(c for k in knobs for c in k.facts),
        metrics=tuple(c for e in evaluators for c in e.declared_columns()),
        objectives=tuple(objectives(evaluators)),
        intervals=noise_intervals(evaluators),
        timed=tuple(e.metric for e in evaluators if e.timed),
        notes={e.name: e.card_note for e in evaluators},
        runtime=functools.partial(compose_runtime, list(knobs)),
    )
    try:
        schema.check_unique()
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    missing = [e.metric for e in evaluators if e.metric not in schema.result_columns]
    if missing:
        raise ConfigError(f"evaluator metric(s) {', '.join(missing)} are not among the evaluators' declared columns")
    return schema


@dataclass
class Plugins:
    """A run's knobs and evaluators, as its config names them, and their schema."""

    knobs: list[Knob]
    evaluators: list[Evaluator]
    schema: Schema


def plugins_from_config(config: Mapping[str, Any]) -> Plugins:
    """The plugins of a stored run config (config.yaml): what the report, pick and rebuild read."""
    knobs = load_knobs(config["space"]["knobs"])
    evaluators = load_evaluators(config["evaluators"])
    for plugin in [*knobs, *evaluators]:  # a run folder keeps the workload's description (its metric), not the workload
        plugin.for_workload(config.get("workload_info") or {})
    return Plugins(knobs, evaluators, make_schema(knobs, evaluators))
