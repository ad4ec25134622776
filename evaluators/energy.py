"""Energy per inference (one input) in mJ, with the source of the figure and its spread."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from evaluators._base import rows_of, Built, Evaluator, check_noise_floor
from evaluators.meters import EstimateMeter, Meter, NvmlMeter, RaplMeter, rapl_domains
from search.core.errors import ConfigError
from search.core.schema import Column
from search.runtime.runners import Runner
from search.runtime.target import Target


def choose_meter(target: Target) -> Meter:
    """nvml on a CUDA target, rapl where powercap is readable, otherwise the labelled estimate."""
    wanted = target.energy_meter
    if wanted in ("nvml", "auto") and target.provider == "CUDAExecutionProvider":
        return NvmlMeter()
    if wanted in ("rapl", "auto"):
        domains = rapl_domains()
        if domains:
            return RaplMeter(domains)
        if wanted == "rapl":
            raise ConfigError(f"target {target.name} asks for rapl, but /sys/class/powercap has no readable counter")
    if wanted == "nvml":
        raise ConfigError(f"target {target.name} asks for nvml on provider {target.provider}; nvml needs CUDA")
    return EstimateMeter(target.watts_per_core, target.idle_watts)


class Energy(Evaluator):
    """Runs the model for ``window_s`` under the target's meter, read in ``windows`` equal parts.

    Columns: ``energy_mj`` (the median part, per input), ``energy_ci_low_mj`` /
    ``energy_ci_high_mj`` (the lowest and highest part: with 5 parts a ~94 % interval for
    the median, since all 5 fall on one side of it with probability 2 / 2^5), and
    ``energy_source``. NVML's counter ticks every 20-100 ms, so give a GPU target a window
    of seconds.
    """

    name = "energy"
    metric = "energy_mj"
    direction = "minimize"
    timed = True
    interval = ("energy_ci_low_mj", "energy_ci_high_mj")
    columns = (
        Column("energy_mj", unit="mJ / input", label="energy", label_from="energy_source",
               doc="energy per input: the median of the metered parts of the run"),
        Column("energy_ci_low_mj", unit="mJ", doc="lowest part: low end of a ~94 % interval for that median"),
        Column("energy_ci_high_mj", unit="mJ", doc="highest part"),
        Column("energy_source", kind="str", doc="rapl, nvml or nvml-power (measured), or estimate"),
    )

    def __init__(self, window_s: float = 0.5, windows: int = 5, noise_floor: float = 0.02,
                 objective: bool = True) -> None:
        super().__init__(objective)
        self.noise_floor = check_noise_floor("energy", noise_floor)
        if window_s <= 0 or windows < 1:
            raise ConfigError(f"energy: need window_s > 0 and windows >= 1, got {window_s} and {windows}")
        self.window_s, self.windows = window_s, windows

    def measure(self, built: Built) -> dict[str, Any]:
        meter = choose_meter(built.target)
        runner, batch = built.runner, built.batch()
        runner.run(batch)
        per_input = [self._window(meter, runner, batch) for _ in range(self.windows)]
        return {"energy_mj": float(np.median(per_input)), "energy_ci_low_mj": min(per_input),
                "energy_ci_high_mj": max(per_input), "energy_source": meter.source}

    def _window(self, meter: Meter, runner: Runner, batch: dict[str, np.ndarray]) -> float:
        """mJ per input over one part of the window (at least one call)."""
        part_s = max(self.window_s / self.windows, getattr(meter, "min_part_s", 0.0))  # NVML ticks coarsely
        calls, deadline = 0, time.perf_counter() + part_s
        meter.start()
        while calls == 0 or time.perf_counter() < deadline:
            runner.run(batch)
            calls += 1
        return meter.stop() * 1e3 / (calls * rows_of(batch))

    def card_note(self, row: dict[str, Any], target: dict[str, Any]) -> str:
        if row.get("energy_source") == "estimate":
            return (f"ESTIMATE, not a measurement: process CPU seconds x {target.get('watts_per_core')} W per core "
                    f"+ {target.get('idle_watts')} W x wall time, per input")
        return (f"measured by {row.get('energy_source')} counters over a window of calls, per input "
                "(rapl counts the whole CPU package)")

    def start_note(self, targets: Sequence[Target], on_cluster: bool) -> str:
        """Which meter runs: decided here for a local run, so a meter the machine lacks is refused before any trial."""
        if on_cluster:
            return "energy: each worker uses what its machine exposes (nvml, rapl or the estimate); every row names it"
        notes = {t.name: choose_meter(t).describe() for t in targets}
        if len(set(notes.values())) == 1:
            return f"energy: {next(iter(notes.values()))}"
        return "\n".join(f"energy on {name}: {note}" for name, note in notes.items())
