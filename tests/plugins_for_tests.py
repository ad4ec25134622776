"""Plugins (evaluators, a knob) that the whole-search and bad-input tests add with ``+evaluators.NAME._target_=...``.

The worker instantiates them from the config, so they live in an importable module rather
than in a test file.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

from optuna.distributions import CategoricalDistribution

from evaluators import Evaluator
from search.core.schema import Column, Field
from spaces import Knob


class KillOnce(Evaluator):
    """Kills its own worker process the first time it measures a non-baseline candidate in a run.

    The first kill is claimed through an exclusively created marker file in ``marker_dir`` (two
    workers may measure at once; only one kills). The marker holds the killed trial's candidate
    as JSON, so a test can find that trial's row. Later calls, in this or a new worker, record
    ``kill_once`` = 1.0.
    """

    name = "kill_once"
    metric = "kill_once"
    direction = "minimize"
    columns = (Column("kill_once", kind="float", label="kill once", doc="1 once the evaluator let its worker live"),)
    timed = False

    def __init__(self, marker_dir: str, objective: bool = False) -> None:
        super().__init__(objective=objective)
        self.marker_dir = str(marker_dir)

    def measure(self, built: Any) -> dict[str, Any]:
        candidate = built.candidate.to_dict()  # its fields as plain data, as they travel to the worker
        unoptimized = (candidate.get("quant_bits"), candidate.get("prune_rate"), candidate.get("parallelism"))
        if unoptimized == (32, 0, "sequential"):
            return {"kill_once": 1.0}  # the baseline is spared: the run must have its reference row
        Path(self.marker_dir).mkdir(parents=True, exist_ok=True)
        marker = Path(self.marker_dir) / "killed.json"
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return {"kill_once": 1.0}
        with os.fdopen(fd, "w") as out:
            json.dump({"pid": os.getpid(), "candidate": candidate}, out, default=str)
            out.flush()
            os.fsync(out.fileno())
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable: the worker was killed")

    def card_note(self, row: dict[str, Any], target: dict[str, Any]) -> str:
        return "a test evaluator: kills its worker once per run, then records 1"


class MemoryHog(Evaluator):
    """Exhausts memory under a limit, for the candidates whose ``quant_bits`` is ``bits`` only.

    The worker's address space is capped for the allocation (``RLIMIT_AS`` at what the process maps
    now plus ``headroom_mb``), so it fails in a fraction of a second instead of swapping the machine;
    the old limit is restored afterwards. Each time it fires it appends a line (the pid and the
    candidate as JSON) to ``marker_dir``/fired.jsonl, so a test can count how often it ran.

    ``on_limit``: ``raise`` lets the MemoryError out of ``measure`` (a Python error: the trial's
    ``error``); ``sigkill`` frees the memory and SIGKILLs the worker itself, as the kernel's OOM
    killer would (Ray then sees the worker die, and retries under ``max_retries``). Other
    candidates record ``hog_bytes`` = 0.
    """

    name = "hog"
    metric = "hog_bytes"
    direction = "minimize"
    columns = (Column("hog_bytes", kind="float", label="hog bytes",
                      doc="bytes a test evaluator held; 0 unless it hogs"),)
    timed = False

    def __init__(self, marker_dir: str, bits: int = 16, headroom_mb: int = 256, on_limit: str = "raise",
                 objective: bool = False) -> None:
        super().__init__(objective=objective)
        if on_limit not in ("raise", "sigkill"):
            raise ValueError(f"on_limit must be raise or sigkill, got {on_limit!r}")
        self.marker_dir, self.bits, self.on_limit = str(marker_dir), int(bits), on_limit
        self.headroom_mb = int(headroom_mb)

    def measure(self, built: Any) -> dict[str, Any]:
        import resource

        candidate = built.candidate.to_dict()
        if candidate.get("quant_bits") != self.bits:
            return {"hog_bytes": 0.0}
        Path(self.marker_dir).mkdir(parents=True, exist_ok=True)
        with open(Path(self.marker_dir) / "fired.jsonl", "a") as out:
            out.write(json.dumps({"pid": os.getpid(), "on_limit": self.on_limit, "candidate": candidate},
                                 default=str) + "\n")
            out.flush()
            os.fsync(out.fileno())
        mapped = _mapped_bytes()
        old = resource.getrlimit(resource.RLIMIT_AS)
        limit = mapped + self.headroom_mb * 2**20
        if old[1] != resource.RLIM_INFINITY:
            limit = min(limit, old[1])
        held: list[bytearray] = []
        try:
            resource.setrlimit(resource.RLIMIT_AS, (limit, old[1]))
            try:
                while True:
                    chunk = bytearray(32 * 2**20)
                    chunk[::4096] = b"\x01" * len(range(0, len(chunk), 4096))  # touch every page: real resident memory
                    held.append(chunk)
            except MemoryError:
                if self.on_limit == "raise":
                    raise
        finally:
            held.clear()
            resource.setrlimit(resource.RLIMIT_AS, old)
        os.kill(os.getpid(), signal.SIGKILL)  # on_limit == "sigkill": die as the OOM killer would kill it
        raise AssertionError("unreachable: the worker was killed")

    def card_note(self, row: dict[str, Any], target: dict[str, Any]) -> str:
        return "a test evaluator: exhausts memory for one precision, records 0 otherwise"


def _mapped_bytes() -> int:
    """This process's virtual size (VmSize), what RLIMIT_AS bounds."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


class MisstagedKnob(Knob):
    """A knob whose build stage is misspelt: the run must refuse it, not silently never build it."""

    name = "misstaged"
    stage = "onxx"
    fields = (Field("misstaged", kind="int", unset=0, doc="a value"),)

    def distributions(self):
        return {"misstaged": CategoricalDistribution([0])}

    def suggest(self, trial, chosen):
        return {"misstaged": self.draw(trial, "misstaged")}
