"""Structured pruning rate: the fraction of channels removed from every prunable layer."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution

from search.core.errors import ConfigError
from search.core.schema import Column, Field
from search.workloads.calling import to_tensors
from search.transforms.prune import prune, removed_share, weights_digest
from spaces._base import BuildContext, Knob


class PruneRate(Knob):
    """Searches ``prune_rate`` on a grid from 0 to ``high``, and the channel multiple ``round_to``.

    The grid always starts at 0, the unoptimized model that the baseline trial is.
    Remaining channel counts are rounded to a multiple of ``round_to``: ONNX Runtime's CPU
    convolutions run blocked (NCHWc) kernels on multiples of 8 or 16 channels, and measured
    here an unaligned pruned CNN ran up to 4x slower than an aligned one with fewer channels
    removed. One choice is fixed; several are searched.
    """

    name = "prune_rate"
    stage = "torch"
    needs_torch = True
    fields = (
        Field("prune_rate", unit="fraction", label="prune rate", unset=0.0,
              doc="channels removed per prunable layer (before rounding)"),
        Field("prune_round_to", kind="int", unit="channels", doc="remaining channels are a multiple of this"),
    )
    facts = (Column("prune_removed", unit="fraction", doc="share of the prunable layers' channels really removed"),)

    def __init__(self, high: float = 0.7, step: float = 0.1, round_to: Sequence[int] = (8, 16)) -> None:
        if not 0 <= high < 1 or step <= 0 or step > high > 0:
            raise ConfigError(f"prune_rate: need 0 <= high < 1 and 0 < step <= high, got high={high}, step={step}")
        if not round_to or any(int(r) != r or r < 1 for r in round_to):
            raise ConfigError(f"prune_rate: round_to must be positive integers, got {list(round_to)}")
        self.high, self.step = float(high), float(step)
        self.round_to = [int(r) for r in round_to]
        # (rate, round_to) -> (rate, round_to, share removed) of the draw that builds the same model (for_model)
        self.same_as: dict[tuple[float, int | None], tuple[float, int | None, float]] = {}

    def baseline(self) -> dict[str, Any]:
        return {"prune_rate": 0.0}

    def for_model(self, workload: Any) -> None:
        """Prune the model (no training) at every (rate, round_to) of the grid: draws that remove the very
        same channels build one model, which the draw nearest its real share names (rate 0.8 with
        round_to 16 that removes nothing is prune_rate 0.0). ``same_as`` maps the others to it."""
        example = to_tensors(workload.train.rows(0, 1))
        models: dict[str, list[tuple[float, int | None, float]]] = {}
        for rate in self.grid():
            for multiple in self.round_to if rate else [None]:
                pruned = prune(workload.model, rate, example, workload.classifier, multiple, workload.keep)
                share = removed_share(workload.model, pruned, workload.classifier, workload.keep)
                models.setdefault(weights_digest(pruned), []).append((rate, multiple, share))
        self.same_as = {}
        for draws in models.values():
            name = min(draws, key=lambda d: (abs(d[0] - d[2]), d[0], d[1] or 0))
            self.same_as.update({(rate, multiple): name for rate, multiple, _ in draws if (rate, multiple) != name[:2]})
        if self.same_as:
            merged = sorted(self.same_as.items(), key=str)
            logging.getLogger("search").warning(
                "prune_rate (rate/round_to): on this model %s; a draw of one is re-asked as the other, so each "
                "model is built once",
                ", ".join(f"{_named(*drawn)} builds what {_named(*name[:2])} does" for drawn, name in merged))

    def grid(self) -> list[float]:
        return [round(i * self.step, 6) for i in range(int(round(self.high / self.step)) + 1)]

    def refuses(self, values: Mapping[str, Any], target: Any) -> str:
        drawn = self._drawn(values)
        if drawn not in self.same_as:
            return ""
        rate, multiple, share = self.same_as[drawn]
        return (f"prune_rate {drawn[0]:g} with prune_round_to {drawn[1]} removes the very channels prune_rate "
                f"{rate:g}" + (f" with prune_round_to {multiple}" if multiple else " (unpruned)") +
                f" removes ({share:.0%}): one model, built once under the name nearest what it is")

    def project(self, params: dict[str, Any], target: Any) -> dict[str, Any]:
        drawn = self._drawn(params)
        if drawn not in self.same_as:
            return params
        rate, multiple, _ = self.same_as[drawn]
        moved = {**params, "prune_rate": rate}
        if multiple is not None and "prune_round_to" in params:
            moved["prune_round_to"] = multiple
        return moved

    def _drawn(self, values: Mapping[str, Any]) -> tuple[float, int | None]:
        rate = round(float(values.get("prune_rate") or 0.0), 6)
        multiple = values.get("prune_round_to", self.round_to[0] if len(self.round_to) == 1 else None)
        return rate, (int(multiple) if rate and multiple is not None else None)

    def distributions(self) -> dict[str, BaseDistribution]:
        found: dict[str, BaseDistribution] = {"prune_rate": FloatDistribution(0.0, self.high, step=self.step)}
        if len(self.round_to) > 1:
            found["prune_round_to"] = CategoricalDistribution(self.round_to)
        return found

    def suggest(self, trial: optuna.Trial, chosen: dict[str, Any]) -> dict[str, Any]:
        rate = round(self.draw(trial, "prune_rate"), 6)
        multiple = self.round_to[0] if len(self.round_to) == 1 else self.draw(trial, "prune_round_to")
        return {"prune_rate": rate, "prune_round_to": multiple if rate else None}

    def build(self, model: Any, values: Mapping[str, Any], context: BuildContext) -> Any:
        """The model with ``prune_rate`` of its channels removed; the share really removed is a fact."""
        workload = context.workload
        example = to_tensors(workload.train.rows(0, 1))  # building never reads the test split
        pruned = prune(model, values.get("prune_rate") or 0.0, example, workload.classifier,
                       values.get("prune_round_to"), workload.keep)
        context.facts["prune_removed"] = removed_share(workload.model, pruned, workload.classifier, workload.keep)
        return pruned


def _named(rate: float, multiple: int | None) -> str:
    return f"{rate:g}/{multiple}" if multiple else f"{rate:g} (unpruned)"
