"""Energy meters: RAPL and NVML counters where the machine has them, else an estimate from CPU time."""

from __future__ import annotations

import glob
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

POWERCAP = Path("/sys/class/powercap")


class Meter(Protocol):
    source: str

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

    def _read(self) -> list[int]:
        return [int((d / "energy_uj").read_text()) for d in self.domains]

    def start(self) -> None:
        self._before = self._read()

    def stop(self) -> float:
        after = self._read()
        return sum(counter_delta(b, a, w) for b, a, w in zip(self._before, after, self.wraps)) / 1e6


class NvmlMeter:
    """The GPU's total-energy counter (millijoules since driver load)."""

    source = "nvml"

    def __init__(self, device_index: int = 0) -> None:
        import pynvml

        pynvml.nvmlInit()
        self._nvml = pynvml
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
        self._before = 0

    def start(self) -> None:
        self._before = self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)

    def stop(self) -> float:
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

    def start(self) -> None:
        self._cpu, self._wall = time.process_time(), time.perf_counter()

    def stop(self) -> float:
        cpu_s = time.process_time() - self._cpu
        wall_s = time.perf_counter() - self._wall
        return cpu_s * self.watts_per_core + wall_s * self.idle_watts
