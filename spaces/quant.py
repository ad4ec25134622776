"""Quantization bits: 32 (fp32), 16 (fp16), 8 (int8, by mode), 4 (int4 weight-only)."""

from __future__ import annotations

from typing import Any
from collections.abc import Sequence

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution

from search.errors import ConfigError
from search.target import KNOWN_PRECISIONS, Target
from search.transforms.quantize import INT8_MODES
from spaces._base import Knob, check_choices, with_baseline


class QuantBits(Knob):
    """Searches ``quant_bits`` over the declared choices the target runs, and ``quant_mode`` for 8 bits.

    Like distillation's params, the mode is drawn on every trial (so NSGA-II's crossover keeps
    it) but applied and recorded only where the bits are 8. One mode is fixed; several are searched.
    """

    name = "quant_bits"

    def __init__(self, choices: Sequence[int] = (32, 16, 8, 4), modes: Sequence[str] = ("minmax",)) -> None:
        bad = [c for c in choices if c not in KNOWN_PRECISIONS]
        if bad or not choices:
            raise ConfigError(f"quant_bits: {bad or 'empty'} not allowed; choose from {list(KNOWN_PRECISIONS)}")
        unknown = [m for m in modes if m not in INT8_MODES]
        if unknown or not modes:
            raise ConfigError(f"quant_bits: modes {unknown or 'empty'} not allowed; choose from {list(INT8_MODES)}")
        self.choices = [int(c) for c in choices]
        self.modes = [str(m) for m in modes]

    def narrow(self, target: Target) -> None:
        self.choices = with_baseline(self.name, check_choices(self.name, self.choices, target.precisions, target.name), 32)

    def distributions(self) -> dict[str, BaseDistribution]:
        found: dict[str, BaseDistribution] = {"quant_bits": CategoricalDistribution(self.choices)}
        if len(self.modes) > 1 and 8 in self.choices:
            found["quant_mode"] = CategoricalDistribution(self.modes)
        return found

    def suggest(self, trial: optuna.Trial, chosen: dict[str, Any]) -> dict[str, Any]:
        bits = self.draw(trial, "quant_bits")
        mode = self.draw(trial, "quant_mode") if "quant_mode" in self.distributions() else self.modes[0]
        return {"quant_bits": bits, "quant_mode": mode if bits == 8 else None}
