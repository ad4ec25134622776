"""How busy this node's CPUs are besides the calling process, and a wait until they are quiet.

The node lock (node_lock.py) keeps this run's trials from building while a model is timed, but not what
the run leaves behind or what else the machine runs: when a search ends, its workers are still freeing what
their last trials held (seen with top: an idle worker at a full core for a second or two), and in one run
the first re-timing session, started then, measured 20-80 % slower than the next (bench/figures.py, the
digits, on a day the machine itself swung that much, so that one case proves nothing alone). So a
re-timing session waits, before its first timing, until the node's CPUs have been quiet for a moment: it
costs half a second where they are. Linux only (/proc/stat); elsewhere the load is not known and nothing
waits.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

PROC_STAT = Path("/proc/stat")
QUIET_CORES = 0.2  # busy below this many cores, besides the caller: Ray's own daemons idle at a few per cent of one
WINDOW_S = 0.5  # each reading of the load spans this long


@dataclass(frozen=True)
class Settled:
    """What a wait for a quiet node found: how long it waited, the busy cores (besides the caller) of the last
    window, and whether that was quiet (False: it waited as long as it may, or the load cannot be read)."""

    waited_s: float
    busy_cores: float | None
    quiet: bool
    asked: bool = True  # False: told not to wait (max_wait_s = 0)

    def describe(self) -> str:
        if not self.asked:
            return "no wait for a quiet node"
        if self.busy_cores is None:
            return "the node's load is not known here"
        if self.quiet:
            return f"node quiet after {self.waited_s:.1f} s ({self.busy_cores:.2f} cores busy besides it)"
        return f"node still busy after {self.waited_s:.1f} s ({self.busy_cores:.2f} cores busy besides it)"


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies over all CPUs since boot, or None where /proc/stat cannot be read."""
    try:
        fields = PROC_STAT.read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    values = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def _own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def busy_cores(window_s: float = WINDOW_S) -> float | None:
    """The cores busy over the next ``window_s`` besides this process (None where it cannot be read)."""
    before, own = _cpu_jiffies(), _own_cpu_s()
    if before is None:
        return None
    started = time.perf_counter()
    time.sleep(window_s)
    after, elapsed = _cpu_jiffies(), time.perf_counter() - started
    if after is None or after[1] <= before[1]:
        return None
    cores = os.cpu_count() or 1
    share = (after[0] - before[0]) / (after[1] - before[1])  # of all the node's CPU time in the window
    return max(0.0, share * cores - (_own_cpu_s() - own) / elapsed)


def wait_until_quiet(max_wait_s: float) -> Settled:
    """Waits until the node's CPUs, besides this process, are busy less than QUIET_CORES over a window, or
    ``max_wait_s`` has passed (0: does not wait)."""
    started = time.perf_counter()
    if max_wait_s <= 0:
        return Settled(0.0, None, False, asked=False)
    while True:
        busy = busy_cores()
        waited = time.perf_counter() - started
        if busy is None or busy < QUIET_CORES or waited >= max_wait_s:
            return Settled(waited, busy, busy is not None and busy < QUIET_CORES)
