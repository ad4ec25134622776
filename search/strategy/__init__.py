"""The search strategy: the Optuna study in the run folder (study, mirrored_storage) and the samplers that
draw candidates (samplers, refine). Imports search/core only: it knows trials, not models or Ray."""

from search.strategy.refine import RuntimeRefiningSampler
from search.strategy.samplers import IncrementalNSGAIISampler, WindowedSampler

__all__ = ["IncrementalNSGAIISampler", "RuntimeRefiningSampler", "WindowedSampler"]
