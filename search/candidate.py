"""The candidate a trial builds: one value per knob, plain data that crosses the Ray boundary."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class Candidate:
    """What to build and how to run it.

    Attributes:
        target: name of the hardware target the candidate is measured on.
        quant_bits: 32 (fp32), 16 (fp16), 8 (int8) or 4 (int4 weight-only).
        quant_mode: how 8 bits are reached (static QDQ calibrated by ``minmax``, ``entropy`` or
            ``percentile``, or ``dynamic``) or which 16-bit float (``fp16``, ``bf16``); None
            for 32 and 4 bits.
        prune_rate: fraction of channels removed from every prunable layer.
        prune_round_to: remaining channels are a multiple of this (None when nothing was pruned).
        distill_temperature: distillation temperature; 0 is plain fine-tuning on labels,
            None when nothing was pruned and so nothing was fine-tuned.
        distill_alpha: weight of the teacher's soft targets in the loss (None as above).
        parallelism: runtime mode: ``sequential``, ``intra_op``, ``inter_op``, ``data_parallel``
            or ``pipeline`` (see search/session_settings.py).
        threads: the mode's degree, which is also the cores it keeps busy: threads inside
            operators (intra_op), threads running graph branches (inter_op), replicas
            (data_parallel) or stages (pipeline); 1 for ``sequential``.
        batch_size: inputs per inference call.
        micro_batches: parts a batch is split into as it flows through the pipeline's stages
            (None for other modes).
    """

    target: str
    quant_bits: int = 32
    quant_mode: str | None = None
    prune_rate: float = 0.0
    prune_round_to: int | None = None
    distill_temperature: float | None = None
    distill_alpha: float | None = None
    parallelism: str = "sequential"
    threads: int = 1
    batch_size: int = 32
    micro_batches: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Candidate:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def is_baseline(self) -> bool:
        return self.quant_bits == 32 and self.prune_rate == 0 and self.parallelism == "sequential"

    @property
    def runtime(self) -> dict[str, Any]:
        """The ONNX Runtime settings it runs under (plain data: the card and the memory probe read it)."""
        from search.runtime.session_settings import runtime_settings

        return runtime_settings(self.parallelism, self.threads, self.micro_batches)
