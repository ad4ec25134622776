"""Quantization bits: 32 (fp32), 16 (fp16 or bf16), 8 (int8, by mode), 4 (int4 weight-only)."""

from __future__ import annotations

from typing import Any
from collections.abc import Sequence

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution

from search.errors import ConfigError
from search.runtime.target import KNOWN_HALF, KNOWN_PRECISIONS, Target
from search.transforms.quantize import INT8_MODES
from spaces._base import Knob, check_choices, with_baseline


class QuantBits(Knob):
    """Searches ``quant_bits`` over the declared choices the target runs, ``quant_mode`` (how 8
    bits are reached) and ``half_format`` (which 16-bit float: fp16 or bf16).

    Like distillation's params, the mode and format are drawn on every trial (so NSGA-II's
    crossover keeps them) but applied only where the bits are 8 or 16; either is recorded in
    the ``quant_mode`` column. One choice is fixed; several are searched.
    """

    name = "quant_bits"

    def __init__(self, choices: Sequence[int] = (32, 16, 8, 4), modes: Sequence[str] = ("minmax",),
                 half: Sequence[str] = ("fp16",)) -> None:
        bad = [c for c in choices if c not in KNOWN_PRECISIONS]
        if bad or not choices:
            raise ConfigError(f"quant_bits: {bad or 'empty'} not allowed; choose from {list(KNOWN_PRECISIONS)}")
        unknown = [m for m in modes if m not in INT8_MODES]
        if unknown or not modes:
            raise ConfigError(f"quant_bits: modes {unknown or 'empty'} not allowed; choose from {list(INT8_MODES)}")
        unknown_half = [h for h in half if h not in KNOWN_HALF]
        if unknown_half or not half:
            raise ConfigError(f"quant_bits: half {unknown_half or 'empty'} not allowed; choose from {list(KNOWN_HALF)}")
        self.choices = [int(c) for c in choices]
        self.modes = [str(m) for m in modes]
        self.half = [str(h) for h in half]

    def narrow(self, target: Target) -> None:
        self.choices = with_baseline(self.name, check_choices(self.name, self.choices, target.precisions, target.name), 32)
        if 16 in self.choices:
            self.half = check_choices(f"{self.name} 16-bit format", self.half, target.half_formats, target.name)

    def baseline(self) -> dict[str, Any]:
        return {"quant_bits": 32}

    def cover(self) -> list[dict[str, Any]]:
        """Every precision; 8 bits once per int8 mode and 16 bits once per format when they are searched."""
        searched = self.distributions()
        found = []
        for bits in self.choices:
            if bits == 8 and "quant_mode" in searched:
                found += [{"quant_bits": 8, "quant_mode": m} for m in self.modes]
            elif bits == 16 and "half_format" in searched:
                found += [{"quant_bits": 16, "half_format": h} for h in self.half]
            else:
                found.append({"quant_bits": bits})
        return found

    def distributions(self) -> dict[str, BaseDistribution]:
        found: dict[str, BaseDistribution] = {"quant_bits": CategoricalDistribution(self.choices)}
        if len(self.modes) > 1 and 8 in self.choices:
            found["quant_mode"] = CategoricalDistribution(self.modes)
        if len(self.half) > 1 and 16 in self.choices:
            found["half_format"] = CategoricalDistribution(self.half)
        return found

    def suggest(self, trial: optuna.Trial, chosen: dict[str, Any]) -> dict[str, Any]:
        bits = self.draw(trial, "quant_bits")
        searched = self.distributions()
        mode = self.draw(trial, "quant_mode") if "quant_mode" in searched else self.modes[0]
        half = self.draw(trial, "half_format") if "half_format" in searched else self.half[0]
        return {"quant_bits": bits, "quant_mode": {8: mode, 16: half}.get(bits)}
