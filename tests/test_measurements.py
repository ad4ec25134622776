"""Evaluators and meters on real ONNX Runtime sessions; meter arithmetic on recorded counters."""

from __future__ import annotations

import threading
import time

import numpy as np
import onnxruntime as ort
import pytest
import torch

from evaluators import Accuracy, Built, Energy, Latency, Size, objectives
from evaluators.energy import choose_meter
from evaluators.meters import EstimateMeter, RaplMeter, counter_delta, rapl_domains
from evaluators.quiet import building, measuring_alone
from search.candidate import Candidate
from search.errors import ConfigError
from search.target import Target
from search.transforms import export_onnx

CPU = Target(name="cpu")


@pytest.fixture()
def built(tiny_cnn, tiny_workload) -> Built:
    model_bytes = export_onnx(tiny_cnn, torch.from_numpy(tiny_workload.test.x[:8]))
    return Built(model_bytes, Candidate(target="cpu", batch_size=8), CPU, tiny_workload.test)


def test_accuracy_matches_an_independent_session(built):
    session = ort.InferenceSession(built.model_bytes, providers=["CPUExecutionProvider"])
    expected = np.mean(session.run(None, {"input": built.test.x})[0].argmax(1) == built.test.y)
    assert Accuracy().measure(built)["accuracy"] == pytest.approx(expected)


def test_latency_reports_percentiles_spread_and_throughput(built):
    out = Latency(warmup=5, min_repeats=30, max_repeats=200, budget_s=0.1).measure(built)
    assert 0 < out["latency_ms"] <= out["latency_p95_ms"]
    assert 30 <= out["latency_repeats"] <= 200
    assert out["latency_cv"] >= 0
    assert out["throughput_ips"] == pytest.approx(8 / (out["latency_ms"] / 1e3))


def test_latency_uses_the_candidates_threads(tiny_cnn, tiny_workload):
    model_bytes = export_onnx(tiny_cnn, torch.from_numpy(tiny_workload.test.x[:8]))
    two = Built(model_bytes, Candidate(target="cpu", parallelism="intra_op", threads=2), CPU, tiny_workload.test)
    assert two.session.get_session_options().intra_op_num_threads == 2


@pytest.mark.parametrize("kwargs", [{"min_repeats": 0}, {"budget_s": 0}, {"min_repeats": 10, "max_repeats": 5}])
def test_latency_refuses_bad_settings(kwargs):
    with pytest.raises(ConfigError):
        Latency(**kwargs)


def test_size_is_the_model_bytes(built):
    assert Size().measure(built) == {"size_bytes": len(built.model_bytes)}


def test_energy_is_positive_and_says_its_source(built):
    out = Energy(window_s=0.1).measure(built)
    assert out["energy_mj"] > 0
    expected = "rapl" if rapl_domains() else "estimate"
    assert out["energy_source"] == expected


def test_counter_delta_handles_wrap_around():
    assert counter_delta(100, 250, wrap=1000) == 150
    assert counter_delta(990, 40, wrap=1000) == 50


def test_rapl_meter_reads_package_counters_across_a_wrap(tmp_path):
    for index, (start, wrap) in enumerate([(999_000_000, 1_000_000_000), (5_000, 2_000_000)]):
        zone = tmp_path / f"intel-rapl:{index}"
        zone.mkdir()
        (zone / "energy_uj").write_text(str(start))
        (zone / "max_energy_range_uj").write_text(str(wrap))
    (tmp_path / "intel-rapl:0:0").mkdir()  # a subzone (core), already inside its package: not summed
    meter = RaplMeter(rapl_domains(tmp_path))
    assert len(meter.domains) == 2
    meter.start()
    (tmp_path / "intel-rapl:0" / "energy_uj").write_text("500000")   # wrapped: 1_000_000 + 500_000 uJ
    (tmp_path / "intel-rapl:1" / "energy_uj").write_text("1005000")  # 1_000_000 uJ
    assert meter.stop() == pytest.approx(2.5)


def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_estimate_is_cpu_seconds_times_watts():
    meter = EstimateMeter(watts_per_core=10.0)
    cpu = time.process_time()
    meter.start()
    _burn(0.2)
    joules = meter.stop()
    assert joules == pytest.approx((time.process_time() - cpu) * 10.0, rel=0.2)


def test_estimate_scales_with_watts_per_core_and_counts_idle_time():
    low, high = EstimateMeter(5.0), EstimateMeter(10.0)
    low.start(), high.start()
    _burn(0.1)
    assert high.stop() == pytest.approx(2 * low.stop(), rel=0.05)
    idle = EstimateMeter(watts_per_core=0.0, idle_watts=100.0)
    idle.start()
    time.sleep(0.05)
    assert idle.stop() == pytest.approx(5.0, rel=0.5)


def test_meter_choice_follows_the_target():
    assert choose_meter(Target(name="cpu", energy_meter="estimate")).source == "estimate"
    if not rapl_domains():
        with pytest.raises(ConfigError, match="powercap"):
            choose_meter(Target(name="cpu", energy_meter="rapl"))
        assert choose_meter(Target(name="cpu", energy_meter="auto")).source == "estimate"


def test_objectives_follow_config_order_and_skip_recorded_only():
    evals = [Accuracy(), Latency(), Energy(objective=False), Size()]
    assert objectives(evals) == [("accuracy", "maximize"), ("latency_ms", "minimize"), ("size_bytes", "minimize")]
    with pytest.raises(ConfigError, match="objective"):
        objectives([Size(objective=False)])


def test_builds_share_the_node_but_measuring_waits_for_them(tmp_path):
    lock = tmp_path / "node.lock"
    release, measured = threading.Event(), threading.Event()

    def build() -> None:
        with building(lock):
            release.wait(5)

    def measure() -> None:
        with measuring_alone(lock):
            measured.set()

    builders = [threading.Thread(target=build) for _ in range(2)]
    for thread in builders:
        thread.start()
    time.sleep(0.1)
    with building(lock):  # a third build gets in beside the two
        pass
    meter = threading.Thread(target=measure)
    meter.start()
    assert not measured.wait(0.3), "measurement started while builds held the node"
    release.set()
    assert measured.wait(5), "measurement never got the node after the builds ended"
    for thread in [*builders, meter]:
        thread.join(5)
