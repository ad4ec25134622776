"""ONNX Runtime sessions configured for a candidate's parallelism mode on its target."""

from __future__ import annotations

import onnxruntime as ort

from search.candidate import Candidate
from search.session_settings import runtime_settings
from search.session_settings import session_options as options_from
from search.target import Target


def session_options(candidate: Candidate) -> ort.SessionOptions:
    """The options of the candidate's parallelism mode (see search/session_settings.py)."""
    return options_from(runtime_settings(candidate.threads))


def make_session(model_bytes: bytes, target: Target, candidate: Candidate) -> ort.InferenceSession:
    return ort.InferenceSession(model_bytes, session_options(candidate), providers=[target.provider])
