"""The ONNX Runtime settings a candidate runs under (plain data, search/core/session_settings.py) and the
session options they make (search/runtime/portable.py, which a bundle ships).

One source for three readers: the evaluators' runners, the memory probe's fresh process
(which imports onnxruntime and onnx, not torch), and the model card.
"""

from __future__ import annotations

from search.core.session_settings import DEFAULT_MICRO_BATCHES, PARALLELISM, merge_settings, runtime_settings
from search.runtime.portable import session_options

__all__ = ["DEFAULT_MICRO_BATCHES", "PARALLELISM", "merge_settings", "runtime_settings", "session_options"]
