"""Hardware targets: what a target declares it supports, and whether this machine can serve it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from search.errors import ConfigError

KNOWN_PRECISIONS = (32, 16, 8, 4)
KNOWN_PARALLELISM = ("sequential", "intra_op")


@dataclass(frozen=True)
class Target:
    """A hardware target, read from ``conf/target/<name>.yaml``.

    Attributes:
        name: the target's name, written into every row it measured.
        provider: ONNX Runtime execution provider the evaluators run on.
        torch_device: device for the distillation step (``cpu`` or ``cuda``).
        precisions: quantization bits this target runs.
        parallelism: runtime modes this target runs.
        max_threads: upper bound for ``intra_op`` threads (None: the machine's cores).
        num_cpus: Ray CPUs one trial reserves.
        num_gpus: Ray GPUs one trial reserves.
        energy_meter: ``auto`` picks nvml, rapl or estimate from what the machine exposes.
        watts_per_core: for the estimate: watts one busy core draws.
        idle_watts: for the estimate: watts added per second of wall time (0 to leave out).
    """

    name: str
    provider: str = "CPUExecutionProvider"
    torch_device: str = "cpu"
    precisions: tuple[int, ...] = (32, 16, 8)
    parallelism: tuple[str, ...] = KNOWN_PARALLELISM
    max_threads: int | None = None
    num_cpus: float = 1
    num_gpus: float = 0
    energy_meter: str = "auto"
    watts_per_core: float = 10.0
    idle_watts: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        bad = [b for b in self.precisions if b not in KNOWN_PRECISIONS]
        if bad:
            raise ConfigError(f"target {self.name}: precisions {bad} unknown; choose from {list(KNOWN_PRECISIONS)}")
        bad_modes = [m for m in self.parallelism if m not in KNOWN_PARALLELISM]
        if bad_modes:
            raise ConfigError(f"target {self.name}: parallelism {bad_modes} unknown; choose from {list(KNOWN_PARALLELISM)}")
        if self.energy_meter not in ("auto", "estimate", "rapl", "nvml"):
            raise ConfigError(f"target {self.name}: energy_meter {self.energy_meter!r} unknown; choose from auto, estimate, rapl, nvml")

    @property
    def thread_budget(self) -> int:
        return self.max_threads or os.cpu_count() or 1

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> Target:
        cfg = dict(cfg)
        for key in ("precisions", "parallelism"):
            if key in cfg:
                cfg[key] = tuple(cfg[key])
        try:
            return cls(**cfg)
        except TypeError as exc:
            raise ConfigError(f"target config: {exc}") from None

    def check_available(self) -> None:
        """Fail fast when this machine cannot serve the target (never a silent CPU fallback)."""
        import onnxruntime as ort

        if self.provider not in ort.get_available_providers():
            raise ConfigError(
                f"target {self.name} needs ONNX Runtime's {self.provider}, which this machine lacks "
                f"(available: {', '.join(ort.get_available_providers())})"
            )
        if self.torch_device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise ConfigError(f"target {self.name} needs a CUDA device for torch; none is visible here")
