"""Evaluators on real ONNX Runtime sessions, energy meters on real and fake counters, the quiet-node lock."""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
import onnxruntime as ort
import pytest
import torch

from evaluators import Accuracy, Built, Energy, Latency, PeakMemory, Size, objectives
from evaluators.energy import choose_meter
from evaluators.memory import peak_session_memory
from search.runtime.session_settings import runtime_settings
from evaluators.meters import EstimateMeter, PowerSampler, RaplMeter, counter_delta, integrate_power, rapl_domains
from evaluators.spread import median_ci, relative_half_width
from search.runtime.node_lock import building, measuring_alone
from search.core.candidate import Candidate
from search.core.errors import ConfigError
from search.runtime.target import Target
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
    batch = big.batch()["input"]
    assert batch.shape == (100, 1, 8, 8) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch[64:], tiny_workload.test.x[:36])


def test_latency_reports_p50_p95_repeats_and_throughput(built):
    out = Latency(warmup=2, min_repeats=20, max_repeats=200, budget_s=0.05).measure(built)
    assert out["latency_ms"] > 0
    assert out["latency_p95_ms"] >= out["latency_ms"]
    assert 20 <= out["latency_repeats"] <= 200
    assert out["latency_cv"] >= 0
    assert out["throughput_ips"] == pytest.approx(8 / (out["latency_ms"] / 1000))


def test_latency_reports_an_interval_around_its_p50(built):
    out = Latency(warmup=2, min_repeats=30, max_repeats=300, budget_s=0.1).measure(built)
    assert out["latency_ci_low_ms"] <= out["latency_ms"] <= out["latency_ci_high_ms"]


def test_latency_stops_once_the_interval_is_tight_enough(built):
    loose = Latency(warmup=2, min_repeats=20, max_repeats=2000, budget_s=60, ci_rel=0.99, min_time_s=0).measure(built)
    assert loose["latency_repeats"] == 20  # the first look already meets +-99 %


def test_latency_times_for_at_least_min_time_s_even_when_the_interval_is_tight(built):
    latency = Latency(warmup=2, min_repeats=20, max_repeats=100_000, budget_s=60, ci_rel=0.99, min_time_s=0.2)
    out = latency.measure(built)
    assert out["latency_repeats"] > 20
    assert out["latency_repeats"] * out["latency_ms"] / 1e3 >= 0.1  # p50 x calls: about the time spent timing


def test_latency_repeats_past_the_minimum_while_the_interval_is_wide(built):
    tight = Latency(warmup=2, min_repeats=20, max_repeats=2000, budget_s=0.3, ci_rel=1e-9).measure(built)
    assert tight["latency_repeats"] > 20  # never tight enough: runs on until the budget


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


def test_energy_reports_the_spread_of_its_windows(built):
    out = Energy(window_s=0.1, windows=5).measure(built)
    assert 0 < out["energy_ci_low_mj"] <= out["energy_mj"] <= out["energy_ci_high_mj"]


@pytest.mark.parametrize("kwargs", [{"windows": 0}, {"noise_floor": 1.0}, {"noise_floor": -0.1}])
def test_energy_with_bad_windows_or_floor_is_a_config_error(kwargs):
    with pytest.raises(ConfigError, match="energy"):
        Energy(**kwargs)


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


def test_power_samples_integrate_by_the_trapezoid_rule():
    # recorded (seconds, watts): 1 s at 100 W, then a ramp from 100 W to 200 W over 0.5 s
    samples = [(10.0, 100.0), (10.5, 100.0), (11.0, 100.0), (11.5, 200.0)]
    assert integrate_power(samples) == pytest.approx(100.0 + 75.0)
    assert integrate_power(samples[:1]) == 0


def test_power_sampler_integrates_a_steady_reading_over_its_window():
    sampler = PowerSampler(lambda: 50.0, period_s=0.005)
    start = time.perf_counter()
    sampler.start()
    time.sleep(0.1)
    joules = sampler.stop()
    assert joules == pytest.approx(50.0 * (time.perf_counter() - start), rel=0.15)
    assert len(sampler.samples) > 5


class RecordedNvml:
    """Stands in for pynvml (absent without an NVIDIA driver) and replays recorded readings."""

    class NVMLError(Exception):
        pass

    def __init__(self, energy_mj: list[int] | None, power_mw: float = 0.0) -> None:
        self.energy_mj, self.power_mw = energy_mj, power_mw

    def nvmlInit(self) -> None:
        pass

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        return f"gpu{index}"

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: str) -> int:
        if self.energy_mj is None:  # pre-Volta boards have no energy counter
            raise self.NVMLError("Not Supported")
        return self.energy_mj.pop(0)

    def nvmlDeviceGetPowerUsage(self, handle: str) -> float:
        return self.power_mw


def test_nvml_counter_difference_is_joules(monkeypatch):
    from evaluators.meters import NvmlMeter

    # the probe at start-up, then the start and stop readings, in millijoules since driver load
    monkeypatch.setitem(sys.modules, "pynvml", RecordedNvml([1_000_000, 1_000_000, 1_002_500]))
    meter = NvmlMeter()
    meter.start()
    assert meter.stop() == pytest.approx(2.5) and meter.source == "nvml"


def test_nvml_without_an_energy_counter_integrates_sampled_power(monkeypatch):
    from evaluators.meters import NvmlMeter

    monkeypatch.setitem(sys.modules, "pynvml", RecordedNvml(None, power_mw=80_000))
    meter = NvmlMeter()
    start = time.perf_counter()
    meter.start()
    time.sleep(0.1)
    joules = meter.stop()
    assert meter.source == "nvml-power" and "sampled" in meter.describe()
    assert joules == pytest.approx(80.0 * (time.perf_counter() - start), rel=0.15)


def test_estimate_describes_itself_as_an_estimate():
    line = EstimateMeter(watts_per_core=7.0, idle_watts=2.0).describe()
    assert line.startswith("ESTIMATE") and "7 W per core" in line and "2 W" in line


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


# --- spread ----------------------------------------------------------------------------------

def test_median_interval_uses_the_order_statistics_around_the_middle():
    samples = np.arange(1.0, 101.0)  # median 50.5; +-1.96 * sqrt(100) / 2 = 9.8 ranks
    low, high = median_ci(np.random.default_rng(0).permutation(samples))
    assert (low, high) == (40.0, 61.0)


def test_median_interval_covers_the_true_median_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    hits = sum(low <= np.log(2) <= high for low, high in (median_ci(rng.exponential(size=60)) for _ in range(2000)))
    assert 0.93 <= hits / 2000 <= 0.99


def test_relative_half_width_shrinks_with_more_samples():
    rng = np.random.default_rng(2)
    assert relative_half_width(rng.normal(10, 1, 1000)) < relative_half_width(rng.normal(10, 1, 30))


# --- peak memory --------------------------------------------------------------------------------

def test_peak_memory_grows_with_the_weights_a_session_loads():
    def linear(width: int) -> bytes:
        return export_onnx(torch.nn.Linear(width, width), torch.zeros(1, width))

    batch = {"input": np.zeros((4, 2048), dtype=np.float32)}
    one = runtime_settings()
    small = peak_session_memory(linear(64), {"input": np.zeros((4, 64), dtype=np.float32)}, one,
                                ["CPUExecutionProvider"], 2)
    large = peak_session_memory(linear(2048), batch, one, ["CPUExecutionProvider"], 2)
    assert large - small > 2048 * 2048 * 4 * 0.9  # at least the 16 MiB of float32 weights more


def test_peak_memory_counts_every_data_parallel_replica():
    model = export_onnx(torch.nn.Linear(2048, 2048), torch.zeros(1, 2048))
    batch = {"input": np.zeros((6, 2048), dtype=np.float32)}
    one = peak_session_memory(model, batch, runtime_settings(), ["CPUExecutionProvider"], 2)
    three = peak_session_memory(model, batch, runtime_settings("data_parallel", 3), ["CPUExecutionProvider"], 2)
    assert three - one > 2 * 2048 * 2048 * 4 * 0.9  # two more copies of the 16 MiB of weights


def test_peak_memory_evaluator_fills_its_column_and_is_no_objective_by_default(built):
    evaluator = PeakMemory()
    assert evaluator.measure(built)["peak_memory_bytes"] > 0
    assert not evaluator.objective and not evaluator.timed


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


def test_the_session_runs_with_the_candidates_degree(tiny_cnn, tiny_workload):
    model_bytes = export_onnx(tiny_cnn, torch.from_numpy(tiny_workload.test.x[:8]))
    two = Built(model_bytes, Candidate(target="cpu", parallelism="intra_op", degree=2), Target(name="cpu"),
                tiny_workload.test)
    options = two.runner.session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (2, 1)


def test_inter_op_runs_one_session_in_parallel_execution_mode(tiny_cnn, tiny_workload):
    model_bytes = export_onnx(tiny_cnn, torch.from_numpy(tiny_workload.test.x[:8]))
    built = Built(model_bytes, Candidate(target="cpu", parallelism="inter_op", degree=2), Target(name="cpu"),
                  tiny_workload.test)
    options = built.runner.session.get_session_options()
    assert options.execution_mode == ort.ExecutionMode.ORT_PARALLEL
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 2)


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
