"""The ONNX Runtime settings a candidate runs under, as plain data, and the session options they make.

One source for three readers: the evaluators' sessions, the memory probe's fresh process
(which imports only this module and onnxruntime, not torch), and the model card.
"""

from __future__ import annotations

from typing import Any

import onnxruntime as ort


def runtime_settings(threads: int) -> dict[str, Any]:
    """``sequential`` is 1 thread; ``intra_op`` is ``threads`` threads inside each operator."""
    return {"intra_op_num_threads": int(threads), "inter_op_num_threads": 1, "execution_mode": "sequential"}


def session_options(settings: dict[str, Any]) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings["intra_op_num_threads"]
    options.inter_op_num_threads = settings["inter_op_num_threads"]
    options.execution_mode = {"sequential": ort.ExecutionMode.ORT_SEQUENTIAL,
                              "parallel": ort.ExecutionMode.ORT_PARALLEL}[settings["execution_mode"]]
    options.log_severity_level = 3
    return options
