"""Run an ONNX model under a parallelism mode: what the evaluators time, meter and score.

The runners themselves live in portable.py, which a bundle carries (numpy and onnxruntime
only); here a pipeline is cut into its stages first (graph_split.py, which needs onnx).
Imports onnxruntime only at import time, and onnx for a pipeline alone: the memory probe runs this in a fresh
process for every trial, and importing onnx (0.5 s here) would be most of that process's time.
"""

from __future__ import annotations

from typing import Any

from search.runtime.portable import (DataParallelRunner, Feeds, Providers, Runner, SessionRunner, StageRunner,
                                     split_batch)

__all__ = ["DataParallelRunner", "Feeds", "PipelineRunner", "Providers", "Runner", "SessionRunner", "make_runner",
           "split_batch"]


class PipelineRunner(StageRunner):
    """A whole model cut into ``settings["stages"]`` stages here (or given its cut ``parts``), run as StageRunner."""

    def __init__(self, model_bytes: bytes, settings: dict[str, Any], providers: Providers,
                 parts: list[bytes] | None = None) -> None:
        import onnx

        from search.runtime.graph_split import split_model

        parts = parts or split_model(model_bytes, settings["stages"])
        output_names = [o.name for o in onnx.load_from_string(model_bytes).graph.output]
        super().__init__(parts, output_names, settings, providers)


def make_runner(model_bytes: bytes, settings: dict[str, Any], providers: Providers,
                pipeline_parts: list[bytes] | None = None) -> Runner:
    """The runner of ``settings["parallelism"]`` (see search/session_settings.py); a pipeline
    takes its stage models from ``pipeline_parts`` when they were cut already."""
    if settings["parallelism"] == "pipeline":
        return PipelineRunner(model_bytes, settings, providers, pipeline_parts)
    kind = DataParallelRunner if settings["parallelism"] == "data_parallel" else SessionRunner
    return kind(model_bytes, settings, providers)
