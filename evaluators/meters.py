"""Energy meters: RAPL and NVML counters where the machine has them, else an estimate from CPU time."""

from __future__ import annotations

import glob
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

POWERCAP = Path("/sys/class/powercap")


class Meter(Protocol):
    source: str

    def describe(self) -> str:
        """One line for the start-up log: what is measured, and how."""

    def start(self) -> None: ...

    def stop(self) -> float:
        """Joules spent since ``start``."""


def counter_delta(before: int, after: int, wrap: int) -> int:
    """Increase of a counter that wraps to 0 after ``wrap``: one wrap at most per window."""
    return after - before if after >= before else after + wrap - before


def rapl_domains(root: Path = POWERCAP) -> list[Path]:
    """Readable package-level RAPL domains (intel-rapl:N, also used by AMD), without subzones."""
    found = sorted(p for p in map(Path, glob.glob(str(root / "intel-rapl:*"))) if p.name.count(":") == 1)
    return [d for d in found if os.access(d / "energy_uj", os.R_OK)]


class RaplMeter:
    """Sums package counters (microjoules); counts the whole package, not just this process."""

    source = "rapl"

    def __init__(self, domains: list[Path]) -> None:
        self.domains = domains
        self.wraps = [int((d / "max_energy_range_uj").read_text()) for d in domains]
        self._before: list[int] = []

    def describe(self) -> str:
        names = ", ".join(d.name for d in self.domains)
        return f"rapl: package energy counters {names} (the whole package, other processes included)"

    def _read(self) -> list[int]:
        return [int((d / "energy_uj").read_text()) for d in self.domains]

    def start(self) -> None:
        self._before = self._read()

    def stop(self) -> float:
        after = self._read()
        return sum(counter_delta(b, a, w) for b, a, w in zip(self._before, after, self.wraps, strict=True)) / 1e6


def integrate_power(samples: list[tuple[float, float]]) -> float:
    """Joules from (seconds, watts) samples, by the trapezoid rule."""
    return sum((t1 - t0) * (w0 + w1) / 2 for (t0, w0), (t1, w1) in zip(samples, samples[1:], strict=False))


class PowerSampler:
    """Samples a power reading (watts) on a thread, for GPUs without an energy counter."""

    def __init__(self, read_watts, period_s: float = 0.01) -> None:
        self.read_watts, self.period_s = read_watts, period_s
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.samples.append((time.perf_counter(), self.read_watts()))

    def start(self) -> None:
        # the first and last samples are taken here and in stop(), so the integral spans exactly
        # the window, however late the thread gets scheduled
        self.samples, self._stop = [(time.perf_counter(), self.read_watts())], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> float:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self.samples.append((time.perf_counter(), self.read_watts()))
        return integrate_power(self.samples)


class NvmlMeter:
    """The GPU's total-energy counter (millijoules since driver load); GPUs older than Volta
    lack it, and there the board's power reading is sampled every 10 ms and integrated.

    The counter moves every 20-100 ms, so a part of the energy window shorter than
    ``min_part_s`` could read 0 or one tick: the evaluator stretches parts to at least that.
    """

    min_part_s = 0.5

    def __init__(self, device_index: int = 0) -> None:
        import pynvml

        pynvml.nvmlInit()
        self._nvml = pynvml
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
        self._before = 0
        self._sampler: PowerSampler | None = None
        try:
            pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
            self.source = "nvml"
        except pynvml.NVMLError:
            self._sampler = PowerSampler(lambda: pynvml.nvmlDeviceGetPowerUsage(self._handle) / 1e3)
            self.source = "nvml-power"

    def describe(self) -> str:
        if self._sampler:
            return "nvml-power: GPU board power sampled every 10 ms and integrated (no energy counter on this GPU)"
        return "nvml: the GPU's total-energy counter (the whole board, other processes included)"

    def start(self) -> None:
        if self._sampler:
            self._sampler.start()
            return
        self._before = self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)

    def stop(self) -> float:
        if self._sampler:
            return self._sampler.stop()
        return (self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle) - self._before) / 1e3


@dataclass
class EstimateMeter:
    """Not a measurement: this process's CPU seconds x watts per busy core (+ idle watts x wall time).

    CPU time, unlike latency, counts every thread: two threads that halve latency still
    spend about the same CPU seconds.
    """

    watts_per_core: float
    idle_watts: float = 0.0
    source: str = "estimate"
    _cpu: float = 0.0
    _wall: float = 0.0

    def describe(self) -> str:
        idle = f" + {self.idle_watts:g} W x wall time" if self.idle_watts else ""
        return (f"ESTIMATE, not a measurement (no readable energy counter): process CPU seconds x "
                f"{self.watts_per_core:g} W per core{idle}")

    def start(self) -> None:
        self._cpu, self._wall = time.process_time(), time.perf_counter()

    def stop(self) -> float:
        cpu_s = time.process_time() - self._cpu
        wall_s = time.perf_counter() - self._wall
        return cpu_s * self.watts_per_core + wall_s * self.idle_watts
