"""Evaluators on real ONNX Runtime sessions, energy meters on real and fake counters, the quiet-node lock."""

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
WAIT_S = 5.0  # upper bound for anything that should happen promptly; never slept through


@pytest.fixture()
def model_bytes(tiny_cnn, tiny_workload) -> bytes:
    return export_onnx(tiny_cnn, torch.from_numpy(tiny_workload.test.x[:8]))


@pytest.fixture()
def built(model_bytes, tiny_workload) -> Built:
    return Built(model_bytes, Candidate(target="cpu", batch_size=8), CPU, tiny_workload.test)


def reference_predictions(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0].argmax(1)


# --- Accuracy, Latency, Size, Energy -----------------------------------------------------------

def test_accuracy_equals_an_independent_onnxruntime_computation(built):
    expected = np.mean(reference_predictions(built.model_bytes, built.test.x) == built.test.y)
    assert Accuracy().measure(built) == {"accuracy": pytest.approx(expected)}


def test_accuracy_covers_the_whole_split_when_batch_size_does_not_divide_it(model_bytes, tiny_workload):
    odd = Built(model_bytes, Candidate(target="cpu", batch_size=24), CPU, tiny_workload.test)  # 64 = 24 + 24 + 16
    expected = np.mean(reference_predictions(model_bytes, odd.test.x) == odd.test.y)
    assert Accuracy().measure(odd)["accuracy"] == pytest.approx(expected)


def test_batch_repeats_test_inputs_when_the_split_is_smaller_than_the_batch(model_bytes, tiny_workload):
    big = Built(model_bytes, Candidate(target="cpu", batch_size=100), CPU, tiny_workload.test)
    batch = big.batch()
    assert batch.shape == (100, 1, 8, 8) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch[64:], tiny_workload.test.x[:36])


def test_latency_reports_p50_p95_repeats_and_throughput(built):
    out = Latency(warmup=2, min_repeats=20, max_repeats=200, budget_s=0.05).measure(built)
    assert out["latency_ms"] > 0
    assert out["latency_p95_ms"] >= out["latency_ms"]
    assert 20 <= out["latency_repeats"] <= 200
    assert out["latency_cv"] >= 0
    assert out["throughput_ips"] == pytest.approx(8 / (out["latency_ms"] / 1000))


def test_latency_stops_at_max_repeats_even_with_budget_left(built):
    out = Latency(warmup=0, min_repeats=5, max_repeats=10, budget_s=60).measure(built)
    assert out["latency_repeats"] == 10


@pytest.mark.parametrize("kwargs", [
    {"warmup": -1}, {"min_repeats": 0}, {"min_repeats": 10, "max_repeats": 5}, {"budget_s": 0}, {"budget_s": -1.0},
])
def test_latency_with_bad_settings_is_a_config_error(kwargs):
    with pytest.raises(ConfigError, match="latency"):
        Latency(**kwargs)


def test_size_is_the_length_of_the_model_bytes(built):
    assert Size().measure(built) == {"size_bytes": len(built.model_bytes)}


def test_energy_is_positive_and_labelled_estimate_without_rapl(built):
    out = Energy(window_s=0.05).measure(built)
    assert out["energy_mj"] > 0
    if not rapl_domains():
        assert out["energy_source"] == "estimate"


def test_energy_with_a_non_positive_window_is_a_config_error():
    with pytest.raises(ConfigError, match="window_s"):
        Energy(window_s=0)


# --- meters ------------------------------------------------------------------------------------

def test_counter_delta_without_wrap_is_the_difference():
    assert counter_delta(100, 250, wrap=1000) == 150
    assert counter_delta(7, 7, wrap=1000) == 0


def test_counter_delta_handles_wrap_around():
    assert counter_delta(990, 40, wrap=1000) == 50
    top = 262_143_328_850  # a real package's max_energy_range_uj
    assert counter_delta(top - 1_000, 500, wrap=top) == 1_500


def fake_zone(root, name: str, energy_uj: int, max_uj: int):
    zone = root / name
    zone.mkdir()
    (zone / "energy_uj").write_text(f"{energy_uj}\n")
    (zone / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return zone


def test_rapl_domains_lists_packages_not_subzones_or_unreadable(tmp_path):
    fake_zone(tmp_path, "intel-rapl:0", 1, 10)
    fake_zone(tmp_path, "intel-rapl:0:0", 1, 10)  # core subzone, already inside package 0
    (tmp_path / "intel-rapl:1").mkdir()  # no counter to read
    assert rapl_domains(tmp_path) == [tmp_path / "intel-rapl:0"]


def test_rapl_meter_counts_joules_across_a_counter_wrap(tmp_path):
    max_uj = 262_143_328_850
    zone = fake_zone(tmp_path, "intel-rapl:0", max_uj - 1_000_000, max_uj)
    meter = RaplMeter(rapl_domains(tmp_path))
    assert meter.source == "rapl"
    meter.start()
    (zone / "energy_uj").write_text("2000000\n")  # wrapped: 1_000_000 uJ to the top, 2_000_000 after
    assert meter.stop() == pytest.approx(3.0)


def test_rapl_meter_sums_packages(tmp_path):
    zero = fake_zone(tmp_path, "intel-rapl:0", 1_000, 10**9)
    one = fake_zone(tmp_path, "intel-rapl:1", 5_000, 10**9)
    meter = RaplMeter(rapl_domains(tmp_path))
    meter.start()
    zero.joinpath("energy_uj").write_text("501000")
    one.joinpath("energy_uj").write_text("255000")
    assert meter.stop() == pytest.approx(0.75)


def burn_cpu(seconds: float) -> None:
    end = time.process_time() + seconds
    x = 0
    while time.process_time() < end:
        x += 1


def test_estimate_is_cpu_seconds_times_watts_per_core():
    meter = EstimateMeter(watts_per_core=10.0)
    cpu_before = time.process_time()
    meter.start()
    burn_cpu(0.2)
    joules = meter.stop()
    cpu_s = time.process_time() - cpu_before
    assert joules == pytest.approx(cpu_s * 10.0, rel=0.2)


def test_estimate_doubles_when_watts_per_core_doubles():
    single, double = EstimateMeter(watts_per_core=5.0), EstimateMeter(watts_per_core=10.0)
    single.start()
    double.start()
    burn_cpu(0.1)
    from_double = double.stop()
    from_single = single.stop()
    assert from_double == pytest.approx(2 * from_single, rel=0.05)


def test_estimate_adds_idle_watts_for_wall_time():
    meter = EstimateMeter(watts_per_core=0.0, idle_watts=100.0)
    start = time.perf_counter()
    meter.start()
    time.sleep(0.05)
    joules = meter.stop()
    assert joules == pytest.approx((time.perf_counter() - start) * 100.0, rel=0.2)


def test_choose_meter_gives_the_estimate_when_asked():
    meter = choose_meter(Target(name="cpu", energy_meter="estimate", watts_per_core=7.0, idle_watts=1.0))
    assert isinstance(meter, EstimateMeter)
    assert (meter.watts_per_core, meter.idle_watts) == (7.0, 1.0)


def test_choose_meter_refuses_rapl_where_no_counter_exists():
    if rapl_domains():
        pytest.skip("this machine has readable RAPL counters")
    with pytest.raises(ConfigError, match="rapl"):
        choose_meter(Target(name="cpu", energy_meter="rapl"))
    assert isinstance(choose_meter(Target(name="cpu", energy_meter="auto")), EstimateMeter)


def test_choose_meter_refuses_nvml_on_a_cpu_provider():
    with pytest.raises(ConfigError, match="nvml"):
        choose_meter(Target(name="cpu", energy_meter="nvml"))


# --- objectives --------------------------------------------------------------------------------

def test_objectives_keep_config_order_and_skip_recorded_only_evaluators():
    evals = [Size(), Energy(objective=False), Accuracy(), Latency()]
    assert objectives(evals) == [("size_bytes", "minimize"), ("accuracy", "maximize"), ("latency_ms", "minimize")]


def test_objectives_with_none_is_a_config_error():
    with pytest.raises(ConfigError, match="objective"):
        objectives([Accuracy(objective=False), Size(objective=False)])


# --- the quiet-node lock -----------------------------------------------------------------------

def start(target) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)  # daemon: a wedged lock cannot hang the run
    thread.start()
    return thread


def test_builds_share_the_node_and_a_measurement_waits_for_them(tmp_path):
    lock = tmp_path / "node.lock"
    holding = [threading.Event(), threading.Event()]
    release, measured = threading.Event(), threading.Event()

    def build(index: int) -> None:
        with building(lock):
            holding[index].set()
            release.wait(WAIT_S)

    builders = [start(lambda i=i: build(i)) for i in range(2)]
    try:
        assert all(event.wait(WAIT_S) for event in holding), "two builds could not hold the node at once"

        def measure() -> None:
            with measuring_alone(lock):
                measured.set()

        meter = start(measure)
        assert not measured.wait(0.3), "measurement started while builds held the node"
    finally:
        release.set()
    assert measured.wait(WAIT_S), "measurement never got the node after the builds ended"
    for thread in [*builders, meter]:
        thread.join(WAIT_S)
        assert not thread.is_alive()


def test_a_build_waits_while_a_measurement_holds_the_node(tmp_path):
    lock = tmp_path / "node.lock"
    measuring, release, built = threading.Event(), threading.Event(), threading.Event()

    def measure() -> None:
        with measuring_alone(lock):
            measuring.set()
            release.wait(WAIT_S)

    def build() -> None:
        with building(lock):
            built.set()

    meter = start(measure)
    try:
        assert measuring.wait(WAIT_S)
        builder = start(build)
        assert not built.wait(0.3), "a build got in beside a measurement"
    finally:
        release.set()
    assert built.wait(WAIT_S)
    for thread in (meter, builder):
        thread.join(WAIT_S)
        assert not thread.is_alive()


def test_the_session_runs_with_the_candidates_threads(tiny_cnn, tiny_workload):
    model_bytes = export_onnx(tiny_cnn, torch.from_numpy(tiny_workload.test.x[:8]))
    two = Built(model_bytes, Candidate(target="cpu", parallelism="intra_op", threads=2), Target(name="cpu"),
                tiny_workload.test)
    options = two.session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (2, 1)


def test_a_queued_measurement_keeps_new_builds_out(tmp_path):
    lock = tmp_path / "node.lock"
    first_holding, release_first = threading.Event(), threading.Event()
    measured, late_built = threading.Event(), threading.Event()

    def first_build() -> None:
        with building(lock):
            first_holding.set()
            release_first.wait(WAIT_S)

    def measure() -> None:
        with measuring_alone(lock):
            measured.set()

    def late_build() -> None:
        with building(lock):
            late_built.set()

    threads = [start(first_build)]
    try:
        assert first_holding.wait(WAIT_S)
        threads.append(start(measure))
        time.sleep(0.2)  # the measurement is queued behind the first build
        threads.append(start(late_build))
        assert not late_built.wait(0.3), "a new build overtook a waiting measurement (starvation)"
    finally:
        release_first.set()
    assert measured.wait(WAIT_S) and late_built.wait(WAIT_S)
    for thread in threads:
        thread.join(WAIT_S)
        assert not thread.is_alive()
