"""Distillation temperature and weight, searched only where pruning changed the model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution

from search.core.errors import ConfigError
from search.core.schema import Field
from search.transforms.distill import distill
from spaces._base import BuildContext, Knob


class Distillation(Knob):
    """Searches ``distill_temperature`` (0 = plain fine-tuning) and ``distill_alpha``.

    Both are suggested on every trial, so that samplers which work on the intersection of
    all trials' params (NSGA-II's crossover) keep them; but an unpruned model is the teacher
    itself, nothing is trained, and the candidate's fields stay None so no row claims a
    distillation that did not happen.

    The loss is the workload's metric's (search/transforms/training.py). On class logits T is
    Hinton's temperature. On values (MSE) T > 0 only turns the teacher term on (MSE to the
    teacher's outputs, weighted by alpha). A task without labels (cosine fidelity) always
    learns from the teacher's outputs, whatever T and alpha.
    """

    name = "distillation"
    stage = "torch"
    needs_torch = True
    fields = (
        Field("distill_temperature", label="distillation temperature",
              doc="0 is plain fine-tuning on labels; empty when nothing was pruned, so nothing was trained"),
        Field("distill_alpha", label="distillation weight", doc="weight of the teacher's soft targets in the loss"),
    )

    def __init__(self, temperatures: Sequence[float] = (0, 2, 4, 8), alphas: Sequence[float] = (0.5, 0.9)) -> None:
        if not temperatures or any(t < 0 for t in temperatures):
            raise ConfigError(f"distillation: temperatures must be >= 0 and non-empty, got {list(temperatures)}")
        if not alphas or any(not 0 <= a <= 1 for a in alphas):
            raise ConfigError(f"distillation: alphas must lie in [0, 1] and be non-empty, got {list(alphas)}")
        self.temperatures = [float(t) for t in temperatures]
        self.alphas = [float(a) for a in alphas]

    def distributions(self) -> dict[str, BaseDistribution]:
        return {"distill_temperature": CategoricalDistribution(self.temperatures),
                "distill_alpha": CategoricalDistribution(self.alphas)}

    def suggest(self, trial: optuna.Trial, chosen: dict[str, Any]) -> dict[str, Any]:
        temperature, alpha = self.draw(trial, "distill_temperature"), self.draw(trial, "distill_alpha")
        if not chosen.get("prune_rate"):
            return {"distill_temperature": None, "distill_alpha": None}
        return {"distill_temperature": temperature, "distill_alpha": alpha if temperature > 0 else 0.0}

    def build(self, model: Any, values: Mapping[str, Any], context: BuildContext) -> Any:
        """Recover the pruned student by distillation from the workload's model (in place)."""
        temperature = values.get("distill_temperature")
        if temperature is None:  # nothing was pruned: the model is the teacher, nothing to recover
            return model
        distill(model, context.workload, temperature, values.get("distill_alpha") or 0.0, context.seed,
                context.target.torch_device, context.after_epoch)
        return model
