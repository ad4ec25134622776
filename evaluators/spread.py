"""How sure a measured median is: a distribution-free confidence interval from order statistics."""

from __future__ import annotations

import math

import numpy as np

Z_95 = 1.959964


def median_ci(samples: np.ndarray, z: float = Z_95) -> tuple[float, float]:
    """A ~95 % confidence interval for the median, from the sorted samples themselves.

    The number of samples below the true median is Binomial(n, 1/2); the interval runs from
    the order statistic ``z * sqrt(n) / 2`` ranks below the middle to as many above it. It
    needs no assumption about the shape of the timing distribution, whose tail of rare
    stalls makes mean +- std meaningless. With fewer than 6 samples it is the min-max range.
    """
    ordered = np.sort(np.asarray(samples, dtype=float))
    n = len(ordered)
    if n == 0:
        raise ValueError("no samples")
    half = z * math.sqrt(n) / 2
    low = max(0, math.floor(n / 2 - half) - 1)
    high = min(n - 1, math.ceil(n / 2 + half))
    return float(ordered[low]), float(ordered[high])


def relative_half_width(samples: np.ndarray) -> float:
    """Half the CI's width over the median: 0.01 means the median is known to about +-1 %."""
    low, high = median_ci(samples)
    return (high - low) / 2 / float(np.median(samples))
