"""Building a candidate: the knobs' build steps in config order, torch steps then export then ONNX steps.

Two artifacts go through the run's store (search/run/store.py): the student (after the torch
steps: prune, recover; it does not depend on bits, runtime or batch size) and the finished model
(after the ONNX steps). Each is addressed by the build fields that made it, so two trials that
differ only in how the model runs (parallelism, degree, batch size)
build it once, and a trial that shares the student with an earlier one only quantizes. Each step's
time goes to the trial's ``stage_s``, what a step learned (the share really pruned) to its facts.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from typing import Any

from search.core.candidate import Candidate
from search.core.errors import NotApplicable
from search.trial.store_client import Artifact, StageStore, stage_key
from search.runtime.target import Target
from search.transforms import check_onnx, export_onnx
from search.workloads.calling import to_tensors
from search.workloads import Workload
from spaces import Knob
from spaces import BuildContext


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


def _student(workload: Workload, cand: Candidate, knobs: Sequence[Knob],
             context: BuildContext) -> tuple[str, Callable[[], Artifact]]:
    """The student's store key and how to make it: fp32 ONNX after the torch-stage knobs. The key
    names the device that trains, not the target: two targets on one device share students."""
    steps = [k for k in knobs if k.stage == "torch"]
    if workload.is_onnx:  # nothing torch-side applies: the model is the user's ONNX as it came
        if any(cand.get(f.name, f.unset) != f.unset for k in steps for f in k.fields if f.applies_to == "build"):
            raise NotApplicable("pruning and distillation need a torch module; this workload is a bare ONNX model")
        key = stage_key("student", {}, workload.key, context.target.torch_device)
        return key, lambda: Artifact(workload.onnx_model)
    config = {**_build_values(steps, cand), "seed": context.seed, "epochs": workload.distill_epochs}

    def build() -> Artifact:
        started, facts_before = time.perf_counter(), dict(context.facts)
        model = copy.deepcopy(workload.model).cpu().eval()  # a step may train in place: never the teacher
        for knob in steps:
            model = _timed(context, knob.name, lambda k=knob, m=model: k.build(m, cand.values, context))
        return Artifact(_exported(workload, cand, model), _learned(facts_before, context.facts),
                        time.perf_counter() - started)

    return stage_key("student", config, workload.key, context.target.torch_device), build


def quick_model(workload: Workload, cand: Candidate, knobs: Sequence[Knob], target: Target, seed: int,
                model: Any) -> bytes:
    """The candidate as it would be built from the torch ``model`` as it stands (a student in the middle of
    its recovery): exported and put through the ONNX steps, for figures that depend on the architecture only."""
    context = BuildContext(workload, target, seed, cand.batch_size)  # its facts and timings are not the trial's
    return _onnx_steps(knobs, cand, context, _exported(workload, cand, copy.deepcopy(model).cpu().eval()))


def _exported(workload: Workload, cand: Candidate, model: Any) -> bytes:
    example = to_tensors(workload.train.rows(0, cand.batch_size))  # building never reads the test split
    return export_onnx(model, example, workload.output_names, workload.axes)


def _onnx_steps(knobs: Sequence[Knob], cand: Candidate, context: BuildContext, model_bytes: bytes) -> bytes:
    """The ONNX-stage knobs' build steps in config order, each timed into the context."""
    for knob in (k for k in knobs if k.stage == "onnx"):
        model_bytes = _timed(context, knob.name, lambda k=knob, m=model_bytes: k.build(m, cand.values, context))
    return model_bytes


def _learned(before: dict[str, Any], facts: dict[str, Any]) -> dict[str, Any]:
    """The facts a build step added or changed since ``before``."""
    return {k: v for k, v in facts.items() if before.get(k) != v}


def build_candidate(workload: Workload, cand: Candidate, target: Target, seed: int, timings: dict[str, float],
                    facts: dict[str, Any] | None = None, knobs: Sequence[Knob] | None = None,
                    store: StageStore | None = None,
                    after_epoch: Callable[[Any, int, int, float], None] | None = None) -> bytes:
    """The candidate's final ONNX model, built by ``knobs`` (the shipped build knobs when None), its
    student and itself taken from ``store`` when an earlier trial built them (``store.reuse`` says so).
    ``after_epoch`` is called by a knob that trains, after each epoch (search/run/rungs.py)."""
    knobs = default_build_knobs() if knobs is None else knobs
    store = StageStore() if store is None else store
    context = BuildContext(workload, target, seed, cand.batch_size, facts if facts is not None else {}, timings,
                           after_epoch)
    student_key, make_student = _student(workload, cand, knobs, context)

    def build() -> Artifact:
        student = store.get_or_build(student_key, make_student)
        context.facts.update(student.facts)
        started, facts_before = time.perf_counter(), dict(context.facts)
        model_bytes = _onnx_steps(knobs, cand, context, student.data)
        # what building it from nothing takes: the student's own build, even when this one reused it
        return Artifact(model_bytes, {**student.facts, **_learned(facts_before, context.facts)},
                        student.build_s + time.perf_counter() - started)

    steps = [k for k in knobs if k.stage == "onnx"]
    model_key = stage_key("model", _build_values(steps, cand), student_key, cand.target)
    made = store.get_or_build(model_key, build)
    context.facts.update(made.facts)
    _timed(context, "check", lambda: check_onnx(made.data, workload.train.rows(0, cand.batch_size)))
    return made.data
