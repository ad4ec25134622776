"""The ONNX Runtime settings a candidate runs under, as plain data, and the session options they make.

One source for three readers: the evaluators' runners, the memory probe's fresh process
(which imports onnxruntime and onnx, not torch), and the model card.
"""

from __future__ import annotations

from typing import Any

import onnxruntime as ort

PARALLELISM = ("sequential", "intra_op", "inter_op", "data_parallel", "pipeline")
DEFAULT_MICRO_BATCHES = 4


def runtime_settings(parallelism: str = "sequential", degree: int = 1,
                     micro_batches: int | None = None) -> dict[str, Any]:
    """How a mode of ``degree`` runs: every mode but ``intra_op`` keeps one thread per operator.

    * ``sequential``: one session, one thread.
    * ``intra_op``: one session, ``degree`` threads inside each operator.
    * ``inter_op``: one session running independent graph branches on ``degree`` threads.
    * ``data_parallel``: ``degree`` sessions (replicas), each taking a share of the batch at once.
    * ``pipeline``: the graph cut into ``degree`` stage sessions, running at once over micro-batches.
    """
    if parallelism not in PARALLELISM:
        raise ValueError(f"parallelism must be one of {PARALLELISM}, got {parallelism!r}")
    degree = 1 if parallelism == "sequential" else int(degree)
    return {
        "parallelism": parallelism,
        "degree": degree,
        "intra_op_num_threads": degree if parallelism == "intra_op" else 1,
        "inter_op_num_threads": degree if parallelism == "inter_op" else 1,
        "execution_mode": "parallel" if parallelism == "inter_op" else "sequential",
        "replicas": degree if parallelism == "data_parallel" else 1,
        "stages": degree if parallelism == "pipeline" else 1,
        "micro_batches": (micro_batches or DEFAULT_MICRO_BATCHES) if parallelism == "pipeline" else 1,
    }


def merge_settings(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` with a knob's contribution: its ``session_options`` and ``session_config`` are merged, not replaced."""
    merged = {**base, **extra}
    for key in ("session_options", "session_config"):
        if key in base or key in extra:
            merged[key] = {**base.get(key, {}), **extra.get(key, {})}
    return merged


def _ort_value(name: str, value: Any) -> Any:
    """A plain value for a SessionOptions attribute: an enum member's name (``ORT_ENABLE_BASIC``) becomes the member."""
    if isinstance(value, str):
        for enum in (ort.GraphOptimizationLevel, ort.ExecutionMode, ort.ExecutionOrder):
            if hasattr(enum, value):
                return getattr(enum, value)
    return value


def session_options(settings: dict[str, Any]) -> ort.SessionOptions:
    """SessionOptions from plain settings: the mode's threads, then any knob's ``session_options``
    (SessionOptions attributes by name) and ``session_config`` (config entries)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings["intra_op_num_threads"]
    options.inter_op_num_threads = settings["inter_op_num_threads"]
    options.execution_mode = {"sequential": ort.ExecutionMode.ORT_SEQUENTIAL,
                              "parallel": ort.ExecutionMode.ORT_PARALLEL}[settings["execution_mode"]]
    options.log_severity_level = 3
    for name, value in settings.get("session_options", {}).items():
        if not hasattr(options, name):
            raise ValueError(f"onnxruntime.SessionOptions has no attribute {name!r}")
        setattr(options, name, _ort_value(name, value))
    for key, value in settings.get("session_config", {}).items():
        options.add_session_config_entry(key, str(value))
    return options
