"""Hardware targets: what a target declares it supports, and whether this machine can serve it."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search.core.errors import ConfigError
from search.runtime import portable

ENERGY_METERS = ("auto", "estimate", "rapl", "nvml")


@dataclass(frozen=True)
class Target:
    """A hardware target, read from ``conf/target/<name>.yaml``.

    Attributes:
        name: the target's name, written into every row it measured.
        provider: ONNX Runtime execution provider the evaluators run on.
        provider_options: that provider's options (TensorRT's engine cache, a CUDA device id).
        provider_options_by_bits: options added for models of some precision (TensorRT's int8 flag).
        torch_device: device for the distillation step (``cpu`` or ``cuda``).
        precisions: quantization bits this target runs (None: every precision the quant knob knows).
        half_formats: which 16-bit floats it runs (``fp16``, ``bf16``) when 16 is among them (None: fp16).
        parallelism: runtime modes this target runs (None: every mode the parallelism knob knows).
            The knobs read these declarations: each knob is the one place that decides which of
            its values a target runs (spaces/).
        max_threads: upper bound for a mode's degree: threads, replicas or stages (None: the
            machine's cores).
        num_cpus: Ray CPUs one trial reserves.
        num_gpus: Ray GPUs one trial reserves.
        energy_meter: ``auto`` picks nvml, rapl or estimate from what the machine exposes.
        watts_per_core: for the estimate: watts one busy core draws.
        idle_watts: for the estimate: watts added per second of wall time (0 to leave out).
        run_dir_options: provider options whose value is a folder inside the run folder (TensorRT's
            engine cache: ``{trt_engine_cache_path: trt-engines}``), so a resume reuses what is there.
        extra: anything else a plugin reads from its target.
    """

    name: str
    provider: str = "CPUExecutionProvider"
    provider_options: dict[str, Any] = field(default_factory=dict)
    provider_options_by_bits: dict[int, dict[str, Any]] = field(default_factory=dict)
    torch_device: str = "cpu"
    precisions: tuple[int, ...] | None = None
    half_formats: tuple[str, ...] | None = None
    parallelism: tuple[str, ...] | None = None
    max_threads: int | None = None
    num_cpus: float = 1
    num_gpus: float = 0
    energy_meter: str = "auto"
    watts_per_core: float = 10.0
    idle_watts: float = 0.0
    run_dir_options: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.energy_meter not in ENERGY_METERS:
            raise ConfigError(f"target {self.name}: energy_meter {self.energy_meter!r} unknown; "
                              f"choose from {', '.join(ENERGY_METERS)}")

    @property
    def thread_budget(self) -> int:
        return self.max_threads or os.cpu_count() or 1

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> Target:
        cfg = dict(cfg)
        for key in ("precisions", "parallelism", "half_formats"):
            if cfg.get(key) is not None:
                cfg[key] = tuple(cfg[key])
        if "provider_options_by_bits" in cfg:
            cfg["provider_options_by_bits"] = {int(k): dict(v) for k, v in cfg["provider_options_by_bits"].items()}
        try:
            return cls(**cfg)
        except TypeError as exc:
            raise ConfigError(f"target config: {exc}") from None

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


def in_run_folder(config: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """A target's config with its ``run_dir_options`` as provider options pointing into ``run_dir``
    (an option the config sets itself wins): TensorRT's engines are then kept with the run."""
    folders = config.get("run_dir_options") or {}
    if not folders:
        return config
    found = {k: str((run_dir / v).resolve()) for k, v in folders.items()}
    return {**config, "provider_options": {**found, **(config.get("provider_options") or {})}}


@functools.cache  # once per process: every runner of a trial asks
def load_provider_libraries(provider: str) -> None:
    portable.load_provider_libraries(provider)


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
