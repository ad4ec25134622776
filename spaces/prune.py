"""Structured pruning rate: the fraction of channels removed from every prunable layer."""

from __future__ import annotations

from typing import Any

import optuna

from search.errors import ConfigError
from spaces._base import Knob


class PruneRate(Knob):
    """Searches ``prune_rate`` on a grid from ``low`` to ``high``."""

    name = "prune_rate"

    def __init__(self, low: float = 0.0, high: float = 0.7, step: float = 0.1) -> None:
        if not 0 <= low <= high < 1 or step <= 0:
            raise ConfigError(f"prune_rate: need 0 <= low <= high < 1 and step > 0, got low={low}, high={high}, step={step}")
        self.low, self.high, self.step = float(low), float(high), float(step)

    def suggest(self, trial: optuna.Trial, chosen: dict[str, Any]) -> dict[str, Any]:
        rate = trial.suggest_float("prune_rate", self.low, self.high, step=self.step)
        return {"prune_rate": round(rate, 6)}
