"""The run's workload, deserialized once per worker process instead of once per trial.

A task given an object reference gets the object deserialized again on every call: for the digits
workload 5 ms of each trial's latency (bench/overhead.py), for a transformer whole seconds. The
dispatcher hands the reference over boxed (``WorkloadRef``), so Ray leaves it alone, and each worker
process keeps the last workload it fetched.

Trials must not change the workload they are given (the build deep-copies the model before any knob
touches it, and the arrays come read-only from the object store). Should one change the model anyway
(weights written in place or swapped, moved to another device, switched to training mode), the next
trial in that process sees it and fetches a fresh copy: no trial is built from a changed teacher.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from search.workloads import Workload


@dataclass(frozen=True)
class WorkloadRef:
    """The object-store reference to the run's workload; inside a dataclass Ray passes it unresolved."""

    ref: Any  # ray.ObjectRef


_kept: tuple[str, Workload, tuple] | None = None  # (reference, workload, its model's fingerprint) in this process


def model_fingerprint(workload: Workload) -> tuple:
    """What changes when a model is changed: each tensor's version counter (bumped by every in-place write)
    and storage, and each module's mode. Reads no weights, so it costs microseconds per tensor."""
    model = workload.model
    if model is None:
        return ()
    tensors = [*model.parameters(), *model.buffers()]
    return (tuple((t._version, t.data_ptr(), str(t.device)) for t in tensors),  # noqa: SLF001 - torch's own counter
            tuple(m.training for m in model.modules()))


def fetch(box: WorkloadRef) -> Workload:
    """The run's workload: the copy this process kept, unless it is another run's or was changed."""
    import ray

    global _kept
    key = box.ref.hex()
    if _kept is not None and _kept[0] == key and model_fingerprint(_kept[1]) == _kept[2]:
        return _kept[1]
    _kept = None  # the old copy goes before the new one arrives: two large models need not fit at once
    workload = ray.get(box.ref)
    _kept = (key, workload, model_fingerprint(workload))
    return workload


def fetching_workload(task: Callable[..., dict]) -> Callable[..., dict]:
    """``task`` (its first argument a Workload) as a Ray task body that takes a ``WorkloadRef`` instead."""
    @functools.wraps(task)
    def body(box: WorkloadRef, *args: Any) -> dict:
        return task(fetch(box), *args)
    return body
