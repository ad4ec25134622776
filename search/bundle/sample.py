"""The run's sample: the test rows the search timed every candidate on, kept for the bundles.

A trial's latency is the time of one call on its batch: the first ``batch_size`` rows of the
test split, repeated when the split has fewer (Split.batch_of). The driver keeps the first rows
up to the largest batch any knob can draw in ``sample.npz``, so a bundle made later ships the
very batch its model was timed on, whether or not the workload can be loaded again (a
workload handed in from Python). Plain arrays: loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from optuna.distributions import CategoricalDistribution

from search.core.files import write_bytes
from search.workloads import Split
from spaces import Knob

SAMPLE_FILE = "sample.npz"
DEFAULT_BATCH = 32  # a candidate's batch size when no knob sets one (search/core/candidate.py)
MAX_SAMPLE_BYTES = 64 * 2**20  # beyond this the sample keeps fewer rows, repeated to make a batch


def largest_batch(knobs: Sequence[Knob]) -> int:
    """The largest batch size any knob can give a candidate (its choices, its baseline)."""
    sizes = [DEFAULT_BATCH]
    for knob in knobs:
        distribution = knob.distributions().get("batch_size")
        if isinstance(distribution, CategoricalDistribution):
            sizes += [int(c) for c in distribution.choices]
        sizes += [int(v) for k, v in knob.baseline().items() if k == "batch_size"]
        if knob.name == "batch_size":  # one fixed size is neither drawn nor a baseline: it is the knob's only choice
            sizes += [int(c) for c in getattr(knob, "choices", None) or []]
    return max(sizes)


def write_run_sample(run_dir: Path, test: Split, rows: int) -> None:
    """``sample.npz`` of the first ``rows`` test rows (all of them when the split has fewer), once per run."""
    path = run_dir / SAMPLE_FILE
    if path.exists():
        return
    inputs = test.batch_of(min(rows, len(test)))
    row_bytes = sum(v[:1].nbytes for v in inputs.values()) or 1
    keep = max(1, min(len(next(iter(inputs.values()))), MAX_SAMPLE_BYTES // row_bytes))
    buffer = io.BytesIO()
    np.savez(buffer, **{name: value[:keep] for name, value in inputs.items()})
    write_bytes(path, buffer.getvalue())


def read_run_sample(run_dir: Path) -> dict[str, np.ndarray] | None:
    path = run_dir / SAMPLE_FILE
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as stored:
        return {name: stored[name] for name in stored.files}

