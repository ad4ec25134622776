"""Quantization bits: 32 (fp32), 16 (fp16), 8 (int8 static QDQ), 4 (int4 weight-only)."""

from __future__ import annotations

from typing import Any
from collections.abc import Sequence

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution

from search.errors import ConfigError
from search.target import KNOWN_PRECISIONS, Target
from spaces._base import Knob, check_choices, with_baseline


class QuantBits(Knob):
    """Searches ``quant_bits`` over the declared choices the target runs."""

    name = "quant_bits"

    def __init__(self, choices: Sequence[int] = (32, 16, 8, 4)) -> None:
        bad = [c for c in choices if c not in KNOWN_PRECISIONS]
        if bad or not choices:
            raise ConfigError(f"quant_bits: {bad or 'empty'} not allowed; choose from {list(KNOWN_PRECISIONS)}")
        self.choices = [int(c) for c in choices]

    def narrow(self, target: Target) -> None:
        self.choices = with_baseline(self.name, check_choices(self.name, self.choices, target.precisions, target.name), 32)

    def distributions(self) -> dict[str, BaseDistribution]:
        return {"quant_bits": CategoricalDistribution(self.choices)}

    def suggest(self, trial: optuna.Trial, chosen: dict[str, Any]) -> dict[str, Any]:
        return {"quant_bits": self.draw(trial, "quant_bits")}
