"""The run's artifact store: files that survive the driver, claims so one model is built once, reuse counted."""

from __future__ import annotations

import os
from collections import OrderedDict

import pytest

from search.core.candidate import Candidate
from search.trial.build import build_candidate
from search.run.store import ArtifactFolder, StoreService, start_service
from search.trial.store_client import Artifact, StageStore
from search.runtime.target import Target
from search.transforms.prune import prune, weights_digest
from search.workloads.calling import to_tensors
from spaces import PruneRate


def test_folder_keeps_artifacts_and_drops_a_damaged_one(tmp_path):
    folder = ArtifactFolder(tmp_path)
    folder.put("k", Artifact(b"onnx-bytes", {"prune_removed": 0.5}, build_s=3.0))
    found = ArtifactFolder(tmp_path).get("k")  # another process, after a resume: the files are the store
    assert (found.data, found.facts, found.build_s) == (b"onnx-bytes", {"prune_removed": 0.5}, 3.0)
    (tmp_path / "k.onnx").write_bytes(b"onnx-byteZ")  # a disk error: built again, never served
    assert folder.get("k") is None and folder.get("absent") is None
    assert folder.usage() == (1, len(b"onnx-byteZ"))


def test_service_lets_one_trial_build_and_the_others_wait(tmp_path):
    service = StoreService(str(tmp_path))
    assert service.lookup("k", "task-a") == ("build", None)
    assert service.lookup("k", "task-b") == ("wait", None)
    assert service.lookup("k", "task-a") == ("build", None), "a retried task takes its own claim again"
    service.release("task-a")  # task-a died without a model
    assert service.lookup("k", "task-b") == ("build", None)


def test_service_serves_what_was_put(tmp_path):
    service = StoreService(str(tmp_path))
    assert service.lookup("k", "a")[0] == "build"
    service.put("k", Artifact(b"m", build_s=2.0), "a")
    verdict, found = service.lookup("k", "b")
    assert verdict == "hit" and found.data == b"m" and not service.claims


def test_stage_store_counts_the_build_time_each_reuse_saves():
    recent: OrderedDict = OrderedDict()
    first, second = StageStore(recent=recent), StageStore(recent=recent)
    assert first.get_or_build("k", lambda: Artifact(b"m", build_s=4.0)).data == b"m"
    assert second.get_or_build("k", lambda: pytest.fail("built twice")).data == b"m"
    assert (first.reuse.hits, second.reuse.hits, second.reuse.saved_s) == (0, 1, 4.0)

    def broken() -> Artifact:
        raise RuntimeError("build failed")

    with pytest.raises(RuntimeError):
        first.get_or_build("other", broken)
    assert first.get_or_build("other", lambda: Artifact(b"ok")).data == b"ok"


def test_a_worker_keeps_only_its_most_recent_artifacts_in_memory():
    recent: OrderedDict = OrderedDict()
    for key in "abc":
        StageStore(recent=recent, max_entries=2).get_or_build(key, lambda k=key: Artifact(k.encode()))
    StageStore(recent=recent, max_entries=2).get_or_build("b", lambda: pytest.fail("b was evicted"))  # b is newest
    StageStore(recent=recent, max_entries=2).get_or_build("d", lambda: Artifact(b"d"))  # evicts c, not b
    assert list(recent) == ["b", "d"]


def test_runtime_settings_and_batch_size_reuse_the_built_model(digits_workload):
    """A model differs from another by what builds it, not by how it runs: the second is not built."""
    target, recent = Target.from_config({"name": "cpu"}), OrderedDict()
    built = []
    for values in ({"parallelism": "sequential", "batch_size": 32}, {"parallelism": "pipeline", "degree": 2,
                                                                      "batch_size": 8}):
        store = StageStore(recent=recent)
        cand = Candidate(target="cpu", quant_bits=8, quant_mode="minmax", prune_rate=0.0, **values)
        built.append((build_candidate(digits_workload, cand, target, 0, {}, {}, store=store), store.reuse))
    (first, first_reuse), (second, second_reuse) = built
    assert first == second and first_reuse.hits == 0
    assert second_reuse.hits == 1 and second_reuse.saved_s > 0


def test_prune_draws_that_build_one_model_are_named_by_the_nearest(digits_workload):
    knob = PruneRate(high=0.8, step=0.1, round_to=(8, 16))
    knob.for_model(digits_workload)
    example = to_tensors(digits_workload.train.rows(0, 1))

    def model(rate, multiple):
        return weights_digest(prune(digits_workload.model, rate, example, None, multiple))

    assert knob.same_as, "on the digits CNN several (rate, round_to) draws remove the same channels"
    for (rate, multiple), (name_rate, name_multiple, share) in knob.same_as.items():
        assert model(rate, multiple) == model(name_rate, name_multiple)
        assert (name_rate, name_multiple) not in knob.same_as
        assert abs(name_rate - share) <= abs(rate - share)
        values = {"prune_rate": rate, "prune_round_to": multiple}
        assert "removes the very channels" in knob.refuses(values, None)
        assert knob.project(values, None) == {"prune_rate": name_rate, "prune_round_to": name_multiple or multiple}
    assert knob.refuses({"prune_rate": 0.0, "prune_round_to": None}, None) == ""


def claim_and_die(service) -> None:
    import ray

    verdict, _ = ray.get(service.lookup.remote("k", ray.get_runtime_context().get_task_id()))
    assert verdict == "build"
    os._exit(1)  # the worker dies holding the claim


def test_driver_releases_the_claim_of_a_worker_that_died(tmp_path):
    ray = pytest.importorskip("ray")
    # a private Ray, as the driver starts one: a cluster file another Ray left in /tmp/ray is not joined
    ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level="ERROR")
    try:
        service, _ = start_service(tmp_path)
        ref = ray.remote(claim_and_die).options(max_retries=0).remote(service)
        with pytest.raises(ray.exceptions.RayError):
            ray.get(ref)
        assert ray.get(service.lookup.remote("k", "other"))[0] == "wait"
        service.release.remote(ref.task_id().hex())  # what the dispatcher does for every task that ends
        assert ray.get(service.lookup.remote("k", "other"))[0] == "build"
    finally:
        ray.shutdown()


def test_a_build_waiting_on_anothers_build_does_not_keep_the_node_from_a_measurement(tmp_path):
    """The builder a waiting trial waits for may time a recovery rung (the node to itself): the waiter's shared
    hold is set aside while it waits (node_lock.not_building), or the two would wait on each other for ever."""
    import threading

    from search.runtime.node_lock import building, measuring_alone, not_building

    lock = tmp_path / "node.lock"
    waiting, measured, done = threading.Event(), threading.Event(), threading.Event()

    def waiter() -> None:
        with building(lock), not_building(lock):  # as StageStore waits out another's claim
            waiting.set()
            done.wait(10)

    def rung_preview() -> None:
        waiting.wait(10)
        with building(lock), measuring_alone(lock):
            measured.set()

    threads = [threading.Thread(target=waiter), threading.Thread(target=rung_preview)]
    for thread in threads:
        thread.start()
    try:
        assert measured.wait(10), "the measurement waited on a build that was only waiting"
    finally:
        done.set()
        for thread in threads:
            thread.join(10)
