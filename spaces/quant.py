"""Quantization bits: 32 (fp32), 16 (fp16 or bf16), 8 (int8, by mode and granularity), 4 (int4 weight-only,
by block size)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution

from search.core.errors import ConfigError
from search.runtime.target import Target
from search.core.schema import Field
from search.transforms.quantize import (HALF_FORMATS, INT4_BLOCKS, INT8_GRANULARITIES, INT8_MODES, SUPPORTED_BITS,
                                        quantize)
from spaces._base import BuildContext, Knob, check_choices, with_baseline

CALIBRATION_SAMPLES = 256  # int8 ranges come from this many training inputs (never the test split)
# Calibration batches are this size whatever batch the candidate runs: the quantized model is then
# one build for every batch size, and the run's store serves it to all of them.
CALIBRATION_BATCH = 32
DEFAULT_HALF = ("fp16",)  # a target that declares no half_formats runs fp16


def precisions_of(target: Target) -> tuple[int, ...]:
    return target.precisions if target.precisions is not None else SUPPORTED_BITS


def half_formats_of(target: Target) -> tuple[str, ...]:
    return target.half_formats if target.half_formats is not None else DEFAULT_HALF


class QuantBits(Knob):
    """Searches ``quant_bits`` over the declared choices the target runs, ``quant_mode`` (how 8
    bits are reached), ``half_format`` (which 16-bit float: fp16 or bf16), ``quant_granularity``
    (int8 weights scaled per tensor or per output channel) and ``int4_block`` (int4 weights per scale).

    Like distillation's params, they are drawn on every trial (so NSGA-II's crossover keeps them)
    but applied only where the bits use them; the mode or format is recorded in the ``quant_mode``
    column, the granularity or block in ``quant_granularity`` (``per_channel``, ``block_32``). One
    choice is fixed; several are searched. The target's ``precisions`` and ``half_formats`` say
    which it runs; this knob is where that is decided.
    """

    name = "quant_bits"
    stage = "onnx"
    fields = (
        Field("quant_bits", kind="int", unit="bits", label="quantization bits", unset=32,
              doc="32, 16, 8 or 4"),
        Field("quant_mode", kind="str", label="quantization mode",
              doc="8 bits: minmax, entropy, percentile (static QDQ calibration) or dynamic; 16 bits: fp16 or bf16"),
        Field("quant_granularity", kind="str", label="quantization granularity",
              doc="8 bits: per_tensor or per_channel weight scales; 4 bits: block_N (N weights per scale)"),
    )

    def __init__(self, choices: Sequence[int] = (32, 16, 8, 4), modes: Sequence[str] = ("minmax",),
                 half: Sequence[str] = ("fp16",), attention_modes: Sequence[str] | None = None,
                 granularity: Sequence[str] = ("per_channel",), blocks: Sequence[int] = (32,)) -> None:
        bad = [c for c in choices if c not in SUPPORTED_BITS]
        if bad or not choices:
            raise ConfigError(f"quant_bits: {bad or 'empty'} not allowed; choose from {list(SUPPORTED_BITS)}")
        self.choices = [int(c) for c in choices]
        self.modes = [str(m) for m in _declared("modes", modes, INT8_MODES)]
        self.half = [str(h) for h in _declared("half", half, HALF_FORMATS)]
        attention = _declared("attention_modes", attention_modes or (), INT8_MODES, required=False)
        self.attention_modes = [str(m) for m in attention] or None
        self.granularity = [str(g) for g in _declared("granularity", granularity, INT8_GRANULARITIES)]
        self.blocks = [int(b) for b in _declared("blocks", blocks, INT4_BLOCKS)]

    def narrow(self, targets: Sequence[Target]) -> None:
        for target in targets:
            _check_declared(target)
        names = "+".join(t.name for t in targets)
        runs = [b for b in SUPPORTED_BITS if any(b in precisions_of(t) for t in targets)]
        self.choices = with_baseline(self.name, check_choices(self.name, self.choices, runs, names), 32)
        if 16 in self.choices:
            halves = [h for h in HALF_FORMATS if any(h in half_formats_of(t) for t in targets)]
            self.half = check_choices(f"{self.name} 16-bit format", self.half, halves, names)

    def for_workload(self, workload: Mapping[str, Any]) -> None:
        """A transformer's int8 modes are ``attention_modes`` when declared: dynamic int8 is the usual
        CPU route for MatMul-heavy graphs (and slow on convolutions, so not the CNN default)."""
        if workload.get("transformer") and self.attention_modes:
            self.modes = list(self.attention_modes)

    def refuses(self, values: Mapping[str, Any], target: Target) -> str:
        bits, mode = values.get("quant_bits", 32), values.get("quant_mode")
        if bits not in precisions_of(target):
            return f"target {target.name} does not run {bits}-bit models (it runs {list(precisions_of(target))})"
        if bits == 16 and mode not in half_formats_of(target):
            return f"target {target.name} does not run {mode} (it runs {list(half_formats_of(target))})"
        return ""

    def project(self, params: dict[str, Any], target: Target) -> dict[str, Any]:
        """The nearest precision in bits (the higher on a tie) and the target's first 16-bit format."""
        bits, runs = params.get("quant_bits"), precisions_of(target)
        if bits is not None and bits not in runs:
            params["quant_bits"] = min(runs, key=lambda b: (abs(math.log2(b / bits)), -b))
        if "half_format" in params and params["half_format"] not in half_formats_of(target):
            params["half_format"] = half_formats_of(target)[0]
        return params

    def baseline(self) -> dict[str, Any]:
        return {"quant_bits": 32}

    def cover(self) -> list[dict[str, Any]]:
        """Every precision; 8 bits once per int8 mode and granularity (each pair), 16 bits once per format and
        4 bits once per block size, where they are searched."""
        searched = self.distributions()
        found = []
        for bits in self.choices:
            if bits == 8:
                modes = [{"quant_mode": m} for m in self.modes] if "quant_mode" in searched else [{}]
                scales = ([{"quant_granularity": g} for g in self.granularity] if "quant_granularity" in searched
                          else [{}])
                found += [{"quant_bits": 8, **m, **g} for m in modes for g in scales]
            elif bits == 16 and "half_format" in searched:
                found += [{"quant_bits": 16, "half_format": h} for h in self.half]
            elif bits == 4 and "int4_block" in searched:
                found += [{"quant_bits": 4, "int4_block": b} for b in self.blocks]
            else:
                found.append({"quant_bits": bits})
        return found

    def distributions(self) -> dict[str, BaseDistribution]:
        found: dict[str, BaseDistribution] = {"quant_bits": CategoricalDistribution(self.choices)}
        if len(self.modes) > 1 and 8 in self.choices:
            found["quant_mode"] = CategoricalDistribution(self.modes)
        if len(self.half) > 1 and 16 in self.choices:
            found["half_format"] = CategoricalDistribution(self.half)
        if len(self.granularity) > 1 and 8 in self.choices:
            found["quant_granularity"] = CategoricalDistribution(self.granularity)
        if len(self.blocks) > 1 and 4 in self.choices:
            found["int4_block"] = CategoricalDistribution(self.blocks)
        return found

    def suggest(self, trial: optuna.Trial, chosen: dict[str, Any]) -> dict[str, Any]:
        bits = self.draw(trial, "quant_bits")
        searched = self.distributions()
        mode = self.draw(trial, "quant_mode") if "quant_mode" in searched else self.modes[0]
        half = self.draw(trial, "half_format") if "half_format" in searched else self.half[0]
        scale = self.draw(trial, "quant_granularity") if "quant_granularity" in searched else self.granularity[0]
        block = self.draw(trial, "int4_block") if "int4_block" in searched else self.blocks[0]
        return {"quant_bits": bits, "quant_mode": {8: mode, 16: half}.get(bits),
                "quant_granularity": {8: scale, 4: f"block_{block}"}.get(bits)}

    def build(self, model: bytes, values: Mapping[str, Any], context: BuildContext) -> bytes:
        calibration = context.workload.train.rows(0, CALIBRATION_SAMPLES)  # calibration never sees the test split
        # a candidate stored before the granularity was a field builds as it did then (quantize's None)
        return quantize(model, values.get("quant_bits", 32), calibration, CALIBRATION_BATCH, values.get("quant_mode"),
                        values.get("quant_granularity"))


def _declared(what: str, values: Sequence[Any], allowed: Sequence[Any], required: bool = True) -> Sequence[Any]:
    """``values`` of the knob's ``what`` setting, if each is one of ``allowed`` (and, where required, any is given)."""
    unknown = [v for v in values if v not in allowed]
    if unknown or (required and not values):
        raise ConfigError(f"quant_bits: {what} {unknown or 'empty'} not allowed; choose from {list(allowed)}")
    return values


def _check_declared(target: Target) -> None:
    """A target may only declare precisions and 16-bit formats this knob knows."""
    bad = [b for b in precisions_of(target) if b not in SUPPORTED_BITS]
    if bad:
        raise ConfigError(f"target {target.name}: precisions {bad} unknown; choose from {list(SUPPORTED_BITS)}")
    bad_half = [h for h in half_formats_of(target) if h not in HALF_FORMATS]
    if bad_half:
        raise ConfigError(f"target {target.name}: half_formats {bad_half} unknown; choose from {list(HALF_FORMATS)}")


__all__ = ["QuantBits"]
