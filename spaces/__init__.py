"""Search-space knobs: each turns an Optuna trial (and the target) into its part of a candidate."""

from spaces._base import Knob, baseline_params, cover_params, space, suggest_candidate
from spaces.batch import BatchSize
from spaces.distill import Distillation
from spaces.parallelism import Parallelism
from spaces.prune import PruneRate
from spaces.quant import QuantBits
from spaces.target_choice import TargetChoice

__all__ = ["BatchSize", "Distillation", "Knob", "Parallelism", "PruneRate", "QuantBits", "TargetChoice",
           "baseline_params", "cover_params", "space", "suggest_candidate"]
