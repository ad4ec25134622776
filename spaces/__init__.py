"""Search-space knobs: each declares itself in one file and turns an Optuna trial into its part of a candidate."""

from spaces._base import (BuildContext, Knob, baseline_params, compose_runtime, cover_params, declared_fields,
                          projected, refusal, space, suggest_candidate)
from spaces.batch import BatchSize
from spaces.distill import Distillation
from spaces.fusion import TransformerFusion
from spaces.parallelism import Parallelism
from spaces.prune import PruneRate
from spaces.quant import QuantBits
from spaces.target_choice import TargetChoice

__all__ = ["BatchSize", "BuildContext", "Distillation", "Knob", "Parallelism", "PruneRate", "QuantBits",
           "TargetChoice", "TransformerFusion", "baseline_params", "compose_runtime", "cover_params", "declared_fields", "projected",
           "refusal", "space", "suggest_candidate"]
