"""Energy per inference (one input) in mJ, with the source of the figure."""

from __future__ import annotations

import time
from typing import Any

from evaluators._base import Built, Evaluator
from evaluators.meters import EstimateMeter, Meter, NvmlMeter, RaplMeter, rapl_domains
from search.errors import ConfigError
from search.target import Target


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
    """Runs the model for ``window_s`` under the target's meter; columns ``energy_mj``, ``energy_source``.

    NVML's counter ticks every 20-100 ms, so the window is long and divided by the inputs run.
    """

    name = "energy"
    metric = "energy_mj"
    direction = "minimize"

    def __init__(self, window_s: float = 0.5, objective: bool = True) -> None:
        super().__init__(objective)
        if window_s <= 0:
            raise ConfigError(f"energy: window_s must be > 0, got {window_s}")
        self.window_s = window_s

    def measure(self, built: Built) -> dict[str, Any]:
        meter = choose_meter(built.target)
        session, batch = built.session, built.batch()
        feed = {session.get_inputs()[0].name: batch}
        session.run(None, feed)
        calls, deadline = 0, time.perf_counter() + self.window_s
        meter.start()
        while calls == 0 or time.perf_counter() < deadline:
            session.run(None, feed)
            calls += 1
        joules = meter.stop()
        return {"energy_mj": joules * 1e3 / (calls * len(batch)), "energy_source": meter.source}
