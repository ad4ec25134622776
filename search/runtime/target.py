"""Hardware targets: what a target declares it supports, and whether this machine can serve it."""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from collections.abc import Sequence

from search.errors import ConfigError

if TYPE_CHECKING:
    from search.candidate import Candidate

KNOWN_PRECISIONS = (32, 16, 8, 4)
KNOWN_PARALLELISM = ("sequential", "intra_op", "inter_op", "data_parallel", "pipeline")
KNOWN_HALF = ("fp16", "bf16")  # the 16-bit float formats (quant_mode of 16 bits)


@dataclass(frozen=True)
class Target:
    """A hardware target, read from ``conf/target/<name>.yaml``.

    Attributes:
        name: the target's name, written into every row it measured.
        provider: ONNX Runtime execution provider the evaluators run on.
        provider_options: that provider's options (TensorRT's engine cache, a CUDA device id).
        provider_options_by_bits: options added for models of some precision (TensorRT's int8 flag).
        torch_device: device for the distillation step (``cpu`` or ``cuda``).
        precisions: quantization bits this target runs.
        half_formats: which 16-bit floats it runs (``fp16``, ``bf16``) when 16 is among them.
        parallelism: runtime modes this target runs.
        max_threads: upper bound for a mode's degree: threads, replicas or stages (None: the
            machine's cores).
        num_cpus: Ray CPUs one trial reserves.
        num_gpus: Ray GPUs one trial reserves.
        energy_meter: ``auto`` picks nvml, rapl or estimate from what the machine exposes.
        watts_per_core: for the estimate: watts one busy core draws.
        idle_watts: for the estimate: watts added per second of wall time (0 to leave out).
    """

    name: str
    provider: str = "CPUExecutionProvider"
    provider_options: dict[str, Any] = field(default_factory=dict)
    provider_options_by_bits: dict[int, dict[str, Any]] = field(default_factory=dict)
    torch_device: str = "cpu"
    precisions: tuple[int, ...] = (32, 16, 8)
    half_formats: tuple[str, ...] = ("fp16",)
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
        bad_half = [h for h in self.half_formats if h not in KNOWN_HALF]
        if bad_half:
            raise ConfigError(f"target {self.name}: half_formats {bad_half} unknown; choose from {list(KNOWN_HALF)}")
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
        for key in ("precisions", "parallelism", "half_formats"):
            if key in cfg:
                cfg[key] = tuple(cfg[key])
        if "provider_options_by_bits" in cfg:
            cfg["provider_options_by_bits"] = {int(k): dict(v) for k, v in cfg["provider_options_by_bits"].items()}
        try:
            return cls(**cfg)
        except TypeError as exc:
            raise ConfigError(f"target config: {exc}") from None

    def refuses(self, candidate: Candidate) -> str:
        """Why this target cannot run ``candidate`` (a study across targets draws knobs from all
        of theirs), or "" when it can."""
        if candidate.quant_bits not in self.precisions:
            return (f"target {self.name} does not run {candidate.quant_bits}-bit models "
                    f"(it runs {list(self.precisions)})")
        if candidate.quant_bits == 16 and candidate.quant_mode not in self.half_formats:
            return f"target {self.name} does not run {candidate.quant_mode} (it runs {list(self.half_formats)})"
        if candidate.parallelism not in self.parallelism:
            return f"target {self.name} does not run {candidate.parallelism} (it runs {list(self.parallelism)})"
        if candidate.threads > self.thread_budget:
            return (f"target {self.name} has {self.thread_budget} thread(s); "
                    f"{candidate.parallelism} x{candidate.threads} needs more")
        return ""

    def project(self, params: dict[str, Any]) -> dict[str, Any]:
        """Trial params moved to the nearest this target runs: another precision (the nearest
        in bits, the higher on a tie), its first 16-bit format, sequential for a mode it lacks,
        a degree within its thread budget. A study across targets re-asks a refused draw so."""
        found = dict(params)
        bits = found.get("quant_bits")
        if bits is not None and bits not in self.precisions:
            found["quant_bits"] = min(self.precisions, key=lambda b: (abs(math.log2(b / bits)), -b))
        if "half_format" in found and found["half_format"] not in self.half_formats:
            found["half_format"] = self.half_formats[0]
        mode = found.get("parallelism")
        if mode is not None and (mode not in self.parallelism or self.thread_budget < 2):
            found["parallelism"] = "sequential"
        if found.get("threads") is not None and found.get("parallelism") != "sequential":
            found["threads"] = min(found["threads"], self.thread_budget)
        return found

    def providers(self, bits: int | None = None) -> list[Any]:
        """ONNX Runtime's ``providers`` argument for this target's sessions of a ``bits`` model."""
        options = {**self.provider_options, **self.provider_options_by_bits.get(bits, {})}
        return [(self.provider, options)] if options else [self.provider]

    def check_available(self) -> None:
        """Fail fast when this machine cannot serve the target (never a silent CPU fallback)."""
        import onnxruntime as ort

        if self.provider not in ort.get_available_providers():
            raise ConfigError(
                f"target {self.name} needs ONNX Runtime's {self.provider}, which this machine lacks "
                f"(available: {', '.join(ort.get_available_providers())}; a GPU build is the onnxruntime-gpu package)"
            )
        _check_provider_starts(self)
        if self.torch_device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise ConfigError(f"target {self.name} needs a CUDA device for torch; none is visible here")


def widest(targets: Sequence[Target]) -> Target:
    """What any of ``targets`` runs: the knobs of a study across targets are narrowed to it."""
    if len(targets) == 1:
        return targets[0]

    def union(values: list[tuple], order: tuple) -> tuple:
        return tuple(v for v in order if any(v in t for t in values))

    return Target(name="+".join(t.name for t in targets),
                  precisions=union([t.precisions for t in targets], KNOWN_PRECISIONS),
                  half_formats=union([t.half_formats for t in targets], KNOWN_HALF),
                  parallelism=union([t.parallelism for t in targets], KNOWN_PARALLELISM),
                  max_threads=max(t.thread_budget for t in targets))


@functools.cache  # once per process: every runner of a trial asks
def load_provider_libraries(provider: str) -> None:
    """onnxruntime-gpu finds CUDA and cuDNN from the nvidia-* pip packages (or torch's) only once
    told to; a provider that cannot load them would fall back to the CPU."""
    if provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
        import onnxruntime as ort

        if hasattr(ort, "preload_dlls"):
            ort.preload_dlls()


def probe_model() -> bytes:
    """A one-node model any ONNX Runtime reads (IR 8, opset 17: onnx's own defaults can be newer)."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def _check_provider_starts(target: Target) -> None:
    """A provider ORT lists may still not start (CUDA or TensorRT libraries missing): ORT then
    warns and runs the session on the CPU. Open a one-node session and refuse that fallback."""
    if target.provider == "CPUExecutionProvider":
        return
    load_provider_libraries(target.provider)
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        session = ort.InferenceSession(probe_model(), options, providers=target.providers())
    except Exception as exc:  # noqa: BLE001 - ORT raises its own types; the message is what matters
        reason = " ".join(str(exc).split())[:300]
        raise ConfigError(f"target {target.name}: {target.provider} failed to start: {reason}") from None
    if target.provider not in session.get_providers():
        raise ConfigError(f"target {target.name}: {target.provider} is installed but did not start (its CUDA/TensorRT "
                          "libraries are missing or no device is visible); refusing to fall back to the CPU")
