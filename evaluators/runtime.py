"""ONNX Runtime sessions configured for a candidate's parallelism mode on its target."""

from __future__ import annotations

import onnxruntime as ort

from search.candidate import Candidate
from search.target import Target


def session_options(candidate: Candidate) -> ort.SessionOptions:
    """``sequential``: one thread; ``intra_op``: ``threads`` threads inside each operator."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = candidate.threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return options


def make_session(model_bytes: bytes, target: Target, candidate: Candidate) -> ort.InferenceSession:
    return ort.InferenceSession(model_bytes, session_options(candidate), providers=[target.provider])
