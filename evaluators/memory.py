"""Peak resident memory of an inference session: what a deployment must budget for the model."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from evaluators._base import Built, Evaluator
from search.core.errors import ConfigError
from search.core.schema import Column

# Runs in a fresh interpreter: the worker's own heap (torch, the workload, other sessions)
# would hide a session's memory, and a peak cannot be reset inside one process.
_PROBE = """
import json, sys
import numpy as np

def kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])

from search.runtime.runners import make_runner  # onnxruntime only: no torch, and onnx for a pipeline alone

model, batch, settings = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
providers, calls = json.loads(sys.argv[4]), int(sys.argv[5])
providers = [tuple(p) if isinstance(p, list) else p for p in providers]  # JSON made (name, options) a list
feeds = dict(np.load(batch))
model_bytes = open(model, "rb").read()
# a pipeline's stages are cut before the mark is reset: cutting is the build's work, not the session's
if settings["parallelism"] == "pipeline":
    from search.runtime.graph_split import split_model
    parts = split_model(model_bytes, settings["stages"])
else:
    parts = None
try:  # reset the high-water mark to now, so import-time peaks do not count (Linux >= 4.0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
except OSError:
    pass
before = kib("VmRSS")
runner = make_runner(model_bytes, settings, providers, parts)  # every replica or stage counts
for _ in range(calls):
    runner.run(feeds)
runner.close()
print(json.dumps({"before_kib": before, "peak_kib": kib("VmHWM")}))
"""


def peak_session_memory(model_bytes: bytes, batch: dict[str, np.ndarray], settings: dict[str, Any],
                        providers: list[Any], calls: int) -> int:
    """Bytes of resident memory a fresh process gains from loading the model and running ``calls`` calls."""
    with tempfile.TemporaryDirectory(prefix="optsearch-mem-") as tmp:
        model, inputs = Path(tmp) / "model.onnx", Path(tmp) / "batch.npz"
        model.write_bytes(model_bytes)
        np.savez(inputs, **batch)  # plain arrays: the probe loads them without pickle
        done = subprocess.run([sys.executable, "-c", _PROBE, str(model), str(inputs), json.dumps(settings),
                               json.dumps(providers), str(calls)], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe failed: {done.stderr.strip().splitlines()[-1:]}")
    found = json.loads(done.stdout.strip().splitlines()[-1])
    return (found["peak_kib"] - found["before_kib"]) * 1024


class PeakMemory(Evaluator):
    """``peak_memory_bytes``: peak RSS growth of a fresh process from creating the session
    through ``calls`` inference calls on a batch (weights, arena, activations; CPU memory only).

    Not timed: it is read from the kernel's high-water mark, so other trials do not skew it.
    """

    name = "memory"
    metric = "peak_memory_bytes"
    direction = "minimize"
    columns = (Column("peak_memory_bytes", kind="int", unit="bytes", label="peak session memory", plot_scale=1024 ** 2,
                      doc="resident memory a fresh process gains from loading the model and running 3 calls"),)

    def __init__(self, calls: int = 3, objective: bool = False) -> None:
        super().__init__(objective)
        if calls < 1:
            raise ConfigError(f"memory: calls must be >= 1, got {calls}")
        self.calls = calls

    def measure(self, built: Built) -> dict[str, Any]:
        peak = peak_session_memory(built.model_bytes, built.batch(), built.candidate.runtime,
                                   built.target.providers(built.candidate.get("quant_bits")), self.calls)
        return {"peak_memory_bytes": peak}

    def card_note(self, row: dict[str, Any], target: dict[str, Any]) -> str:
        return (f"peak resident memory a fresh process gained from creating the session(s) through {self.calls} calls "
                "(CPU memory; every replica or stage counts)")
