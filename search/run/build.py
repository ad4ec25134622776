"""Building a candidate: the knobs' build steps in config order, torch steps then export then ONNX steps.

The torch part (prune, recover) is the costly one and does not depend on bits, runtime or batch
size: its output is cached by the build fields of the torch-stage knobs, so trials sharing them
reuse it. Each step's time goes to the trial's ``stage_s``, and what a step learned (the share
really pruned) to its facts.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from typing import Any

from search.candidate import Candidate
from search.errors import NotApplicable
from search.run.cache import STAGES, stage_key
from search.runtime.target import Target
from search.transforms import check_onnx, export_onnx
from search.workloads.calling import to_tensors
from search.workloads._base import Workload
from spaces import Knob
from spaces._base import BuildContext


def default_build_knobs() -> list[Knob]:
    """The shipped build knobs with their defaults: for candidates made by hand (benches, rebuilds of old runs)."""
    from spaces import Distillation, PruneRate, QuantBits

    return [PruneRate(), Distillation(), QuantBits()]


def _timed(context: BuildContext, name: str, step: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    try:
        return step()
    finally:
        context.timings[name] = context.timings.get(name, 0.0) + time.perf_counter() - start


def _build_values(knobs: Sequence[Knob], cand: Candidate) -> dict[str, Any]:
    return {f.name: cand.get(f.name) for k in knobs for f in k.fields if f.applies_to == "build"}


def _student(workload: Workload, cand: Candidate, knobs: Sequence[Knob], context: BuildContext) -> bytes:
    """fp32 ONNX after the torch-stage knobs (cached: bits, runtime and batch size do not change it)."""
    steps = [k for k in knobs if k.stage == "torch"]
    if workload.is_onnx:  # nothing torch-side applies: the model is the user's ONNX as it came
        if any(cand.get(f.name, f.unset) != f.unset for k in steps for f in k.fields if f.applies_to == "build"):
            raise NotApplicable("pruning and distillation need a torch module; this workload is a bare ONNX model")
        return workload.onnx_model
    config = {**_build_values(steps, cand), "seed": context.seed, "epochs": workload.distill_epochs}

    def build() -> tuple[bytes, dict[str, Any]]:
        model = copy.deepcopy(workload.model).cpu().eval()  # a step may train in place: never the teacher
        for knob in steps:
            model = _timed(context, knob.name, lambda k=knob, m=model: k.build(m, cand.values, context))
        example = to_tensors(workload.train.rows(0, cand.batch_size))  # building never reads the test split
        return export_onnx(model, example, workload.output_names, workload.axes), dict(context.facts)

    model_bytes, facts = STAGES.get_or_build(stage_key("student", config, workload.key, cand.target), build)
    context.facts.update(facts)
    return model_bytes


def build_candidate(workload: Workload, cand: Candidate, target: Target, seed: int, timings: dict[str, float],
                    facts: dict[str, Any] | None = None, knobs: Sequence[Knob] | None = None) -> bytes:
    """The candidate's final ONNX model, built by ``knobs`` (the shipped build knobs when None)."""
    knobs = default_build_knobs() if knobs is None else knobs
    context = BuildContext(workload, target, seed, cand.batch_size, facts if facts is not None else {}, timings)
    model_bytes = _student(workload, cand, knobs, context)
    for knob in (k for k in knobs if k.stage == "onnx"):
        model_bytes = _timed(context, knob.name, lambda k=knob, m=model_bytes: k.build(m, cand.values, context))
    _timed(context, "check", lambda: check_onnx(model_bytes, workload.train.rows(0, cand.batch_size)))
    return model_bytes
