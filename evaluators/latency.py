"""Latency of one inference call (p50 with its confidence interval, p95) and the throughput it implies."""

from __future__ import annotations

from typing import Any

import numpy as np

from evaluators._base import Built, Evaluator, check_noise_floor
from evaluators.spread import median_ci
from search.runtime.portable import time_calls as portable_time_calls
from search.core.errors import ConfigError
from search.core.schema import Column



def time_calls(built: Built, warmup: int, min_repeats: int, max_repeats: int, budget_s: float,
               ci_rel: float, min_time_s: float) -> np.ndarray:
    """Seconds per call on the candidate's batch; the protocol is portable.time_calls, which a
    bundle's verify.py repeats on the deployment machine."""
    return portable_time_calls(built.runner, built.batch(), warmup, min_repeats, max_repeats, budget_s, ci_rel,
                               min_time_s)


class Latency(Evaluator):
    """Wall time of one call on a batch of ``batch_size`` inputs, repeated until its median is sure.

    Columns: ``latency_ms`` (p50), ``latency_ci_low_ms`` / ``latency_ci_high_ms`` (a
    distribution-free ~95 % interval for the p50), ``latency_p95_ms``, ``latency_cv`` (std /
    mean of the calls, stalls included), ``latency_repeats`` and ``throughput_ips`` (inputs
    per second at p50).
    """

    name = "latency"
    metric = "latency_ms"
    direction = "minimize"
    timed = True
    interval = ("latency_ci_low_ms", "latency_ci_high_ms")
    columns = (
        Column("latency_ms", unit="ms / batch", label="latency p50", per_batch=True,
               doc="p50 wall time of one call on batch_size inputs"),
        Column("latency_ci_low_ms", unit="ms", doc="low end of the ~95 % interval of that p50"),
        Column("latency_ci_high_ms", unit="ms", doc="high end of that interval"),
        Column("latency_p95_ms", unit="ms", label="latency p95", doc="p95 of the same calls"),
        Column("latency_cv", doc="standard deviation / mean of the timed calls"),
        Column("latency_repeats", kind="int", doc="timed calls after warm-up"),
        Column("throughput_ips", unit="inputs/s", label="throughput", doc="batch_size / latency p50"),
    )

    def __init__(
        self, warmup: int = 20, min_repeats: int = 50, max_repeats: int = 2000, budget_s: float = 1.0,
        ci_rel: float = 0.01, noise_floor: float = 0.02, min_time_s: float = 0.25, objective: bool = True,
    ) -> None:
        super().__init__(objective)
        self.noise_floor = check_noise_floor("latency", noise_floor)
        if warmup < 0 or min_repeats < 1 or max_repeats < min_repeats or budget_s <= 0 or ci_rel <= 0:
            raise ConfigError("latency: need warmup >= 0, 1 <= min_repeats <= max_repeats, budget_s > 0, ci_rel > 0")
        self.warmup, self.min_repeats, self.max_repeats, self.budget_s = warmup, min_repeats, max_repeats, budget_s
        if min_time_s < 0:
            raise ConfigError(f"latency: min_time_s must be >= 0, got {min_time_s}")
        self.ci_rel, self.min_time_s = ci_rel, min(min_time_s, budget_s)  # the budget caps everything

    def measure(self, built: Built) -> dict[str, Any]:
        times = time_calls(built, self.warmup, self.min_repeats, self.max_repeats, self.budget_s, self.ci_rel,
                           self.min_time_s)
        p50 = float(np.percentile(times, 50))
        low, high = median_ci(times)
        return {
            "latency_ms": p50 * 1e3,
            "latency_ci_low_ms": low * 1e3,
            "latency_ci_high_ms": high * 1e3,
            "latency_p95_ms": float(np.percentile(times, 95)) * 1e3,
            "latency_cv": float(times.std() / times.mean()),
            "latency_repeats": int(len(times)),
            "throughput_ips": built.candidate.batch_size / p50,
        }

    def card_note(self, row: dict[str, Any], target: dict[str, Any]) -> str:
        return (f"p50 (with a distribution-free ~95 % interval) and p95 of timed calls on a batch of "
                f"{row.get('batch_size')} after {self.warmup} warm-up calls, repeated until the interval was within "
                f"+-{self.ci_rel} of the p50 or {self.budget_s} s passed, on node {row.get('node')} with no other "
                "trial building or measuring there"
                + (f"; re-timed in the re-timing phase after the search (the search measured "
                   f"{row.get('search_latency_ms') or float('nan'):.4g} ms); the interval covers a new timing "
                   "session (the card's intervals entry says how)" if row.get("final")
                   else "; measured during the search (not re-timed): the interval is that session's only"))
