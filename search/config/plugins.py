"""The configured plugins: knobs (``space.knobs``) and evaluators (``evaluators``), instantiated from
config with ``_target_`` (the only registry), and the result schema their declarations make."""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import types
import typing
import collections.abc
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from evaluators import Evaluator, objectives
from evaluators import noise_intervals
from search.core.constraints import constraints_for
from search.core.errors import ConfigError
from search.core.schema import Field, Schema
from spaces import Knob
from spaces import STAGES, compose_runtime

CORE = (Field("target", kind="str", applies_to="runtime", doc="hardware target name"),
        Field("batch_size", kind="int", unit="inputs", unset=32, applies_to="runtime", doc="inputs per inference call"))


def instantiate_plugin(node: Any, what: str, path: str = "") -> Any:
    """``hydra.utils.instantiate``, with anything that goes wrong as one line naming the plugin.

    Before the call, the node's settings are checked against the ``_target_``'s signature: an unknown
    setting (a near miss says what was meant), a missing one, or a value of the wrong simple type is
    named by its config ``path`` (``evaluators.latency``), where the caller gives it.
    """
    check_settings(node, what, path)
    try:
        return instantiate(node)
    except ConfigError:
        raise
    except Exception as exc:  # a class that is not there, a bad argument, a broken factory
        cause = exc.__cause__ or exc
        if isinstance(cause, ConfigError):  # the plugin's own one-line refusal, wrapped by Hydra
            raise cause from None
        raise ConfigError(_failure(cause, what, node)) from None


def _failure(cause: BaseException, what: str, node: Any) -> str:
    """One line for what ``instantiate`` raised, without Hydra's wrapping and Python's reprs where they say nothing."""
    target = node.get("_target_", "?") if hasattr(node, "get") else "?"
    if isinstance(cause, ImportError) and isinstance(cause.__cause__, ImportError):  # Hydra's "Error loading ..."
        return f"{what} ({target}): cannot be imported: {_one_line(cause.__cause__)}"
    if type(cause) is ValueError:  # a plugin's argument check (house style): its message is the explanation
        return f"{what} ({target}): {_one_line(cause)}"
    return f"{what} ({target}): {type(cause).__name__}: {_one_line(cause)}"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


# The simple types a setting's annotation is checked against: what each is called in a message.
NOUNS = {int: ("an integer", "integers"), float: ("a number", "numbers"), bool: ("true or false", "true/false values"),
         str: ("a string", "strings"), type(None): ("null", "nulls")}


def check_settings(node: Any, what: str, path: str = "") -> None:
    """The node's settings against its ``_target_``'s signature, nested ``_target_`` nodes too; what cannot
    be checked here (a target that does not import, an annotation that does not resolve) is left to the call."""
    path = path or (what if what.isidentifier() else "")  # "sampler" is its own config path
    settings = _plain(node)
    target = _located(settings.get("_target_")) if settings else None
    if target is None:
        return
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):  # a builtin without a signature
        return
    names = [n for n, p in signature.parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    given = {k: v for k, v in settings.items() if not str(k).startswith("_")}  # _target_, _args_: Hydra's own
    if not any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values()):
        _check_known(given, names, what)
    if "_args_" not in settings and not settings.get("_partial_"):
        missing = [n for n in names if signature.parameters[n].default is inspect.Parameter.empty and n not in given]
        if missing:
            raise ConfigError(f"{what}: missing setting(s) {', '.join(missing)}; it takes {', '.join(names)}")
    hints = _hints(target.__init__ if inspect.isclass(target) else target)
    for key, value in given.items():
        where = f"{path}.{key}" if path else f"{what}: {key}"
        if isinstance(value, dict) and "_target_" in value and settings.get("_recursive_", True):
            check_settings(value, f"{path}.{key}" if path else f"{what}: {key}", f"{path}.{key}" if path else "")
        elif key in hints and (arms := _arms(hints[key])) and not any(_fits(value, arm) for arm in arms):
            raise ConfigError(f"{where} must be {' or '.join(map(_noun, arms))}, got {value!r}")


def _check_known(given: Mapping[str, Any], names: Sequence[str], what: str) -> None:
    for key in given:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            meant = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"{what}: unknown setting '{key}'{meant}; it takes {', '.join(names) or 'no settings'}")


def _plain(node: Any) -> dict[str, Any] | None:
    """The node as plain values; None where that fails (a missing value: ``instantiate`` names it)."""
    try:
        return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    except Exception:  # noqa: BLE001 - the call itself reports what is wrong with the node
        return None


def _located(target: Any) -> Any:
    """The object a ``_target_`` names, or None where it cannot be found (``instantiate`` then says why)."""
    if not isinstance(target, str):
        return target if callable(target) else None
    parts = target.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        except Exception:  # noqa: BLE001 - a module that fails on import: the call reports it
            return None
        for part in parts[cut:]:
            found = getattr(found, part, None)
        return found
    return None


def _hints(function: Any) -> dict[str, Any]:
    """Its annotations as types (strings under ``from __future__ import annotations``); one that does not
    resolve (a name imported only for type checkers) is left out, the others still count."""
    try:
        return typing.get_type_hints(function)
    except Exception:  # noqa: BLE001 - fall back to the annotations that resolve one by one
        pass
    namespace = getattr(inspect.unwrap(function), "__globals__", {})
    found = {}
    for name, annotation in getattr(function, "__annotations__", {}).items():
        try:  # the plugin's own source text, evaluated as typing.get_type_hints does
            found[name] = eval(annotation, namespace) if isinstance(annotation, str) else annotation  # noqa: S307
        except Exception:  # noqa: BLE001, S112 - not checkable: the plugin's own checks still run
            continue
    return found


def _arms(hint: Any) -> list[Any] | None:
    """The simple types a hint allows, a sequence of them as ``("list", arms)``; None when anything else is allowed."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        arms = [_arms(arm) for arm in typing.get_args(hint)]
        return None if None in arms else [a for arm in arms for a in arm]
    if origin in (list, tuple, collections.abc.Sequence):
        inner = [_arms(a) for a in typing.get_args(hint) if a is not Ellipsis]
        if not inner or None in inner or any(isinstance(a, tuple) for arm in inner for a in arm):
            return None
        return [("list", tuple(dict.fromkeys(a for arm in inner for a in arm)))]
    return [hint] if hint in NOUNS else None


def _fits(value: Any, arm: Any) -> bool:
    if isinstance(arm, tuple):
        return isinstance(value, (list, tuple)) and all(any(_fits(v, a) for a in arm[1]) for v in value)
    if arm is float:  # an integer is a number (PEP 484), true is not
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if arm is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, arm)


def _noun(arm: Any) -> str:
    if isinstance(arm, tuple):
        return f"a list of {' or '.join(NOUNS[a][1] for a in arm[1])} ([{', '.join(a.__name__ for a in arm[1])}])"
    return f"{NOUNS[arm][0]}" + ("" if arm is type(None) else f" ({arm.__name__})")


def _typed(obj: Any, kind: type, what: str, node: Any) -> Any:
    if not isinstance(obj, kind):
        raise ConfigError(f"{what} ({node.get('_target_', '?')}) is a {type(obj).__name__}, "
                          f"not a {kind.__module__.split('.')[0]}.{kind.__name__}")
    return obj


def load_knobs(knobs: Mapping[str, Any]) -> list[Knob]:
    """``space.knobs``, in config order; each entry's key names it in messages."""
    found = [_typed(instantiate_plugin(node, f"knob {name}", f"space.knobs.{name}"), Knob, f"knob {name}", node)
             for name, node in knobs.items()]
    for knob in found:  # a misspelt stage would never build: say so instead
        if knob.stage not in (None, *STAGES):
            raise ConfigError(f"knob {knob.name}: stage {knob.stage!r} unknown; "
                              f"choose from {', '.join(STAGES)} or None")
    return found


def load_evaluators(evaluators: Mapping[str, Any]) -> list[Evaluator]:
    return [_typed(instantiate_plugin(node, f"evaluator {name}", f"evaluators.{name}"), Evaluator, f"evaluator {name}",
                   node)
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
        timed_columns=tuple(c.name for e in evaluators if e.timed for c in e.declared_columns() if c.kind == "float"),
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
    return Plugins(knobs, evaluators, constrained(make_schema(knobs, evaluators), config))


def constrained(schema: Schema, config: Mapping[str, Any]) -> Schema:
    """The schema with the run's ``constraints.*`` (search/core/constraints.py): a drop limit needs the workload's
    metric, which ``workload_info`` holds once the workload is described (before: left for later)."""
    raw = config.get("constraints")
    if not raw:
        return schema
    metric = (config.get("workload_info") or {}).get("metric") or {}
    named = (metric["name"], metric.get("direction", "maximize")) if metric.get("name") else None
    return dataclasses.replace(schema, constraints=constraints_for(raw, schema.numeric_columns, named))
