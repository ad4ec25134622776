"""The ONNX Runtime settings a candidate runs under, as plain data: part of the shared vocabulary.

One source for every reader: the knobs that compose them, the candidate, the evaluators' runners, the
memory probe's fresh process and the model card. The session options they make are
search/runtime/session_settings.py's (they need onnxruntime).
"""

from __future__ import annotations

from typing import Any

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
