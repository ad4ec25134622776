"""Search-space knobs: each turns an Optuna trial (and the target) into its part of a candidate."""

from spaces._base import Knob, space, suggest_candidate
from spaces.distill import Distillation
from spaces.parallelism import Parallelism
from spaces.prune import PruneRate
from spaces.quant import QuantBits

__all__ = ["Distillation", "Knob", "Parallelism", "PruneRate", "QuantBits", "space", "suggest_candidate"]
