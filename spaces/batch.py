"""Batch size: inputs per inference call, searched when several sizes are declared."""

from __future__ import annotations

from typing import Any
from collections.abc import Sequence

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution

from search.core.errors import ConfigError
from search.core.schema import Field
from spaces._base import Knob, with_baseline


class BatchSize(Knob):
    """Searches ``batch_size`` over ``choices``; None or one choice fixes it (to ``baseline``, the
    top-level ``batch_size``, when None).

    latency_ms is the time of one call on a whole batch, so a smaller batch answers sooner and
    a larger one serves more inputs a second (throughput_ips) at less energy per input: with
    several sizes the front shows that trade. The baseline trial runs at ``baseline``.
    """

    name = "batch_size"
    fields = (Field("batch_size", kind="int", unit="inputs", label="batch size", unset=32, applies_to="runtime",
                    doc="inputs per inference call"),)

    def __init__(self, choices: Sequence[int] | None = None, baseline: int = 32) -> None:
        sizes = list(choices) if choices else [baseline]
        if any(isinstance(b, bool) or int(b) != b or b < 1 for b in [*sizes, baseline]):
            raise ConfigError(f"batch_size: sizes must be integers >= 1, got {sizes} (baseline {baseline})")
        self.baseline_size = int(baseline)
        self.choices = [int(b) for b in sizes]
        if len(self.choices) > 1:
            self.choices = with_baseline(self.name, self.choices, self.baseline_size)

    def baseline(self) -> dict[str, Any]:
        return {"batch_size": self.baseline_size} if len(self.choices) > 1 else {}

    def cover(self) -> list[dict[str, Any]]:
        return [{"batch_size": b} for b in self.choices] if len(self.choices) > 1 else []

    def distributions(self) -> dict[str, BaseDistribution]:
        return {"batch_size": CategoricalDistribution(self.choices)} if len(self.choices) > 1 else {}

    def suggest(self, trial: optuna.Trial, chosen: dict[str, Any]) -> dict[str, Any]:
        return {"batch_size": self.draw(trial, "batch_size") if len(self.choices) > 1 else self.choices[0]}
