"""A knob and an evaluator that live outside the package, in the user's own module.

    python -m search 'hydra.searchpath=[file://examples/custom_plugins/conf]' space=custom evaluators=custom

* ``GraphOptimization`` searches ONNX Runtime's graph optimization level (a runtime setting: the
  model file is the same, the session that runs it differs). ORT's default is ``all``.
* ``OperatorCount`` counts the operators in the model's graph: a figure a user may want to keep
  low (an accelerator compiler that handles a fixed set of ops, or a reviewer reading the graph).

Each declares everything the search needs in the class itself; nothing under search/, spaces/
or evaluators/ is touched. Their columns reach trials.csv, pareto.csv, pareto.html and the cards.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import onnx
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution

from evaluators import Built, Evaluator
from search.errors import ConfigError
from search.schema import Column, Field
from spaces import Knob

LEVELS = {"disabled": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
          "all": "ORT_ENABLE_ALL"}


class GraphOptimization(Knob):
    """Searches ``graph_opt_level`` over ``levels``; ``all`` (ORT's default) is the baseline's."""

    name = "graph_optimization"
    fields = (Field("graph_opt_level", kind="str", unset="all", applies_to="runtime",
                    doc="ONNX Runtime graph optimization level: disabled, basic, extended or all"),)

    def __init__(self, levels: Sequence[str] = ("all", "basic", "disabled")) -> None:
        unknown = [level for level in levels if level not in LEVELS]
        if unknown or not levels:
            raise ConfigError(f"graph_optimization: levels {unknown or 'empty'} unknown; choose from {list(LEVELS)}")
        self.levels = list(dict.fromkeys(["all", *levels]))  # the baseline's level is always a choice

    def baseline(self) -> dict[str, Any]:
        return {"graph_opt_level": "all"}

    def cover(self) -> list[dict[str, Any]]:
        return [{"graph_opt_level": level} for level in self.levels]

    def distributions(self) -> dict[str, BaseDistribution]:
        return {"graph_opt_level": CategoricalDistribution(self.levels)}

    def suggest(self, trial: optuna.Trial, chosen: dict[str, Any]) -> dict[str, Any]:
        return {"graph_opt_level": self.draw(trial, "graph_opt_level")}

    def runtime(self, values: Mapping[str, Any]) -> dict[str, Any]:
        level = values.get("graph_opt_level", "all")
        return {"session_options": {"graph_optimization_level": LEVELS[level]}}


class OperatorCount(Evaluator):
    """``operator_count``: nodes in the model's ONNX graph (fewer is better)."""

    name = "operators"
    metric = "operator_count"
    direction = "minimize"
    columns = (Column("operator_count", kind="int", label="operators in the graph",
                      doc="nodes of the ONNX graph"),)

    def measure(self, built: Built) -> dict[str, Any]:
        return {"operator_count": len(onnx.load_model_from_string(built.model_bytes).graph.node)}

    def card_note(self, row: dict[str, Any], target: dict[str, Any]) -> str:
        return "nodes of the model's ONNX graph as shipped (before ONNX Runtime's own graph optimizations)"
