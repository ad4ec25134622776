"""A worker process deserializes the run's workload once, and fetches it again if a trial changed its model."""

from __future__ import annotations

import os

import pytest
import ray
import torch

from search.trial.shared_workload import WorkloadRef, fetching_workload


def identity(workload, change: str) -> dict:
    """A task body: where it ran, which copy of the workload it got, what its first weight was; then ``change``."""
    weight = next(workload.model.parameters())
    seen = {"pid": os.getpid(), "copy": id(workload), "first": weight.flatten()[0].item()}
    if change == "weights":
        with torch.no_grad():
            weight.add_(1.0)  # in place, as a careless plugin might
    elif change == "mode":
        workload.model.train()
    elif change == "swap":
        weight.data = weight.data.clone() + 1.0
    return seen


@pytest.fixture(scope="module")
def one_worker():
    ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level="ERROR")
    yield ray.remote(fetching_workload(identity)).options(num_cpus=1)
    ray.shutdown()


def test_a_worker_process_keeps_the_workload_between_trials(one_worker, tiny_workload):
    box = WorkloadRef(ray.put(tiny_workload))
    first, second = (ray.get(one_worker.remote(box, "")) for _ in range(2))
    assert first["pid"] == second["pid"]
    assert first["copy"] == second["copy"]


@pytest.mark.parametrize("change", ["weights", "mode", "swap"])
def test_a_model_a_trial_changed_is_fetched_afresh(one_worker, tiny_workload, change):
    box = WorkloadRef(ray.put(tiny_workload))
    original = next(tiny_workload.model.parameters()).flatten()[0].item()
    changed = ray.get(one_worker.remote(box, change))
    after = ray.get(one_worker.remote(box, ""))
    assert after["pid"] == changed["pid"]
    assert after["copy"] != changed["copy"]
    assert after["first"] == changed["first"] == original


def test_another_runs_workload_replaces_the_kept_one(one_worker, tiny_workload):
    first = ray.get(one_worker.remote(WorkloadRef(ray.put(tiny_workload)), ""))
    other = ray.get(one_worker.remote(WorkloadRef(ray.put(tiny_workload)), ""))
    assert other["copy"] != first["copy"]
