"""Search-space knobs: each declares itself in one file and turns an Optuna trial into its part of a candidate.

The knob interface and the helpers the driver and the worker use live in spaces/_base.py; import them
from here (``from spaces import Knob, BuildContext``).
"""

from spaces._base import (STAGES, BuildContext, Knob, baseline_params, check_choices, compose_runtime, cover_params,
                          declared_fields, projected, refusal, runtime_knobs, space, suggest_candidate, with_baseline)
from spaces.batch import BatchSize
from spaces.distill import Distillation
from spaces.fusion import TransformerFusion
from spaces.parallelism import Parallelism
from spaces.prune import PruneRate
from spaces.quant import QuantBits
from spaces.target_choice import TargetChoice

__all__ = ["STAGES", "BatchSize", "BuildContext", "Distillation", "Knob", "Parallelism", "PruneRate", "QuantBits",
           "TargetChoice", "TransformerFusion", "baseline_params", "check_choices", "compose_runtime", "cover_params",
           "declared_fields", "projected", "refusal", "runtime_knobs", "space", "suggest_candidate", "with_baseline"]
