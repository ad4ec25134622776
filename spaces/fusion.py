"""Transformer fusion: ONNX Runtime's attention, LayerNorm and GELU fusions on the exported model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution

from search.core.errors import ConfigError, NotApplicable
from search.core.schema import Column, Field
from search.transforms.fusion import fuse_transformer, is_quantized
from search.runtime.target import Target
from spaces._base import BuildContext, Knob, with_baseline

FUSIONS = ("none", "transformer")


class TransformerFusion(Knob):
    """Searches ``fusion``: ``none`` or ``transformer`` (ORT's ``optimize_model`` for BERT-family graphs).

    The fused graph uses ONNX Runtime contrib ops (com.microsoft): it is ORT-only, and measured
    on small encoders on the CPU provider it was slower, not faster, so it is searched, never
    assumed. It runs on the exported model, so list it before ``quant_bits`` in the space config
    (ONNX-stage knobs build in config order); a graph already quantized, a graph with nothing to
    fuse (a CNN) and static int8 after fusion (its calibration fails on the fused ops) are refused
    with the reason. ``fused_ops`` counts the fused operators written.
    """

    name = "fusion"
    stage = "onnx"
    fields = (Field("fusion", kind="str", unset="none", doc="none or transformer (ORT's transformer fusions)"),)
    facts = (Column("fused_ops", kind="int", unit="ops", label="fused operators",
                    doc="fused operators (Attention, SkipLayerNormalization, BiasGelu, ...) in the built graph"),)

    def __init__(self, choices: Sequence[str] = FUSIONS) -> None:
        bad = [c for c in choices if c not in FUSIONS]
        if bad or not choices:
            raise ConfigError(f"fusion: {bad or 'empty'} not allowed; choose from {list(FUSIONS)}")
        self.choices = with_baseline(self.name, [str(c) for c in choices], "none")

    def for_workload(self, workload: Mapping[str, Any]) -> None:
        """A model with no attention (a CNN, an MLP) has nothing to fuse: the knob stays at ``none``
        and draws nothing, so such a run's trials are the same as without it."""
        if not workload.get("transformer"):
            self.choices = ["none"]

    def baseline(self) -> dict[str, Any]:
        return {"fusion": "none"}

    def cover(self) -> list[dict[str, Any]]:
        return [{"fusion": c} for c in self.choices] if len(self.choices) > 1 else []

    def distributions(self) -> dict[str, BaseDistribution]:
        return {"fusion": CategoricalDistribution(self.choices)} if len(self.choices) > 1 else {}

    def suggest(self, trial: optuna.Trial, chosen: dict[str, Any]) -> dict[str, Any]:
        return {"fusion": self.draw(trial, "fusion") if len(self.choices) > 1 else self.choices[0]}

    def refuses(self, values: Mapping[str, Any], target: Target) -> str:
        """Static int8 with fusion is known not to build: refused when drawn, before a trial is spent on it."""
        return _static_int8_fused(values)

    def build(self, model: bytes, values: Mapping[str, Any], context: BuildContext) -> bytes:
        """The fused model; the count of fused operators is a fact (0 when not fused)."""
        if values.get("fusion", "none") == "none":
            context.facts["fused_ops"] = 0
            return model
        if _static_int8_fused(values):  # refuses() keeps such draws from a search; a direct build still says so
            raise NotApplicable(_static_int8_fused(values))
        if is_quantized(model):
            raise NotApplicable("fusion got a quantized graph: list fusion before quant_bits in the space config")
        fused, counts = fuse_transformer(model)
        context.facts["fused_ops"] = sum(counts.values())
        return fused


def _static_int8_fused(values: Mapping[str, Any]) -> str:
    """Why fusion cannot go with these values' precision ("" when it can)."""
    fused = values.get("fusion", "none") != "none"
    if fused and values.get("quant_bits") == 8 and values.get("quant_mode") != "dynamic":  # None: minmax static
        return "static int8 calibration fails on a fused graph; fusion runs with fp32, fp16, dynamic int8 and int4"
    return ""


__all__ = ["TransformerFusion"]
