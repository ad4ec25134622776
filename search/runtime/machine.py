"""What machine this is, as plain data: for the reproducibility manifest and a bundle's verify.py.

Copied as it is into every bundle (search/bundle/): the standard library only, so that the
deployment machine describes itself the same way the search machine did. Whatever cannot be
read (no /proc, no nvidia-smi) is None, never a guess.
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

# what makes a figure measured on one machine differ on another (the host's name does not)
COMPARED_FACTS = ("cpu", "arch", "cores", "usable_cores", "memory_bytes", "gpus", "cpu_governor")
GOVERNOR = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")


def _read(path: str | Path) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def cpu_model() -> str | None:
    """The CPU's marketing name (/proc/cpuinfo on Linux, platform elsewhere)."""
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        if line.lower().startswith(("model name", "hardware", "cpu model")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or None


def usable_cores() -> int:
    """Cores this process may run on: its affinity (taskset, a container's cpuset), else all of them."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def memory_bytes() -> int | None:
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return None


def gpus() -> list[dict[str, str]]:
    """Each NVIDIA GPU's name and driver version, from nvidia-smi where it is installed."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    found = []
    for line in out.strip().splitlines():
        name, _, driver = line.rpartition(",")
        found.append({"name": name.strip(), "driver": driver.strip()})
    return found


def describe_machine() -> dict[str, Any]:
    """The machine a figure was measured on: host, OS, CPU, cores, memory, GPUs, the CPU governor, and the
    measuring process's niceness."""
    governor = _read(GOVERNOR)
    return {
        "host": socket.gethostname(),
        "os": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "memory_bytes": memory_bytes(),
        "gpus": gpus(),
        "cpu_governor": governor.strip() if governor else None,
        "python": sys.version.split()[0],
        "niceness": _niceness(),  # of the measuring process: above 0, other processes take its core first
    }


def _niceness() -> int | None:
    try:
        return os.nice(0)
    except OSError:  # a platform without nice()
        return None
