"""Latency of one inference call (p50, p95, spread) and the throughput it implies."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from evaluators._base import Built, Evaluator
from search.errors import ConfigError


def time_calls(built: Built, warmup: int, min_repeats: int, max_repeats: int, budget_s: float) -> np.ndarray:
    """Seconds per call: ``warmup`` untimed calls, then timed calls until the budget or ``max_repeats``."""
    session, batch = built.session, built.batch()
    feed = {session.get_inputs()[0].name: batch}
    for _ in range(warmup):
        session.run(None, feed)
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < max_repeats and (len(times) < min_repeats or time.perf_counter() < deadline):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return np.asarray(times)


class Latency(Evaluator):
    """Wall time of one call on a batch of ``batch_size`` inputs.

    Columns: ``latency_ms`` (p50), ``latency_p95_ms``, ``latency_cv`` (std / mean of the
    timed calls), ``latency_repeats`` and ``throughput_ips`` (inputs per second at p50).
    """

    name = "latency"
    metric = "latency_ms"
    direction = "minimize"

    def __init__(
        self, warmup: int = 20, min_repeats: int = 50, max_repeats: int = 2000, budget_s: float = 1.0,
        objective: bool = True,
    ) -> None:
        super().__init__(objective)
        if warmup < 0 or min_repeats < 1 or max_repeats < min_repeats or budget_s <= 0:
            raise ConfigError("latency: need warmup >= 0, 1 <= min_repeats <= max_repeats, budget_s > 0")
        self.warmup, self.min_repeats, self.max_repeats, self.budget_s = warmup, min_repeats, max_repeats, budget_s

    def measure(self, built: Built) -> dict[str, Any]:
        times = time_calls(built, self.warmup, self.min_repeats, self.max_repeats, self.budget_s)
        p50 = float(np.percentile(times, 50))
        return {
            "latency_ms": p50 * 1e3,
            "latency_p95_ms": float(np.percentile(times, 95)) * 1e3,
            "latency_cv": float(times.std() / times.mean()),
            "latency_repeats": int(len(times)),
            "throughput_ips": built.candidate.batch_size / p50,
        }
