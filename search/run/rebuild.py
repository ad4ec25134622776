"""Rebuild a finished trial's model from its stored parameters: for a model that was not kept.

Only models on the front are kept in models/. Any other completed trial can be rebuilt:
the run's config names the workload and target, study.db holds the trial's candidate, and
the run's seed makes distillation repeat itself. The rebuilt model's task metric is measured
again, so a caller can see whether it is the same model (a teacher retrained on another
machine can differ).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from evaluators import Built, TaskMetric
from search.core import attributes
from search.core.candidate import Candidate
from search.config import plugins_from_config
from search.trial.build import build_candidate
from search.runtime.target import Target
from search.strategy.study import load_run_study
from search.workloads import check_workload
from spaces import declared_fields


@dataclass
class Rebuilt:
    model_bytes: bytes
    metric: str  # the workload's metric (its column)
    value: float


def rebuild(run_dir: Path, trial_number: int) -> Rebuilt:
    config = OmegaConf.load(run_dir / "config.yaml")
    configs = OmegaConf.to_container(config, resolve=True)
    knobs = plugins_from_config(configs).knobs
    stored = attributes.candidate_of(load_run_study(run_dir).trials[trial_number])
    cand = Candidate.from_dict(stored, declared_fields(knobs))
    workload = check_workload(instantiate(config.workload), str(config.workload.get("_target_", "?")))
    target = Target.from_config((configs.get("target_configs") or {}).get(cand.target, configs["target"]))
    torch.set_num_threads(1)  # as in the workers: the same threads give the same float sums
    model_bytes = build_candidate(workload, cand, target, int(config.seed), timings={}, knobs=knobs)
    scorer = TaskMetric()
    scorer.for_workload({"metric": workload.metric.describe()})
    built = Built(model_bytes, cand, target, workload.test, workload.metric, workload.reference, workload.output_names)
    try:
        value = scorer.measure(built)[scorer.metric]
    finally:
        built.close()
    return Rebuilt(model_bytes, scorer.metric, value)
